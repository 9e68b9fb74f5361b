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
        ("Fri 2026-10-23 21:00 CEST", "Fri 2026-10-23 19:00 UTC"),
        ("Sat 2026-10-24 21:00 CEST", "Sat 2026-10-24 19:00 UTC"),
        ("Sun 2026-10-25 21:00 CET", "Sun 2026-10-25 20:00 UTC"),
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
    assert rows[0]["local"] == "Sun 2026-03-08 03:00 EDT"
    assert rows[0]["note"].startswith("02:30 does not exist on 2026-03-08 (clocks go forward)")
    assert rows[1]["note"] == ""
