"""HAProxy's counters of backends across the load balancer fleet, as deltas from a start.

Each load balancer's HAProxy is read through the CSV export of its stats page
(``<stats_address>/stats;csv``; each proxysync registers its stats address,
deployer.lbregistration), so the reader and the load balancers may run on different
machines. A backend's requests are the responses HAProxy counted (``hrsp_1xx`` to
``hrsp_other``), its failures ``hrsp_5xx``, its response times ``rtime`` and ``ttime``
(HAProxy's averages over the backend's last 1024 requests, in ms). Counters are summed
across load balancers as deltas from each one's first reading; a counter that went down
is a reset (a reload started a new HAProxy worker, which counts from 0), and the new
worker's count is added whole, as Prometheus' ``rate()`` does. What the old worker
counted after the last reading is lost.
"""

from __future__ import annotations

import csv
import http.client
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from deployer.lbconfig import safe_name
from deployer.lbfleet import LoadBalancer

# How long one load balancer's stats page may take to answer, and the most it may weigh.
STATS_TIMEOUT = 2.0
STATS_MAX_BYTES = 32 * 1024 * 1024
RESPONSE_COLUMNS = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")


@dataclass(frozen=True)
class BackendCounters:
    """One HAProxy's counters of one backend (its ``BACKEND`` row of ``show stat``)."""

    requests: int
    errors: int
    rtime_ms: int | None = None
    ttime_ms: int | None = None


