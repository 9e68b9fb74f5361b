"""The schedule editor's preview: next runs in the schedule's zone and in UTC, with DST notes."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypedDict

from scaling.models import Schedule
from scaling.planner import spec_of
from scaling.schedule import Clock, Due, InvalidSpec, Spec, SystemClock, next_runs, zone_or_error

# The clock the pages read; browser tests freeze it.
clock: Clock = SystemClock()


class PreviewRow(TypedDict):
    """One upcoming run as the editor shows it."""

    local: str
    utc: str
    event: str
    note: str


def _shift_note(due: Due, before: datetime) -> str:
    """Say so when the zone's UTC offset changed since ``before`` (the previous run, or now)."""
    old, new = before.utcoffset() or timedelta(0), due.local.utcoffset() or timedelta(0)
    if old == new:
        return ""
    hours = (new - old).total_seconds() / 3600
    amount = "an hour" if abs(hours) == 1 else f"{abs(hours):g} hours"
    direction, shift = ("forward", "earlier") if hours > 0 else ("back", "later")
    return (
        f"clocks go {direction} {amount} before this run ({before:%Z} → {due.local:%Z}): "
        f"in UTC it runs {amount} {shift} than before"
    )


def _when(moment: datetime, now: datetime, zone: str) -> str:
    """``Wed 25 Nov 21:00 CET``, with the year when it is not this year's."""
    year = f" {moment.year}" if moment.year != now.year else ""
    return moment.strftime(f"%a %d %b{year} %H:%M {zone}")


def preview(spec: Spec, now: datetime | None = None, count: int = 5) -> list[PreviewRow]:
    """The next ``count`` runs of ``spec`` after ``now`` (the pages' clock by default)."""
    now = now or clock.now()
    previous = now.astimezone(zone_or_error(spec.zone))
    rows: list[PreviewRow] = []
    for due in next_runs(spec, now, count):
        # A skipped or repeated wall time already explains the change; say one thing.
        note = due.note or _shift_note(due, previous)
        previous = due.local
        rows.append(
            {
                "local": _when(due.local, now, "%Z"),
                # The UTC time alone when it falls on the same day as the local one.
                "utc": due.at.strftime("%H:%M UTC")
                if due.at.date() == due.local.date()
                else _when(due.at, now, "UTC"),
                "event": "window ends: back to baseline" if due.event == "restore" else "apply",
                "note": note,
            }
        )
    return rows


def preview_or_problem(
    spec: Spec, now: datetime | None = None, count: int = 5
) -> tuple[list[PreviewRow], str]:
    """The next runs of ``spec`` and "", or no runs and why it cannot run; never raises."""
    try:
        return preview(spec, now, count), ""
    except InvalidSpec as exc:
        return [], str(exc)


def preview_schedule(
    schedule: Schedule, now: datetime | None = None, count: int = 5
) -> tuple[list[PreviewRow], str]:
    """The next runs of a stored schedule, or no runs and why it cannot run; never raises.

    A row can be unable to run although the editor refuses such timings: saved before a
    rule existed, edited in the admin or SQL, or its zone gone from this machine's tzdata.
    """
    try:
        spec = spec_of(schedule)
    except InvalidSpec as exc:
        return [], str(exc)
    return preview_or_problem(spec, now, count)
