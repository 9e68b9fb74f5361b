"""Container logs: CRI-format files per container run, read back for ``pods/log``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

# Lines longer than this are split into partial (P) records, as containerd does.
MAX_RECORD = 16 * 1024


def _now() -> str:
    now = dt.datetime.now(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond * 1000:09d}Z"


def _parse_time(stamp: str) -> dt.datetime:
    # Nanosecond stamps do not fit fromisoformat; microseconds are plenty for sinceTime.
    head, _, frac = stamp.rstrip("Z").partition(".")
    value = dt.datetime.fromisoformat(head).replace(tzinfo=dt.UTC)
    if frac:
        value = value.replace(microsecond=int(frac[:6].ljust(6, "0")))
    return value


@dataclass
class LogOptions:
    """The ``pods/log`` query parameters that shape what is read."""

    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_seconds: int | None = None
    since_time: str | None = None

    def since(self) -> dt.datetime | None:
        """The earliest entry to return, or None for all."""
        if self.since_seconds is not None:
            return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.since_seconds)
        if self.since_time:
            return _parse_time(self.since_time.replace("+00:00", "Z"))
        return None


class ContainerLog:
    """The log of one run of one container; appended by the output pumps, watched by followers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab", buffering=0)
        self._partial: dict[str, bytes] = {}
        self._changed = asyncio.Event()
        self.closed = False

    def write(self, stream: str, data: bytes) -> None:
        """Append output from ``stream`` (stdout/stderr), one record per complete line."""
        buffered = self._partial.pop(stream, b"") + data
        *lines, rest = buffered.split(b"\n")
        out = bytearray()
        for line in lines:
            while len(line) > MAX_RECORD:
                out += self._record(stream, "P", line[:MAX_RECORD])
                line = line[MAX_RECORD:]
            out += self._record(stream, "F", line)
        if len(rest) > MAX_RECORD:
            out += self._record(stream, "P", rest)
            rest = b""
        if rest:
            self._partial[stream] = rest
        if out:
            self._file.write(bytes(out))
            self._wake()

    @staticmethod
    def _record(stream: str, tag: str, line: bytes) -> bytes:
        return f"{_now()} {stream} {tag} ".encode() + line + b"\n"

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        """Flush any unterminated line and mark the run finished (followers stop)."""
        for stream, rest in list(self._partial.items()):
            self._file.write(self._record(stream, "F", rest))
        self._partial.clear()
        self._file.close()
        self.closed = True
        self._wake()

    async def changed(self, timeout: float | None = None) -> None:
        """Wait until more output is written or the log is closed."""
        if self.closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


def _entries(raw: bytes) -> list[tuple[str, bytes]]:
    """Parse CRI records into (timestamp, line) entries, joining partial records."""
    entries: list[tuple[str, bytes]] = []
    pending: dict[bytes, tuple[str, bytearray]] = {}
    for record in raw.split(b"\n"):
        parts = record.split(b" ", 3)
        if len(parts) < 4:
            continue
        stamp, stream, tag, line = parts
        stamp_s = stamp.decode()
        start = pending.pop(stream, None)
        if start is not None:
            stamp_s, buf = start[0], start[1] + line
        else:
            buf = bytearray(line)
        if tag == b"P":
            pending[stream] = (stamp_s, buf)
        else:
            entries.append((stamp_s, bytes(buf)))
    return entries


def render(raw: bytes, options: LogOptions) -> bytes:
    """Turn CRI records into the body ``pods/log`` returns for ``options``."""
    entries = _entries(raw)
    since = options.since()
    if since is not None:
        entries = [e for e in entries if _parse_time(e[0]) >= since]
    if options.tail_lines is not None:
        entries = entries[-options.tail_lines :] if options.tail_lines > 0 else []
    out = b"".join(
        (f"{stamp} ".encode() if options.timestamps else b"") + line + b"\n"
        for stamp, line in entries
    )
    if options.limit_bytes is not None:
        out = out[: options.limit_bytes]
    return out


class PodLogs:
    """All container logs of a node (or a whole cluster), laid out like /var/log/pods."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._open: dict[tuple[str, str], ContainerLog] = {}

    def directory(self, pod_uid: str, container: str) -> Path:
        """The directory holding one container's run logs (``0.log``, ``1.log``...)."""
        return self.root / pod_uid / container

    def open(self, pod_uid: str, container: str, restart: int) -> ContainerLog:
        """Start the log of run number ``restart`` of a container."""
        previous = self._open.pop((pod_uid, container), None)
        if previous is not None and not previous.closed:
            previous.close()
        clog = ContainerLog(self.directory(pod_uid, container) / f"{restart}.log")
        self._open[(pod_uid, container)] = clog
        return clog

    def _runs(self, pod_uid: str, container: str) -> list[Path]:
        directory = self.directory(pod_uid, container)
        if not directory.is_dir():
            return []
        runs = [p for p in directory.glob("*.log") if p.stem.isdigit()]
        return sorted(runs, key=lambda p: int(p.stem))

    def has(self, pod_uid: str, container: str, previous: bool = False) -> bool:
        """Whether a current (or previous) run of the container has a log."""
        runs = self._runs(pod_uid, container)
        return len(runs) >= (2 if previous else 1)

    def read(
        self, pod_uid: str, container: str, options: LogOptions, previous: bool = False
    ) -> bytes:
        """The rendered log of the current or previous run; empty when there is none."""
        runs = self._runs(pod_uid, container)
        index = -2 if previous else -1
        if len(runs) < abs(index):
            return b""
        return render(runs[index].read_bytes(), options)

    async def follow(
        self, pod_uid: str, container: str, options: LogOptions
    ) -> AsyncIterator[bytes]:
        """Yield the current run's log, then new lines as they come, until the run ends."""
        runs = self._runs(pod_uid, container)
        if not runs:
            return
        path = runs[-1]
        raw = path.read_bytes()
        cut = raw.rfind(b"\n") + 1
        first = render(raw[:cut], options)
        sent = len(first)
        if first:
            yield first
        clog = self._open.get((pod_uid, container))
        offset = cut
        no_tail = LogOptions(timestamps=options.timestamps)
        while True:
            live = clog is not None and clog.path == path and not clog.closed
            if live:
                assert clog is not None
                await clog.changed(timeout=5)
            raw = path.read_bytes()[offset:]
            cut = raw.rfind(b"\n") + 1
            if cut:
                chunk = render(raw[:cut], no_tail)
                offset += cut
                if options.limit_bytes is not None:
                    chunk = chunk[: max(options.limit_bytes - sent, 0)]
                if chunk:
                    sent += len(chunk)
                    yield chunk
            if options.limit_bytes is not None and sent >= options.limit_bytes:
                return
            if not live:
                return

    def forget(self, pod_uid: str) -> None:
        """Drop a deleted pod's logs."""
        for key in [k for k in self._open if k[0] == pod_uid]:
            clog = self._open.pop(key)
            if not clog.closed:
                clog.close()
        shutil.rmtree(self.root / pod_uid, ignore_errors=True)
