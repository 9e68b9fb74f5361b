"""Schedule maths: due times of cron and weekly schedules in a time zone, under an injectable clock.

Schedules are written in the wall time of their zone. Two rules make that total:

* a wall time that does not exist (clocks go forward) runs at the instant the clocks jump;
* a wall time that occurs twice (clocks go back) runs once, at its first occurrence.

Each wall time therefore maps to exactly one instant, and the mapping never goes backwards,
so "the latest due time at or before now" is well defined in every zone.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from croniter import croniter
from croniter.croniter import CroniterError

# Further than any zone's offset change (the largest is a day, Samoa 2011), so that scanning
# wall times from here cannot miss an instant on the other side of a transition.
_SCAN_MARGIN = timedelta(hours=26)
_MAX_GAP = timedelta(hours=25)
# Where validate_cron looks for an expression's next runs; any start would do.
_CRON_PROBE_START = datetime(2000, 1, 1)
_CRON_ERRORS = (CroniterError, ValueError, KeyError, OverflowError)


class Clock(Protocol):
    """Something that tells the current time (aware, UTC)."""

    def now(self) -> datetime:
        """The current instant, timezone-aware."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current instant in UTC."""
        return datetime.now(UTC)


@dataclass
class FrozenClock:
    """A clock that only moves when told to; for tests and previews."""

    current: datetime

    def now(self) -> datetime:
        """The frozen instant."""
        return self.current

    def advance(self, delta: timedelta) -> None:
        """Move the clock forward by ``delta``."""
        self.current = self.current + delta


class Event(enum.StrEnum):
    """What a due time does: apply the schedule's actions, or restore baselines (window end)."""

    APPLY = "apply"
    RESTORE = "restore"


class InvalidSpec(ValueError):
    """A schedule specification that cannot produce due times; the message says what to fix."""


@dataclass(frozen=True)
class Spec:
    """When a schedule fires: a cron expression, or weekdays at a time with an optional end."""

    zone: str
    cron: str = ""
    days: frozenset[int] = field(default_factory=frozenset)
    at: time | None = None
    until: time | None = None


@dataclass(frozen=True)
class Due:
    """One due time: the instant (UTC), the wall time it was written as, and any DST note."""

    at: datetime
    wall: datetime
    event: Event
    zone: str
    note: str = ""

    @property
    def local(self) -> datetime:
        """The instant in the schedule's zone."""
        return self.at.astimezone(ZoneInfo(self.zone))


def zone_or_error(name: str) -> ZoneInfo:
    """The IANA zone ``name``; raise InvalidSpec with a hint when it is unknown."""
    if not name or name != name.strip():
        raise InvalidSpec("Enter an IANA time zone such as Europe/Amsterdam.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSpec(
            f"Unknown time zone “{name}”; use an IANA name such as Europe/Amsterdam or UTC."
        ) from None


@functools.cache
def known_zones() -> tuple[str, ...]:
    """Every IANA zone name this machine knows, sorted (read once per process)."""
    return tuple(sorted(available_timezones()))


def validate(spec: Spec) -> None:
    """Raise InvalidSpec if ``spec`` cannot produce due times."""
    zone_or_error(spec.zone)
    if spec.cron:
        validate_cron(spec.cron)
        return
    if not spec.days:
        raise InvalidSpec("Pick at least one day.")
    if any(not isinstance(d, int) or d not in range(7) for d in spec.days):
        raise InvalidSpec("Days are 0 (Monday) to 6 (Sunday).")
    if spec.at is None:
        raise InvalidSpec("Enter the time the schedule starts.")
    if spec.until is not None and spec.until == spec.at:
        raise InvalidSpec("The window must end at a different time than it starts.")


def validate_cron(expression: str) -> None:
    """Raise InvalidSpec unless ``expression`` has five fields and its next 5 runs exist."""
    fields = expression.split()
    if len(fields) != 5:
        raise InvalidSpec(
            f"A cron expression has 5 fields (minute hour day month weekday); got {len(fields)}."
        )
    # Cron has no year field, so the calendar from any start shows whether it ever runs.
    runs = _cron(expression, _CRON_PROBE_START)
    try:
        for _ in range(5):
            runs.get_next(datetime)
    except _CRON_ERRORS:
        raise InvalidSpec(
            f"“{expression}” never runs: no date matches it (like 30 February); "
            "check the day of the month and the month."
        ) from None


def _cron(expression: str, start: datetime) -> croniter:
    """A croniter from ``start``; InvalidSpec when the expression does not parse."""
    try:
        return croniter(expression, start)
    except _CRON_ERRORS as exc:
        raise InvalidSpec(f"Invalid cron expression: {exc}.") from None


def _cron_step(runs: croniter, *, forward: bool) -> datetime:
    """The next (or previous) wall time; InvalidSpec when croniter finds none."""
    try:
        return runs.get_next(datetime) if forward else runs.get_prev(datetime)
    except _CRON_ERRORS:
        raise InvalidSpec("This cron expression never runs: no date matches it.") from None