def _number(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _optional_number(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def parse_stats_csv(text: str) -> dict[str, BackendCounters]:
    """Backend name (as HAProxy names it) -> its counters, from a ``show stat`` CSV export.

    Raises ValueError when the text is no such export (no ``pxname`` header).
    """
    if not text.startswith("# pxname,"):
        raise ValueError(f"not a HAProxy stats CSV export (starts with {text[:40]!r})")
    rows = csv.DictReader(io.StringIO(text[2:]))
    counters: dict[str, BackendCounters] = {}
    for row in rows:
        if row.get("svname") != "BACKEND" or not row.get("pxname"):
            continue
        counters[row["pxname"]] = BackendCounters(
            requests=sum(_number(row.get(column)) for column in RESPONSE_COLUMNS),
            errors=_number(row.get("hrsp_5xx")),
            rtime_ms=_optional_number(row.get("rtime")),
            ttime_ms=_optional_number(row.get("ttime")),
        )
    return counters


def read_stats(stats_address: str, timeout: float = STATS_TIMEOUT) -> dict[str, BackendCounters]:
    """GET ``<stats_address>/stats;csv`` and parse it; OSError or ValueError when that fails."""
    parts = urlsplit(stats_address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"stats address {stats_address!r} is not an http:// URL")
    connection_class = (
        http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    )
    connection = connection_class(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request("GET", f"{parts.path.rstrip('/')}/stats;csv;norefresh")
        response = connection.getresponse()
        body = response.read(STATS_MAX_BYTES)
        if response.status != 200:
            raise OSError(f"the stats page answered {response.status}")
    finally:
        connection.close()
    return parse_stats_csv(body.decode("utf-8", errors="replace"))


@dataclass
class Tally:
    """One backend on one load balancer since the bake's start: deltas across resets."""

    last: BackendCounters | None = None
    requests: int = 0
    errors: int = 0
    resets: int = 0

    def add(self, reading: BackendCounters) -> None:
        """Count what ``reading`` adds to the last one; a counter that went down was reset."""
        last, self.last = self.last, reading
        if last is None:
            return  # the first reading is the bake's start
        if reading.requests < last.requests or reading.errors < last.errors:
            # A new HAProxy worker counts from 0: all it counted is new.
            self.resets += 1
            self.requests += reading.requests
            self.errors += reading.errors
        else:
            self.requests += reading.requests - last.requests
            self.errors += reading.errors - last.errors


@dataclass(frozen=True)
class Figures:
    """One version's figures across the fleet: requests, 5xx answers and response times."""

    version: int | None
    requests: int
    errors: int
    rtime_ms: float | None
    ttime_ms: float | None

    @property
    def error_percent(self) -> float:
        """5xx answers per 100 requests (0 without requests)."""
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    def counts(self) -> str:
        """``41 of 52``."""
        return f"{self.errors} of {self.requests}"

    def as_dict(self) -> dict[str, Any]:
        """The figures as the page shows them."""
        return {
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "error_percent": round(self.error_percent, 1),
            "rtime_ms": None if self.rtime_ms is None else round(self.rtime_ms, 1),
            "ttime_ms": None if self.ttime_ms is None else round(self.ttime_ms, 1),
        }


def _weighted(values: list[tuple[int | None, int]]) -> float | None:
    """The average of ``(value, weight)`` pairs by weight (equal weights when all are 0)."""
    known = [(value, weight) for value, weight in values if value is not None]
    if not known:
        return None
    total = sum(weight for _, weight in known)
    if total == 0:
        return sum(value for value, _ in known) / len(known)
    return sum(value * weight for value, weight in known) / total


@dataclass
class FleetCounters:
    """Both versions' backends on every load balancer read, as deltas from the first reading."""

    backends: dict[str, str]  # role ("new", "previous") -> backend record name
    versions: dict[str, int | None]
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    # Each role's totals at its first reading on each load balancer: what it served before.
    before: dict[tuple[str, str], BackendCounters] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def sample(self, balancers: list[LoadBalancer]) -> dict[str, str]:
        """Read every load balancer's counters (in parallel); load balancer id -> problem."""
        reachable = [b for b in balancers if b.record.get("stats_address")]
        problems = {
            b.id: "it registers no stats address (a proxysync older than the guard)"
            for b in balancers
            if not b.record.get("stats_address")
        }
        if reachable:
            with ThreadPoolExecutor(max_workers=min(8, len(reachable))) as pool:
                readings = list(pool.map(self._read, reachable))
            for balancer, (counters, problem) in zip(reachable, readings, strict=True):
                if problem:
                    problems[balancer.id] = problem
                    continue
                self.add(balancer.id, counters)
        self.problems = problems
        return problems

    @staticmethod
    def _read(balancer: LoadBalancer) -> tuple[dict[str, BackendCounters], str]:
        try:
            return read_stats(str(balancer.record["stats_address"])), ""
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return {}, f"{balancer.record['stats_address']}: {exc}"

    def add(self, lb_id: str, counters: dict[str, BackendCounters]) -> None:
        """Count one load balancer's reading of both backends."""
        for role, backend in self.backends.items():
            reading = counters.get(safe_name(backend))
            if reading is None:
                continue
            tally = self.tallies.setdefault((lb_id, role), Tally())
            if tally.last is None:
                self.before[(lb_id, role)] = reading
            tally.add(reading)

    @property
    def resets(self) -> int:
        """How many counter resets (reloads) the bake counted across."""
        return sum(tally.resets for tally in self.tallies.values())

    @property
    def balancers(self) -> list[str]:
        """The load balancers whose counters were read."""
        return sorted({lb_id for lb_id, _ in self.tallies})

    def figures(self, role: str) -> Figures:
        """``role``'s figures since the bake's start, summed across load balancers."""
        tallies = [(key[0], t) for key, t in self.tallies.items() if key[1] == role]
        return Figures(
            version=self.versions.get(role),
            requests=sum(t.requests for _, t in tallies),
            errors=sum(t.errors for _, t in tallies),
            rtime_ms=_weighted(
                [(t.last.rtime_ms if t.last else None, t.requests) for _, t in tallies]
            ),
            ttime_ms=_weighted(
                [(t.last.ttime_ms if t.last else None, t.requests) for _, t in tallies]
            ),
        )

    def figures_before(self, role: str) -> Figures:
        """``role``'s totals at the bake's start (what the current HAProxy workers counted)."""
        readings = [reading for key, reading in self.before.items() if key[1] == role]
        return Figures(
            version=self.versions.get(role),
            requests=sum(r.requests for r in readings),
            errors=sum(r.errors for r in readings),
            rtime_ms=_weighted([(r.rtime_ms, r.requests) for r in readings]),
            ttime_ms=_weighted([(r.ttime_ms, r.requests) for r in readings]),
        )
