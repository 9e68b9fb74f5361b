"""Container logs: each run's output written as CRI-format records for ``pods/log``."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

# Lines longer than this are split into partial (P) records, as containerd does.
MAX_RECORD = 16 * 1024
# The kubelet's containerLogMaxSize: past it the log rotates to ``<name>.1`` (one kept).
MAX_LOG_BYTES = 10 * 1024 * 1024


_second: list[Any] = [None, ""]  # the last whole second formatted, and its text


def _now() -> str:
    # A busy pod writes many records a second: the date part is formatted once per second.
    stamp = time.time_ns()
    second, nanos = divmod(stamp, 1_000_000_000)
    if _second[0] != second:
        _second[0] = second
        _second[1] = dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    return f"{_second[1]}{nanos:09d}Z"


class ContainerLog:
    """The log of one run of one container; appended by the output pumps."""

    def __init__(self, path: Path, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab", buffering=0)
        self._size = path.stat().st_size
        self._partial: dict[str, bytes] = {}
        self.closed = False

    def write(self, stream: str, data: bytes) -> None:
        """Append output from ``stream`` (stdout/stderr), one record per complete line."""
        if self.closed:
            return  # output still draining from a run that has been stopped
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
            if self._size + len(out) > self.max_bytes and self._size > 0:
                self._rotate()
            self._file.write(bytes(out))
            self._size += len(out)

    def _rotate(self) -> None:
        # `kubectl logs` then shows the newest part only, as with a real kubelet's rotation.
        self._file.close()
        self.path.replace(self.path.with_name(self.path.name + ".1"))
        self._file = self.path.open("ab", buffering=0)
        self._size = 0

    @staticmethod
    def _record(stream: str, tag: str, line: bytes) -> bytes:
        return f"{_now()} {stream} {tag} ".encode() + line + b"\n"

    def close(self) -> None:
        """Flush any unterminated line and mark the run finished (followers stop)."""
        for stream, rest in list(self._partial.items()):
            self._file.write(self._record(stream, "F", rest))
        self._partial.clear()
        self._file.close()
        self.closed = True


def start_run(current: Path, previous: Path) -> ContainerLog:
    """Begin a new run's log at ``current``, keeping the last run's as ``previous``.

    The layout is the store's contract (``Store.log_path``): the API layer serves ``pods/log``
    from these files, ``previous=true`` from the second one.
    """
    if current.exists():
        current.replace(previous)
    return ContainerLog(current)