def to_instant(wall: datetime, zone: ZoneInfo) -> tuple[datetime, str]:
    """The UTC instant a naive wall time in ``zone`` runs at, and a DST note when it is special."""
    first = wall.replace(tzinfo=zone, fold=0)
    second = wall.replace(tzinfo=zone, fold=1)
    first_utc = first.astimezone(UTC)
    if first_utc.astimezone(zone).replace(tzinfo=None) != wall:
        # The wall time falls in a gap: run when the clocks jump, the first wall time that exists.
        probe = wall.replace(second=0, microsecond=0)
        limit = wall + _MAX_GAP
        while probe < limit:
            probe += timedelta(minutes=1)
            candidate = probe.replace(tzinfo=zone).astimezone(UTC)
            if candidate.astimezone(zone).replace(tzinfo=None) == probe:
                jump = candidate.astimezone(zone)
                note = (
                    f"{wall:%H:%M} does not exist on {wall:%Y-%m-%d} (clocks go forward); "
                    f"runs at {jump:%H:%M %Z}"
                )
                return candidate, note
        raise InvalidSpec(f"{wall} does not exist in {zone.key}")
    second_utc = second.astimezone(UTC)
    if second_utc != first_utc:
        local = first_utc.astimezone(zone)
        note = (
            f"{wall:%H:%M} occurs twice on {wall:%Y-%m-%d} (clocks go back); "
            f"runs once, at the first ({local:%H:%M %Z})"
        )
        return first_utc, note
    return first_utc, ""


def _walls_forward(spec: Spec, start: datetime) -> Iterator[tuple[datetime, Event]]:
    """Naive wall times (and their event) strictly after ``start``, ascending."""
    if spec.cron:
        runs = _cron(spec.cron, start)
        while True:
            yield _cron_step(runs, forward=True), Event.APPLY
    assert spec.at is not None
    day = start.date() - timedelta(days=1)
    while True:
        yield from (w for w in _walls_on(spec, day) if w[0] > start)
        day += timedelta(days=1)


def _walls_backward(spec: Spec, start: datetime) -> Iterator[tuple[datetime, Event]]:
    """Naive wall times (and their event) at or before ``start``, descending."""
    if spec.cron:
        runs = _cron(spec.cron, start + timedelta(minutes=1))
        # croniter's get_prev is strict; starting a minute later includes ``start`` itself.
        while True:
            wall = _cron_step(runs, forward=False)
            if wall <= start:
                yield wall, Event.APPLY
    assert spec.at is not None
    day = start.date() + timedelta(days=1)
    for _ in range(3660):  # ten years back is more than any schedule with a day can need
        yield from (w for w in reversed(_walls_on(spec, day)) if w[0] <= start)
        day -= timedelta(days=1)


def _walls_on(spec: Spec, day: date) -> list[tuple[datetime, Event]]:
    """The wall times generated by a weekly spec's window that starts on ``day``, ascending."""
    assert spec.at is not None
    if day.weekday() not in spec.days:
        return []
    start = datetime.combine(day, spec.at)
    walls = [(start, Event.APPLY)]
    if spec.until is not None:
        end_day = day if spec.until > spec.at else day + timedelta(days=1)
        walls.append((datetime.combine(end_day, spec.until), Event.RESTORE))
    return walls


def occurrences_after(spec: Spec, instant: datetime) -> Iterator[Due]:
    """Due times strictly after ``instant``, ascending, one per distinct instant.

    Wall times that land on the same instant (several in one DST gap) yield the last of
    them, as ``latest_due`` does: the later wall time is what holds afterwards.
    InvalidSpec when ``spec`` cannot run (a row saved before a rule, a zone that is gone).
    """
    validate(spec)
    zone = zone_or_error(spec.zone)
    wall_start = instant.astimezone(zone).replace(tzinfo=None) - _SCAN_MARGIN
    pending: Due | None = None
    for wall, event in _walls_forward(spec, wall_start):
        at, note = to_instant(wall, zone)
        if at <= instant:
            continue
        due = Due(at=at, wall=wall, event=event, zone=spec.zone, note=note)
        if pending is not None and pending.at != at:
            yield pending
        pending = due


def latest_due(spec: Spec, now: datetime) -> Due | None:
    """The most recent due time at or before ``now``, or None; InvalidSpec if it cannot run."""
    validate(spec)
    zone = zone_or_error(spec.zone)
    wall_start = now.astimezone(zone).replace(tzinfo=None) + _SCAN_MARGIN
    for wall, event in _walls_backward(spec, wall_start):
        at, note = to_instant(wall, zone)
        if at <= now:
            return Due(at=at, wall=wall, event=event, zone=spec.zone, note=note)
    return None


def next_runs(spec: Spec, now: datetime, count: int = 5) -> list[Due]:
    """The next ``count`` due times after ``now``."""
    runs: list[Due] = []
    for due in occurrences_after(spec, now):
        runs.append(due)
        if len(runs) == count:
            break
    return runs
