"""The schedule editor's preview: next runs in the schedule's zone and in UTC, with DST notes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypedDict
from zoneinfo import ZoneInfo

from scaling.schedule import Clock, Due, Spec, SystemClock, next_runs

# The clock the pages read; browser tests freeze it.
clock: Clock = SystemClock()


class PreviewRow(TypedDict):
    """One upcoming run as the editor shows it."""

    local: str
    utc: str
    event: str
    note: str


def _shift_note(due: Due, before: timedelta) -> str:
    """Say so when the zone's UTC offset changed since the previous run (a DST change)."""
    after = due.local.utcoffset() or timedelta(0)
    if after == before:
        return ""
    hours = (after - before).total_seconds() / 3600
    direction = "forward" if hours > 0 else "back"
    amount = f"{abs(hours):g} hour{'s' if abs(hours) != 1 else ''}"
    return (
        f"clocks go {direction} {amount} before this run ({due.local:%Z} from then on): "
        f"in UTC it runs {amount} {'earlier' if hours > 0 else 'later'} than before"
    )


def preview(spec: Spec, now: datetime | None = None, count: int = 5) -> list[PreviewRow]:
    """The next ``count`` runs of ``spec`` after ``now`` (the pages' clock by default)."""
    now = now or clock.now()
    offset = now.astimezone(ZoneInfo(spec.zone)).utcoffset() or timedelta(0)
    rows: list[PreviewRow] = []
    for due in next_runs(spec, now, count):
        notes = [n for n in (due.note, _shift_note(due, offset)) if n]
        offset = due.local.utcoffset() or timedelta(0)
        rows.append(
            {
                "local": due.local.strftime("%a %Y-%m-%d %H:%M %Z"),
                "utc": due.at.strftime("%a %Y-%m-%d %H:%M UTC"),
                "event": "window ends: back to baseline" if due.event == "restore" else "apply",
                "note": "; ".join(notes),
            }
        )
    return rows
