"""Schedule maths under a frozen clock: DST in two zones, windows, week ends."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaling.schedule import (
    Event,
    FrozenClock,
    InvalidSpec,
    Spec,
    latest_due,
    next_runs,
    validate,
)

AMS = "Europe/Amsterdam"
NYC = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_it_runs_a_skipped_amsterdam_time_when_the_clocks_jump_forward() -> None:
    spec = Spec(zone=AMS, cron="30 2 * * *")
    runs = next_runs(spec, utc(2026, 3, 27, 12), count=3)
    assert [r.at for r in runs] == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST, when the clocks jump
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    assert runs[0].note == ""
    assert "does not exist" in runs[1].note and "03:00 CEST" in runs[1].note
    assert runs[1].local.strftime("%H:%M %Z") == "03:00 CEST"


def test_it_runs_a_repeated_amsterdam_time_once_when_the_clocks_go_back() -> None:
    spec = Spec(zone=AMS, cron="30 2 * * *")
    runs = next_runs(spec, utc(2026, 10, 24, 12), count=2)
    assert [r.at for r in runs] == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]
    assert "occurs twice" in runs[0].note
    # During the second 02:30 (01:30 UTC) the latest due time is still the first one.
    assert latest_due(spec, utc(2026, 10, 25, 1, 45)).at == utc(2026, 10, 25, 0, 30)


def test_it_keeps_new_york_wall_times_across_both_changes() -> None:
    spec = Spec(zone=NYC, cron="0 2 * * *")
    spring = next_runs(spec, utc(2026, 3, 7, 12), count=3)
    assert [r.at for r in spring] == [
        utc(2026, 3, 8, 7, 0),  # 02:00 does not exist; 03:00 EDT
        utc(2026, 3, 9, 6, 0),  # 02:00 EDT
        utc(2026, 3, 10, 6, 0),
    ]
    fall = next_runs(Spec(zone=NYC, cron="30 1 * * *"), utc(2026, 10, 31, 12), count=2)
    assert [r.at for r in fall] == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    assert "occurs twice" in fall[0].note


def test_it_fires_each_wall_time_once_for_a_frequent_cron_in_the_repeated_hour() -> None:
    spec = Spec(zone=NYC, cron="*/30 * * * *")
    runs = next_runs(spec, utc(2026, 11, 1, 4, 50), count=4)
    assert [r.local.strftime("%H:%M %Z") for r in runs] == [
        "01:00 EDT",
        "01:30 EDT",
        "02:00 EST",  # the repeated 01:00 and 01:30 EST are not run again
        "02:30 EST",
    ]


def test_it_applies_a_window_across_midnight_and_restores_at_its_end() -> None:
    spec = Spec(zone=AMS, days=frozenset({4}), at=time(22), until=time(6))  # Friday night
    # Saturday 03:00 local: the window that started on Friday 22:00 holds.
    inside = latest_due(spec, utc(2026, 6, 13, 1))
    assert inside is not None and inside.event == Event.APPLY
    assert inside.at == utc(2026, 6, 12, 20)
    after = latest_due(spec, utc(2026, 6, 13, 5))
    assert after is not None and after.event == Event.RESTORE
    assert after.local.strftime("%a %H:%M") == "Sat 06:00"


def test_it_wraps_a_window_across_the_end_of_the_week() -> None:
    spec = Spec(zone=NYC, days=frozenset({6}), at=time(22), until=time(2))  # Sunday 22:00
    runs = next_runs(spec, utc(2026, 6, 14, 12), count=3)  # Sunday noon
    assert [(r.local.strftime("%a %H:%M"), r.event) for r in runs] == [
        ("Sun 22:00", Event.APPLY),
        ("Mon 02:00", Event.RESTORE),
        ("Sun 22:00", Event.APPLY),
    ]
    # Monday 01:00 local looks back over the week's end to Sunday's start.
    monday = latest_due(spec, utc(2026, 6, 15, 5))
    assert monday is not None and monday.event == Event.APPLY
    assert monday.local.strftime("%a %d %H:%M") == "Sun 14 22:00"


def test_it_finds_the_latest_due_time_at_or_before_now() -> None:
    spec = Spec(zone="UTC", cron="0 21 * * 1-5")
    assert latest_due(spec, utc(2026, 6, 15, 21)).at == utc(2026, 6, 15, 21)
    assert latest_due(spec, utc(2026, 6, 15, 20, 59)).at == utc(2026, 6, 12, 21)  # Friday


def test_the_frozen_clock_moves_only_when_told() -> None:
    clock = FrozenClock(utc(2026, 1, 1))
    clock.advance(timedelta(seconds=30))
    assert clock.now() == utc(2026, 1, 1, 0, 0, 30)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (Spec(zone="Mars/Olympus", cron="0 1 * * *"), "Unknown time zone"),
        (Spec(zone="UTC", cron="0 1 * *"), "5 fields"),
        (Spec(zone="UTC", cron="61 1 * * *"), "Invalid cron"),
        (Spec(zone="UTC", days=frozenset(), at=time(1)), "at least one day"),
        (Spec(zone="UTC", days=frozenset({1}), at=time(1), until=time(1)), "different time"),
    ],
)
def test_it_rejects_bad_specs_with_a_message(spec: Spec, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        validate(spec)


CRONS = st.sampled_from(["30 2 * * *", "*/20 * * * *", "0 1,2,3 * * 0", "15 */2 * * 1-5"])
ZONES = st.sampled_from([AMS, NYC, "Australia/Lord_Howe", "UTC", "Asia/Kolkata"])
INSTANTS = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=60, deadline=None)
@given(cron=CRONS, zone=ZONES, now=INSTANTS)
def test_due_times_are_increasing_and_consistent_with_latest_due(
    cron: str, zone: str, now: datetime
) -> None:
    spec = Spec(zone=zone, cron=cron)
    runs = next_runs(spec, now, count=5)
    assert all(a.at < b.at for a, b in zip(runs, runs[1:], strict=False))
    assert runs[0].at > now
    assert latest_due(spec, runs[0].at).at == runs[0].at
    previous = latest_due(spec, now)
    assert previous is not None and previous.at <= now
    # Nothing is due strictly between the latest due time and the next one.
    assert next_runs(spec, previous.at, count=1)[0].at == runs[0].at


WEEKLY = st.builds(
    lambda zone, days, at, until: Spec(zone=zone, days=frozenset(days), at=at, until=until),
    ZONES,
    st.sets(st.integers(0, 6), min_size=1),
    st.times().map(lambda t: t.replace(second=0, microsecond=0)),
    st.one_of(st.none(), st.times().map(lambda t: t.replace(second=0, microsecond=0))),
).filter(lambda s: s.until != s.at)


@settings(max_examples=60, deadline=None)
@given(spec=WEEKLY, now=INSTANTS)
def test_weekly_windows_alternate_and_agree_with_latest_due(spec: Spec, now: datetime) -> None:
    runs = next_runs(spec, now, count=6)
    assert all(a.at < b.at for a, b in zip(runs, runs[1:], strict=False))
    previous = latest_due(spec, now)
    assert previous is not None and previous.at <= now < runs[0].at
    assert latest_due(spec, runs[0].at).at == runs[0].at
    if spec.until is None:
        assert {r.event for r in runs} == {Event.APPLY}
    else:
        # Windows are shorter than a day and start on different days: events alternate,
        # except where a window's end and the next start collapse into one DST gap.
        pairs = zip(runs, runs[1:], strict=False)
        assert all(a.event != b.event or a.note or b.note for a, b in pairs)


def test_a_window_whose_start_and_end_share_a_dst_gap_still_starts() -> None:
    # 02:15 and 02:30 both run at 03:00 CEST on 29 March 2026; the start (later) holds.
    spec = Spec(zone=AMS, days=frozenset({5, 6}), at=time(2, 30), until=time(2, 15))
    jump = utc(2026, 3, 29, 1)
    (due,) = next_runs(spec, jump - timedelta(seconds=1), count=1)
    assert (due.at, due.event) == (jump, Event.APPLY)
    assert latest_due(spec, jump).event == Event.APPLY
