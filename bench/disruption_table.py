"""The table of bench/disruption.py: one row per scenario, its targets, and notes.

The columns and the target are described in ``bench/disruption.py``'s docstring.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from bench.loadgen import Record, Window, percentile

# The target: p99 during a change at most this many times the p99 at rest.
MAX_RATIO = 3.0
# Failed requests listed one by one in the notes, per scenario.
NOTED_FAILURES = 20


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


@dataclass
class Row:
    """One printed line: a scenario's figures; ``seconds`` is None for the at rest row.

    ``retries`` is what HAProxy retried or redispatched to the app during the window, None
    when unknown (a reload replaced the worker that counted them).
    """

    scenario: str
    change: Window
    rest: Window
    seconds: float | None
    retries: int | None

    @property
    def ratio(self) -> float:
        """p99 of the fast requests during the change over their p99 at rest; NaN if unknown."""
        p99 = percentile(self.change.latencies_ms(), 0.99)
        rest_p99 = percentile(self.rest.latencies_ms(), 0.99)
        return p99 / rest_p99 if rest_p99 > 0 else math.nan

    @property
    def no_failure(self) -> bool:
        """Every request of the window was answered 2xx."""
        return not self.change.failed

    @property
    def fast_enough(self) -> bool:
        """The p99 target is met (never for an unknown ratio)."""
        return self.ratio <= MAX_RATIO

    def cells(self) -> list[str]:
        """The row's columns as text."""
        latencies = self.change.latencies_ms()
        ratio = self.ratio
        return [
            self.scenario,
            str(len(self.change.records)),
            str(sum(1 for r in self.change.records if r.kind == "slow")),
            str(len(self.change.failed)),
            "-" if self.retries is None else str(self.retries),
            f"{percentile(latencies, 0.5):.1f}",
            f"{percentile(latencies, 0.99):.1f}",
            f"{percentile(self.rest.latencies_ms(), 0.99):.1f}",
            "-" if math.isnan(ratio) or self.seconds is None else f"{ratio:.2f}",
            _verdict(self.no_failure),
            "-" if self.seconds is None else _verdict(self.fast_enough),
            "-" if self.seconds is None else f"{self.seconds:.1f}",
            self.change.kinds(),
        ]


HEADER = [
    "scenario", "requests", "slow", "failed", "retries", "p50 ms", "p99 ms", "rest p99", "ratio",
    "0 failed", "p99 <=3x", "change s", "failures",
]  # fmt: skip


def print_table(rows: list[Row], notes: list[str]) -> None:
    """The figures of every scenario run so far, the totals against the target, and notes."""
    lines = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER) - 1)]
    print()
    for line in lines:
        cells = [line[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(line[1:-1], widths[1:], strict=True)
        ]
        print("  ".join([*cells, line[-1]]))
    changes = [row for row in rows if row.seconds is not None]
    failed = sum(len(row.change.failed) for row in changes)
    total = sum(len(row.change.records) for row in changes)
    at_rest = sum(len(row.rest.failed) for row in rows)
    passed = sum(1 for row in changes if row.no_failure and row.fast_enough)
    print(
        f"\ntotal: {failed} failed of {total} requests during {len(changes)} changes; "
        f"{at_rest} failed at rest; {passed} of {len(changes)} changes meet the target "
        f"(0 failed, p99 <= {MAX_RATIO:g}x rest p99)",
        flush=True,
    )
    for note in notes:
        print(f"note: {note}")


def failure_notes(name: str, records: list[Record], change_start: float) -> list[str]:
    """One line per failed request (the first NOTED_FAILURES): when, how long, what kind."""
    wall = time.time() - time.monotonic()  # CLOCK_MONOTONIC to the logs' wall clock
    notes = []
    failed = [r for r in records if not r.ok]
    for record in failed[:NOTED_FAILURES]:
        started = time.localtime(wall + record.start)
        millis = int((wall + record.start) % 1 * 1000)
        notes.append(
            f"{name}: failed request started {time.strftime('%H:%M:%S', started)}.{millis:03d}"
            f" ({record.start - change_start:+.3f} s into the change), "
            f"{(record.end - record.start) * 1000:.1f} ms, "
            f"{record.status or record.error}/{record.kind}/{record.mode}"
        )
    if len(failed) > NOTED_FAILURES:
        notes.append(f"{name}: {len(failed) - NOTED_FAILURES} more failed requests")
    return notes
