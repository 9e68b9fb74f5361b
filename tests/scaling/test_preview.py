"""The editor's preview rows: both zones, and a note wherever the clocks change."""

from __future__ import annotations

from datetime import UTC, datetime

from scaling.preview import preview
from scaling.schedule import Spec


def test_it_notes_a_run_after_the_clocks_go_back() -> None:
    rows = preview(
        Spec(zone="Europe/Amsterdam", cron="0 21 * * *"), datetime(2026, 10, 23, 12, tzinfo=UTC)
    )
    assert [(r["local"], r["utc"]) for r in rows[:3]] == [
        ("Fri 23 Oct 21:00 CEST", "19:00 UTC"),
        ("Sat 24 Oct 21:00 CEST", "19:00 UTC"),
        ("Sun 25 Oct 21:00 CET", "20:00 UTC"),
    ]
    assert rows[0]["note"] == "" and rows[1]["note"] == ""
    assert rows[2]["note"] == (
        "clocks go back an hour before this run (CEST → CET): in UTC it runs an hour later "
        "than before"
    )
    assert rows[3]["note"] == ""


def test_it_notes_a_skipped_time_and_the_shift_together() -> None:
    rows = preview(
        Spec(zone="America/New_York", cron="30 2 * * *"), datetime(2026, 3, 7, 12, tzinfo=UTC)
    )
    assert rows[0]["local"] == "Sun 08 Mar 03:00 EDT"
    assert rows[0]["note"].startswith("02:30 does not exist on 2026-03-08 (clocks go forward)")
    assert rows[1]["note"] == ""


def test_it_shows_the_utc_date_when_it_differs_and_the_year_when_not_this_ones() -> None:
    rows = preview(
        Spec(zone="America/New_York", cron="0 22 1 1 *"), datetime(2026, 6, 1, tzinfo=UTC)
    )
    assert (rows[0]["local"], rows[0]["utc"]) == (
        "Fri 01 Jan 2027 22:00 EST",
        "Sat 02 Jan 2027 03:00 UTC",
    )
