"""In Chromium: edit a schedule and watch the preview follow, DST note included."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from deployer.models import App
from scaling import preview
from scaling.models import AppAction, Schedule
from scaling.schedule import FrozenClock
from tests.servers import launch_chromium

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    # Playwright's sync API keeps an event loop in this thread; Django's ORM, used by the test
    # and its database fixtures in the same thread, must be told that this is fine here.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser, live_server: Any, django_user_model: Any) -> Iterator[Page]:
    """A signed-in page on the live server."""
    django_user_model.objects.create_superuser("ops", password="ops-password-1")
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    page = context.new_page()
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", "ops")
    page.fill("input[name=password]", "ops-password-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/**")
    try:
        yield page
    finally:
        context.close()


def test_editing_a_schedule_updates_the_preview_with_a_dst_note(
    page: Page,
    live_server: Any,
    make_app: Callable[..., App],
    make_schedule: Callable[..., Schedule],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A week before Amsterdam's clocks go forward (Sunday 29 March 2026, 02:00 → 03:00).
    monkeypatch.setattr(preview, "clock", FrozenClock(datetime(2026, 3, 25, 12, tzinfo=UTC)))
    app = make_app(replicas=4)
    schedule = make_schedule(
        "nights", cron="0 21 * * *", zone="UTC", apps={app: (AppAction.Mode.PERCENT, 50)}
    )
    page.goto(f"{live_server.url}/scaling/schedules/{schedule.pk}/")
    body = page.locator("#preview-body")
    expect(body).to_contain_text("Wed 25 Mar 21:00 UTC")

    page.fill("#id_cron", "30 2 * * *")
    page.fill("#id_timezone", "Europe/Amsterdam")
    expect(page.locator("#preview-zone")).to_have_text("Europe/Amsterdam")
    expect(body).to_contain_text("Thu 26 Mar 02:30 CET")
    expect(body).to_contain_text("01:30 UTC")
    note = page.locator("#preview-body tr.dst-note")
    expect(note).to_contain_text("02:30 does not exist on 2026-03-29 (clocks go forward)")
    expect(body).to_contain_text("Sun 29 Mar 03:00 CEST")

    page.fill("#id_cron", "30 2 * *")
    expect(body).to_contain_text("A cron expression has 5 fields")

    page.fill("#id_cron", "30 2 * * 1-5")
    page.click("button:has-text('Save schedule')")
    expect(page.locator(".messages")).to_contain_text("Schedule “nights” saved.")
    saved = Schedule.objects.get(pk=schedule.pk)
    assert (saved.cron, saved.timezone) == ("30 2 * * 1-5", "Europe/Amsterdam")


def test_switching_to_weekly_shows_days_and_previews_the_window(
    page: Page,
    live_server: Any,
    make_app: Callable[..., App],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(preview, "clock", FrozenClock(datetime(2026, 6, 12, 12, tzinfo=UTC)))
    make_app()
    page.goto(f"{live_server.url}/scaling/schedules/new/")
    expect(page.locator(".timing[data-kind=weekly]")).to_be_hidden()
    page.check("input[name=kind][value=weekly]")
    expect(page.locator(".timing[data-kind=weekly]")).to_be_visible()
    page.fill("#id_timezone", "UTC")
    page.click("label.day:has-text('Sun')")
    page.fill("#id_at_time", "22:00")
    page.fill("#id_until_time", "02:00")
    body = page.locator("#preview-body")
    expect(body).to_contain_text("Sun 14 Jun 22:00 UTC")
    expect(body).to_contain_text("Mon 15 Jun 02:00")
    expect(body).to_contain_text("window ends: back to baseline")


def test_a_run_page_shows_its_stored_lines_and_final_status_without_errors(
    page: Page, live_server: Any
) -> None:
    from scaling.models import ScalingRun, ScalingRunLog

    run = ScalingRun.objects.create(
        kind=ScalingRun.Kind.DRY_RUN, status=ScalingRun.Status.SUCCEEDED, plan=[], result=[]
    )
    for seq, message in enumerate(["Planned 0 changes.", "Nothing to do."], start=1):
        ScalingRunLog.objects.create(run=run, seq=seq, message=message)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{live_server.url}/scaling/runs/{run.pk}/")
    lines = page.locator("#log li.log-line")
    expect(lines).to_have_count(2)
    expect(lines.nth(1)).to_contain_text("Nothing to do.")
    expect(page.locator("#live-indicator")).to_have_attribute("title", "Finished")
    assert errors == []
