"""A cron that never runs is refused; a stored schedule that cannot run stops nothing else."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from deployer.models import App
from scaling import planner, preview, services
from scaling.models import AppAction, ScalingRun, Schedule
from scaling.planner import schedule_problem, spec_of
from scaling.preview import preview_schedule
from scaling.schedule import FrozenClock, InvalidSpec, Spec, latest_due, next_runs, validate_cron
from tests.scaling.test_views import schedule_post

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
NEVER = "0 0 30 2 *"


@pytest.fixture
def client(admin_user: Any) -> Client:
    c = Client()
    c.force_login(admin_user)
    return c


@pytest.fixture
def broken(
    make_app: Callable[..., App], make_schedule: Callable[..., Schedule]
) -> dict[str, Schedule]:
    """A good schedule and three rows broken in the database, as SQL or an old release left them."""
    app = make_app(replicas=4)
    schedules = {
        "good": make_schedule("good", cron="0 * * * *", apps={app: (AppAction.Mode.ABSOLUTE, 2)}),
        "never": make_schedule("never", cron="0 1 * * *", apps={app: (AppAction.Mode.ABSOLUTE, 3)}),
        "gone-zone": make_schedule(
            "gone-zone", cron="0 2 * * *", apps={app: (AppAction.Mode.ABSOLUTE, 5)}
        ),
        "bad-days": make_schedule(
            "bad-days", cron="0 3 * * *", apps={app: (AppAction.Mode.ABSOLUTE, 6)}
        ),
    }
    Schedule.objects.filter(name="never").update(cron=NEVER)
    Schedule.objects.filter(name="gone-zone").update(timezone="Mars/Olympus_Mons")
    Schedule.objects.filter(name="bad-days").update(
        kind=Schedule.Kind.WEEKLY, cron="", days=["x", 9]
    )
    return {name: Schedule.objects.get(pk=s.pk) for name, s in schedules.items()}


@pytest.mark.parametrize("expression", [NEVER, "0 0 31 4 *", "0 0 31 2,4,6,9,11 *"])
def test_a_cron_whose_next_runs_cannot_be_computed_is_refused(expression: str) -> None:
    with pytest.raises(InvalidSpec, match="never runs: no date matches it"):
        validate_cron(expression)


@pytest.mark.parametrize("expression", ["0 0 29 2 *", "0 0 31 * *", "*/5 * * * *", "0 0 30 2 1"])
def test_a_rare_but_possible_cron_is_accepted(expression: str) -> None:
    validate_cron(expression)
    assert len(next_runs(Spec(zone="UTC", cron=expression), NOW, 5)) == 5


def test_the_schedule_editor_refuses_a_cron_that_never_runs_on_the_cron_field(
    client: Client, make_app: Callable[..., App]
) -> None:
    response = client.post(
        reverse("scaling:schedule-create"), schedule_post(make_app(), cron=NEVER)
    )
    assert response.status_code == 400
    assert "never runs" in " ".join(response.context["form"].errors["cron"])
    assert not Schedule.objects.exists()


def test_the_preview_reports_a_cron_that_never_runs_on_the_cron_field(client: Client) -> None:
    response = client.get(
        reverse("scaling:schedule-preview"), {"kind": "cron", "cron": NEVER, "timezone": "UTC"}
    )
    assert response.status_code == 200
    data = response.json()
    assert not data["ok"] and "never runs" in " ".join(data["errors"]["cron"])


def test_stored_schedules_that_cannot_run_raise_invalid_spec_not_a_library_error(
    broken: dict[str, Schedule],
) -> None:
    for name in ("never", "gone-zone", "bad-days"):
        with pytest.raises(InvalidSpec):
            latest_due(spec_of(broken[name]), NOW)
        with pytest.raises(InvalidSpec):
            next_runs(spec_of(broken[name]), NOW)


def test_a_schedule_that_cannot_run_never_stops_the_tick_for_the_others(
    broken: dict[str, Schedule], caplog: pytest.LogCaptureFixture
) -> None:
    runs = services.tick(FrozenClock(NOW))
    assert [run.schedule.name for run in runs] == ["good"]
    assert ScalingRun.objects.filter(schedule=broken["good"]).count() == 1
    skipped = " ".join(r.getMessage() for r in caplog.records if "skipped" in r.getMessage())
    assert "never" in skipped and "gone-zone" in skipped and "bad-days" in skipped


def test_a_failure_inside_one_schedule_is_logged_and_skipped(
    broken: dict[str, Schedule], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = planner.latest_due

    def latest_due_failing_for_never(spec: Spec, now: datetime) -> Any:
        if spec.cron == NEVER:
            raise RuntimeError("a bug in a schedule library")
        return real(spec, now)

    monkeypatch.setattr(planner, "latest_due", latest_due_failing_for_never)
    assert [run.schedule.name for run in services.tick(FrozenClock(NOW))] == ["good"]


def test_the_scaling_page_shows_why_each_broken_schedule_cannot_run(
    client: Client, broken: dict[str, Schedule], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preview, "clock", FrozenClock(NOW))
    response = client.get(reverse("scaling:overview"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Cannot run: “0 0 30 2 *” never runs" in page
    assert "Cannot run: Unknown time zone “Mars/Olympus_Mons”" in page
    assert "Cannot run: Days are 0 (Monday) to 6 (Sunday)." in page
    (held,) = response.context["holding"]
    assert held["schedule"].name == "good"


@pytest.mark.parametrize("name", ["never", "gone-zone", "bad-days"])
def test_the_schedule_page_shows_why_it_cannot_run(
    client: Client, broken: dict[str, Schedule], name: str
) -> None:
    response = client.get(reverse("scaling:schedule-edit", args=[broken[name].pk]))
    assert response.status_code == 200
    assert response.context["problem"] == schedule_problem(broken[name]) != ""
    assert "This schedule cannot run:" in response.content.decode()


def test_the_schedules_api_lists_every_schedule_with_its_problem(
    admin_user: Any, broken: dict[str, Schedule]
) -> None:
    api = APIClient()
    api.force_authenticate(admin_user)
    response = api.get("/api/scaling/schedules/")
    assert response.status_code == 200
    by_name = {item["name"]: item for item in response.json()["results"]}
    assert by_name["good"]["problem"] == "" and len(by_name["good"]["next_runs"]) == 5
    for name in ("never", "gone-zone", "bad-days"):
        assert by_name[name]["next_runs"] == [] and by_name[name]["problem"], name
        detail = api.get(f"/api/scaling/schedules/{broken[name].pk}/")
        assert detail.status_code == 200 and detail.json()["problem"] == by_name[name]["problem"]
    dry_run = api.post(f"/api/scaling/schedules/{broken['never'].pk}/dry-run/")
    assert dry_run.status_code == 202


def test_the_preview_of_a_stored_schedule_says_why_it_cannot_run(
    broken: dict[str, Schedule],
) -> None:
    runs, problem = preview_schedule(broken["never"], NOW)
    assert runs == [] and "never runs" in problem
    runs, problem = preview_schedule(broken["good"], NOW)
    assert len(runs) == 5 and problem == ""
