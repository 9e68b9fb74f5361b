"""The schedule editor's preview: next runs in the schedule's zone and in UTC, with DST notes."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from scaling.schedule import Clock, Spec, SystemClock, next_runs

# The clock the pages read; browser tests freeze it.
clock: Clock = SystemClock()


class PreviewRow(TypedDict):
    """One upcoming run as the editor shows it."""

    local: str
    utc: str
    event: str
    note: str


def preview(spec: Spec, now: datetime | None = None, count: int = 5) -> list[PreviewRow]:
    """The next ``count`` runs of ``spec`` after ``now`` (the pages' clock by default)."""
    now = now or clock.now()
    return [
        {
            "local": due.local.strftime("%a %Y-%m-%d %H:%M %Z"),
            "utc": due.at.strftime("%a %Y-%m-%d %H:%M UTC"),
            "event": "window ends: back to baseline" if due.event == "restore" else "apply",
            "note": due.note,
        }
        for due in next_runs(spec, now, count)
    ]
