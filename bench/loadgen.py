"""A load process for benches: HTTP/1.1 through a load balancer, half keep-alive, at a bounded rate.

    python bench/loadgen.py PORT HOST CONCURRENCY RATE MAX_SECONDS OUT READY [SLOW_SHARE]

``CONCURRENCY`` connections to 127.0.0.1:PORT, half reusing their connection and half
opening a new one per request, each pausing so that all of them together send at most
``RATE`` requests/s, with ``Host: HOST``. A ``SLOW_SHARE`` (0..1, default 0) of the
connections, taken evenly from both halves, sends ``GET /sleep?seconds=0.2`` (an answer
that takes 0.2 s, so that a pod that dies has requests in flight); the others send
``GET /health``. It writes READY once it sends, runs until SIGTERM (or MAX_SECONDS,
whichever is first), lets the requests in flight finish, and writes one line per request
to OUT. :class:`Load` runs it from a bench; :class:`Window` reads its records.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

REQUEST_TIMEOUT = 5.0
# What each kind of connection requests.
PATHS = {"fast": "/health", "slow": "/sleep?seconds=0.2"}


class Record(NamedTuple):
    """One request as the load process saw it."""

    start: float  # CLOCK_MONOTONIC, shared by every process on Linux
    end: float
    status: int  # 0: no response
    error: str  # the exception's name without a response, else ""
    mode: str  # keepalive, close
    kind: str  # fast, slow (a key of PATHS)

    @property
    def ok(self) -> bool:
        """Answered 2xx."""
        return 200 <= self.status < 300


class LoadFailed(Exception):
    """The load process could not start, stop or report."""


def tied_child() -> None:
    """``preexec_fn``: a session of its own, and SIGTERM when the bench dies, however it dies."""
    os.setsid()
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


def slow_count(connections: int, share: float) -> int:
    """How many of ``connections`` send the slow request for a ``share`` of 0..1."""
    return min(connections, max(0, round(connections * share)))


async def _load(spec: LoadSpec, out: Path, ready: Path) -> None:
    import aiohttp

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.call_later(spec.max_seconds, stop.set)  # stops by itself even if nobody signals it
    records: list[Record] = []
    # Each connection's pause keeps the total under ``rate``; a slow connection, whose
    # answer takes longer than its interval, sends its next request at once.
    interval = spec.concurrency / spec.rate
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    headers = {"Host": spec.host}

    async def client(session: aiohttp.ClientSession, mode: str, kind: str) -> None:
        url = f"http://127.0.0.1:{spec.port}{PATHS[kind]}"
        # A random first delay spreads the connections over the interval instead of bursts.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), random.uniform(0, interval))
        while not stop.is_set():
            started = time.monotonic()
            # Stop only between requests: one in flight runs to its answer or its timeout,
            # so shutting the load down never turns into failed requests.
            status, error = 0, ""
            try:
                async with session.get(url, headers=headers) as response:
                    await response.read()
                    status = response.status
            except TimeoutError:
                error = "Timeout"
            except aiohttp.ClientError as exc:
                error = type(exc).__name__
            except Exception as exc:  # noqa: BLE001 - shown as its own kind, never lost
                error = f"bench:{type(exc).__name__}"
            records.append(Record(started, time.monotonic(), status, error, mode, kind))
            pause = max(0.0, interval - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    keepalive = spec.concurrency // 2
    close = spec.concurrency - keepalive
    slow_total = slow_count(spec.concurrency, spec.slow_share)
    slow_keepalive = slow_count(keepalive, spec.slow_share)
    slow_close = min(close, max(0, slow_total - slow_keepalive))
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(1, keepalive)), timeout=timeout
        ) as reuse,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(1, close), force_close=True), timeout=timeout
        ) as fresh,
    ):
        ready.write_text("ready")
        clients = [
            client(reuse, "keepalive", "slow" if i < slow_keepalive else "fast")
            for i in range(keepalive)
        ]
        clients += [
            client(fresh, "close", "slow" if i < slow_close else "fast") for i in range(close)
        ]
        await asyncio.gather(*clients)
    out.write_text(
        "".join(f"{a:.6f} {b:.6f} {s} {e or '-'} {m} {k}\n" for a, b, s, e, m, k in records)
    )


def main(argv: list[str]) -> None:
    """``PORT HOST CONCURRENCY RATE MAX_SECONDS OUT READY [SLOW_SHARE]``: run until stopped."""
    port, host, concurrency, rate, max_seconds, out, ready, *slow_share = argv
    spec = LoadSpec(
        int(port),
        host,
        int(concurrency),
        float(rate),
        float(max_seconds),
        float(slow_share[0]) if slow_share else 0.0,
    )
    asyncio.run(_load(spec, Path(out), Path(ready)))


@dataclass(frozen=True)
class LoadSpec:
    """Where the load goes and how much of it."""

    port: int
    host: str
    concurrency: int
    rate: float
    max_seconds: float
    slow_share: float = 0.0


class Load:
    """One load process, from its start to its records; files go to ``workdir``."""

    def __init__(self, spec: LoadSpec, workdir: Path, name: str) -> None:
        self.out = workdir / f"load-{name}.txt"
        self.ready = workdir / f"load-{name}.ready"
        command = [
            sys.executable, __file__, str(spec.port), spec.host, str(spec.concurrency),
            str(spec.rate), str(spec.max_seconds), str(self.out), str(self.ready),
            str(spec.slow_share),
        ]  # fmt: skip
        log = (workdir / f"load-{name}.log").open("ab")
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=tied_child,  # noqa: PLW1509 - setsid + prctl must run in the child
        )
        log.close()

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Block until the load process sends requests; LoadFailed if it does not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready.exists():
                return
            if self.process.poll() is not None:
                raise LoadFailed(f"load process exited with {self.process.returncode}")
            time.sleep(0.05)  # a child starting up; nothing to watch
        raise LoadFailed(f"load process not ready within {timeout:.0f}s")

    def stop(self) -> list[Record]:
        """SIGTERM, let requests in flight finish, and read the records."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(REQUEST_TIMEOUT + 15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
            raise LoadFailed("load process did not stop within 20 s of SIGTERM") from None
        if not self.out.exists():
            raise LoadFailed(f"load process wrote no records (exit {self.process.returncode})")
        records: list[Record] = []
        for line in self.out.read_text().splitlines():
            start, end, status, error, mode, kind = line.split(" ")
            error = "" if error == "-" else error
            records.append(Record(float(start), float(end), int(status), error, mode, kind))
        return records


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Window:
    """Requests of one period of a load."""

    records: list[Record]

    @classmethod
    def completed(cls, records: list[Record], start: float, end: float) -> Window:
        """The requests that started and ended in [start, end)."""
        return cls([r for r in records if start <= r.start and r.end < end])

    @classmethod
    def exposed(cls, records: list[Record], start: float, end: float) -> Window:
        """The requests in flight at some moment of [start, end).

        Those that started before ``start`` and were still running count: a request in
        flight when a change starts is the one a killed pod takes down.
        """
        return cls([r for r in records if r.start < end and r.end >= start])

    @property
    def failed(self) -> list[Record]:
        """Requests without a 2xx answer."""
        return [r for r in self.records if not r.ok]

    def latencies_ms(self) -> list[float]:
        """Durations of the successful fast (``/health``) requests: slow ones sleep on purpose."""
        return [(r.end - r.start) * 1000 for r in self.records if r.ok and r.kind == "fast"]

    def kinds(self) -> str:
        """Failures by status or error, path kind and connection mode, most frequent first."""
        counts = Counter(f"{r.status or r.error}/{r.kind}/{r.mode}" for r in self.failed)
        return " ".join(f"{kind}x{count}" for kind, count in counts.most_common()) or "-"


if __name__ == "__main__":
    main(sys.argv[1:])
