"""A load process for benches: HTTP/1.1 through a load balancer, half keep-alive, at a bounded rate.

    python bench/loadgen.py PORT HOST CONCURRENCY RATE MAX_SECONDS OUT READY

``CONCURRENCY`` connections to 127.0.0.1:PORT, half reusing their connection and half
opening a new one per request, GET /health with ``Host: HOST``, each pausing so that all
of them together send at most ``RATE`` requests/s. It writes READY once it sends, runs
until SIGTERM (or MAX_SECONDS, whichever is first), lets the requests in flight finish,
and writes one line per request to OUT. :class:`Load` runs it from a bench; :class:`Window`
reads its records.
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

REQUEST_TIMEOUT = 5.0

# One request as the load process saw it: monotonic start and end (CLOCK_MONOTONIC is
# shared by every process on Linux), HTTP status (0: no response), error kind, mode.
Record = tuple[float, float, int, str, str]


class LoadFailed(Exception):
    """The load process could not start, stop or report."""


def tied_child() -> None:
    """``preexec_fn``: a session of its own, and SIGTERM when the bench dies, however it dies."""
    os.setsid()
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG


async def _load(
    port: int, host: str, concurrency: int, rate: float, max_seconds: float, out: Path, ready: Path
) -> None:
    import aiohttp

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.call_later(max_seconds, stop.set)  # stops by itself even if nobody signals it
    records: list[Record] = []
    interval = concurrency / rate  # each connection's pause keeps the total under ``rate``
    url = f"http://127.0.0.1:{port}/health"
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)

    async def client(session: aiohttp.ClientSession, mode: str) -> None:
        # A random first delay spreads the connections over the interval instead of bursts.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), random.uniform(0, interval))
        while not stop.is_set():
            started = time.monotonic()
            # Stop only between requests: one in flight runs to its answer or its timeout,
            # so shutting the load down never turns into failed requests.
            try:
                async with session.get(url, headers={"Host": host}) as response:
                    await response.read()
                    records.append((started, time.monotonic(), response.status, "", mode))
            except TimeoutError:
                records.append((started, time.monotonic(), 0, "Timeout", mode))
            except aiohttp.ClientError as exc:
                records.append((started, time.monotonic(), 0, type(exc).__name__, mode))
            except Exception as exc:  # noqa: BLE001 - shown as its own kind, never lost
                records.append((started, time.monotonic(), 0, f"bench:{type(exc).__name__}", mode))
            pause = max(0.0, interval - (time.monotonic() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    keepalive = concurrency // 2
    close = concurrency - keepalive
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(1, keepalive)), timeout=timeout
        ) as reuse,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(1, close), force_close=True), timeout=timeout
        ) as fresh,
    ):
        ready.write_text("ready")
        clients = [client(reuse, "keepalive") for _ in range(keepalive)]
        clients += [client(fresh, "close") for _ in range(close)]
        await asyncio.gather(*clients)
    out.write_text("".join(f"{a:.6f} {b:.6f} {s} {e or '-'} {m}\n" for a, b, s, e, m in records))


def main(argv: list[str]) -> None:
    """``PORT HOST CONCURRENCY RATE MAX_SECONDS OUT READY``: run until SIGTERM or MAX_SECONDS."""
    port, host, concurrency, rate, max_seconds, out, ready = argv
    load = _load(
        int(port), host, int(concurrency), float(rate), float(max_seconds), Path(out), Path(ready)
    )
    asyncio.run(load)


@dataclass(frozen=True)
class LoadSpec:
    """Where the load goes and how much of it."""

    port: int
    host: str
    concurrency: int
    rate: float
    max_seconds: float


class Load:
    """One load process, from its start to its records; files go to ``workdir``."""

    def __init__(self, spec: LoadSpec, workdir: Path, name: str) -> None:
        self.out = workdir / f"load-{name}.txt"
        self.ready = workdir / f"load-{name}.ready"
        command = [
            sys.executable, __file__, str(spec.port), spec.host, str(spec.concurrency),
            str(spec.rate), str(spec.max_seconds), str(self.out), str(self.ready),
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
            start, end, status, error, mode = line.split(" ")
            kind = "" if error == "-" else error
            records.append((float(start), float(end), int(status), kind, mode))
        return records


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Window:
    """The requests that started in [start, end)."""

    records: list[Record]

    @classmethod
    def of(cls, records: list[Record], start: float, end: float) -> Window:
        """Select by start time."""
        return cls([r for r in records if start <= r[0] < end])

    @property
    def failed(self) -> list[Record]:
        """Requests without a 2xx answer."""
        return [r for r in self.records if not 200 <= r[2] < 300]

    def latencies_ms(self) -> list[float]:
        """Durations of the successful requests."""
        return [(r[1] - r[0]) * 1000 for r in self.records if 200 <= r[2] < 300]

    def kinds(self) -> str:
        """Failures by kind and connection mode, most frequent first."""
        counts = Counter(f"{r[2] or r[3]}/{r[4]}" for r in self.failed)
        return " ".join(f"{kind}x{count}" for kind, count in counts.most_common()) or "-"


if __name__ == "__main__":
    main(sys.argv[1:])
