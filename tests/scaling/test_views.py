"""Scaling pages: the schedule editor's validation and preview, dry runs, manual actions, run logs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from deployer.models import App
from scaling.models import AppAction, NodeGroup, ScalingRun, ScalingRunLog, Schedule

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(admin_user: Any) -> Client:
    c = Client()
    c.force_login(admin_user)
    return c


def schedule_post(app: App | None = None, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "nights",
        "enabled": "on",
        "kind": "cron",
        "cron": "0 21 * * 1-5",
        "timezone": "Europe/Amsterdam",
        "apps-TOTAL_FORMS": "1",
        "apps-INITIAL_FORMS": "0",
        "apps-0-app": str(app.pk) if app else "",
        "apps-0-mode": "percent",
        "apps-0-value": "50",
        "apps-0-floor": "1",
        "groups-TOTAL_FORMS": "0",
        "groups-INITIAL_FORMS": "0",
    }
    data.update(overrides)
    return data


def test_it_creates_a_schedule_and_shows_its_next_runs(
    client: Client, make_app: Callable[..., App]
) -> None:
    app = make_app()
    response = client.post(reverse("scaling:schedule-create"), schedule_post(app))
    schedule = Schedule.objects.get(name="nights")
    assert response.status_code == 302
    assert response["Location"] == reverse("scaling:schedule-edit", args=[schedule.pk])
    assert list(schedule.app_actions.values_list("app__name", "value")) == [("hello", 50)]
    page = client.get(response["Location"]).content.decode()
    assert "Next 5 runs" in page and "21:00 CET" in page and "20:00 UTC" in page


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"cron": "0 25 * * *"}, "cron", "Invalid cron expression"),
        ({"cron": "0 21 * *"}, "cron", "has 5 fields"),
        ({"timezone": "Europe/Atlantis"}, "timezone", "Unknown time zone"),
        ({"apps-0-value": "1500"}, "value", "between 0 and 1000"),
        ({"kind": "weekly", "at_time": "21:00"}, "days", "Pick at least one day"),
    ],
)
def test_it_puts_each_error_on_its_field(
    client: Client,
    make_app: Callable[..., App],
    overrides: dict[str, str],
    field: str,
    message: str,
) -> None:
    response = client.post(
        reverse("scaling:schedule-create"), schedule_post(make_app(), **overrides)
    )
    assert response.status_code == 400
    form = response.context["form"]
    apps = response.context["apps"]
    errors = form.errors.get(field) or (apps.forms[0].errors.get(field) if apps.forms else None)
    assert errors and message in " ".join(errors)
    assert not Schedule.objects.exists()


def test_a_schedule_without_actions_is_refused(client: Client) -> None:
    # The blank extra row as the browser sends it (its initial values) counts as no action.
    data = schedule_post(None, **{"apps-0-value": "100"})
    response = client.post(reverse("scaling:schedule-create"), data)
    assert response.status_code == 400
    assert "Add at least one app or node group action" in response.content.decode()


def test_a_node_action_on_an_impossible_node_name_is_refused(client: Client) -> None:
    response = client.post("/scaling/nodes/Bad..Name/drain/", {"deadline": "60"}, follow=True)
    assert "&#x27;Bad..Name&#x27; is not a node name" in response.content.decode()
    assert not ScalingRun.objects.exists()


def test_a_node_group_capacity_outside_its_bounds_is_refused(client: Client) -> None:
    group = NodeGroup.objects.create(name="workers", min_size=1, max_size=3, desired=2)
    data = schedule_post(
        None,
        **{
            "groups-TOTAL_FORMS": "1",
            "groups-0-node_group": str(group.pk),
            "groups-0-desired": "9",
        },
    )
    response = client.post(reverse("scaling:schedule-create"), data)
    assert response.status_code == 400
    assert "workers allows 1 to 3 nodes" in response.content.decode()


def test_the_preview_lists_the_next_runs_with_dst_notes(client: Client) -> None:
    response = client.get(
        reverse("scaling:schedule-preview"),
        {"kind": "cron", "cron": "30 2 * * *", "timezone": "Europe/Amsterdam"},
    )
    data = response.json()
    assert data["ok"] and len(data["runs"]) == 5
    assert all(r["utc"].endswith("UTC") for r in data["runs"])


def test_the_preview_reports_timing_errors(client: Client) -> None:
    response = client.get(
        reverse("scaling:schedule-preview"),
        {"kind": "weekly", "timezone": "Nowhere/City", "at_time": "07:00"},
    )
    data = response.json()
    assert not data["ok"]
    assert "Unknown time zone" in " ".join(data["errors"]["timezone"])
    assert "Pick at least one day." in data["errors"]["days"]


def test_dry_run_now_records_a_dry_run_and_shows_it(
    client: Client, make_app: Callable[..., App], make_schedule: Callable[..., Schedule]
) -> None:
    app = make_app(replicas=4)
    schedule = make_schedule("nights", cron="0 21 * * *", apps={app: (AppAction.Mode.PERCENT, 50)})
    response = client.post(reverse("scaling:schedule-dry-run", args=[schedule.pk]))
    run = ScalingRun.objects.get()
    assert run.kind == ScalingRun.Kind.DRY_RUN
    assert response["Location"] == reverse("scaling:run-detail", args=[run.pk])
    assert [(c["name"], c["current"], c["desired"]) for c in run.plan] == [("hello", 4, 2)]
    page = client.get(response["Location"]).content.decode()
    assert "Changes it would make" in page and "4 → 2" in page


def test_manual_actions_each_start_a_run(client: Client, make_app: Callable[..., App]) -> None:
    app = make_app()
    group = NodeGroup.objects.create(name="workers", min_size=0, max_size=4, desired=2)
    client.post(reverse("scaling:app-scale", args=[app.pk]), {"replicas": "3"})
    client.post(reverse("scaling:node-group-capacity", args=[group.pk]), {"desired": "4"})
    for action in ("cordon", "uncordon", "drain"):
        client.post(reverse("scaling:node-action", args=["node-1", action]), {"deadline": "60"})
    kinds = list(ScalingRun.objects.order_by("pk").values_list("kind", flat=True))
    assert kinds == ["scale_app", "set_capacity", "cordon", "uncordon", "drain"]
    assert ScalingRun.objects.get(kind="drain").params == {
        "node": "node-1",
        "force": False,
        "deadline": 60,
    }


def test_a_capacity_outside_the_bounds_starts_nothing(client: Client) -> None:
    group = NodeGroup.objects.create(name="workers", min_size=1, max_size=4, desired=2)
    response = client.post(
        reverse("scaling:node-group-capacity", args=[group.pk]), {"desired": "9"}
    )
    assert response.status_code == 302 and not ScalingRun.objects.exists()


@pytest.mark.both_databases
def test_run_logs_are_served_after_a_sequence_number(client: Client) -> None:
    run = ScalingRun.objects.create(kind=ScalingRun.Kind.CORDON, params={"node": "n"})
    for seq in (1, 2, 3):
        ScalingRunLog.objects.create(run=run, seq=seq, message=f"line {seq}")
    data = client.get(reverse("scaling:run-logs", args=[run.pk]), {"after": "1"}).json()
    assert [line["message"] for line in data["results"]] == ["line 2", "line 3"]


def test_viewers_see_the_pages_but_cannot_change_anything(
    django_user_model: Any, make_app: Callable[..., App]
) -> None:
    from deployer.models import RoleBinding

    viewer = django_user_model.objects.create_user("viewer", password="x-very-long-pass")
    c = Client()
    c.force_login(viewer)
    assert c.get(reverse("scaling:overview")).status_code == 403
    # A role in one namespace does not show the cluster-wide scaling pages; one on * does.
    RoleBinding.objects.create(role="operator", user=viewer, namespace="team-a")
    assert c.get(reverse("scaling:overview")).status_code == 403
    RoleBinding.objects.create(role="viewer", user=viewer, namespace="*")
    assert c.get(reverse("scaling:overview")).status_code == 200
    response = c.post(reverse("scaling:schedule-create"), schedule_post(make_app()))
    assert response.status_code == 403
    assert c.post(reverse("scaling:node-action", args=["n1", "drain"])).status_code == 403
    assert c.get(reverse("scaling:run-detail", args=[999])).status_code == 404


def test_the_demo_seed_creates_the_local_group_and_a_disabled_example(
    make_app: Callable[..., App],
) -> None:
    from scaling.demo import ensure_demo_scaling

    make_app("hello", replicas=2)
    group = ensure_demo_scaling()
    ensure_demo_scaling()
    assert (group.name, group.provider) == ("default", "local")
    schedule = Schedule.objects.get()
    assert not schedule.enabled
    assert schedule.app_actions.count() == 1 and schedule.node_group_actions.count() == 1


def test_the_run_list_pages_and_filters_by_kind(client: Client) -> None:
    ScalingRun.objects.bulk_create(
        [ScalingRun(kind=ScalingRun.Kind.CORDON, params={"node": f"n{i}"}) for i in range(55)]
        + [ScalingRun(kind=ScalingRun.Kind.DRAIN, params={"node": "d1"})]
    )
    first = client.get(reverse("scaling:run-list"))
    assert len(first.context["runs"]) == 50 and "Page 1 of 2" in first.content.decode()
    drains = client.get(reverse("scaling:run-list"), {"kind": "drain"})
    assert [r.params["node"] for r in drains.context["runs"]] == ["d1"]


def test_saving_a_schedule_bumps_its_revision(
    client: Client, make_app: Callable[..., App], make_schedule: Callable[..., Schedule]
) -> None:
    app = make_app()
    client.post(reverse("scaling:schedule-create"), schedule_post(app))
    schedule = Schedule.objects.get()
    assert schedule.revision == 1
    action = schedule.app_actions.get()
    data = schedule_post(
        app,
        **{
            "apps-INITIAL_FORMS": "1",
            "apps-0-id": str(action.pk),
            "apps-0-schedule": str(schedule.pk),
        },
    )
    response = client.post(reverse("scaling:schedule-edit", args=[schedule.pk]), data)
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert schedule.revision == 2 and schedule.app_actions.count() == 1


def test_a_node_group_can_be_created_edited_and_deleted(client: Client) -> None:
    data = {
        "name": "workers-a",
        "provider": "local",
        "min_size": "1",
        "max_size": "4",
        "desired": "2",
    }
    assert client.post(reverse("scaling:node-group-create"), data).status_code == 302
    group = NodeGroup.objects.get(name="workers-a")
    bad = {**data, "min_size": "5"}
    response = client.post(reverse("scaling:node-group-edit", args=[group.pk]), bad)
    assert response.status_code == 400
    assert "at least the minimum" in response.content.decode()
    response = client.post(reverse("scaling:node-group-create"), {**data, "name": "Bad Name"})
    assert "lower-case letters" in response.content.decode()
    client.post(reverse("scaling:node-group-delete", args=[group.pk]))
    assert not NodeGroup.objects.exists()


def test_pages_survive_a_schedule_row_broken_outside_the_editor(
    client: Client, make_app: Callable[..., App], make_schedule: Callable[..., Schedule]
) -> None:
    schedule = make_schedule(
        "broken", cron="0 0 * * *", apps={make_app(): (AppAction.Mode.ABSOLUTE, 1)}
    )
    Schedule.objects.filter(pk=schedule.pk).update(timezone="Mars/Base")
    assert client.get(reverse("scaling:overview")).status_code == 200
    assert client.get(reverse("scaling:schedule-edit", args=[schedule.pk])).status_code == 200


def test_the_overview_shows_what_holds_now_per_target(
    client: Client,
    make_app: Callable[..., App],
    make_schedule: Callable[..., Schedule],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datetime import UTC, datetime

    from scaling import preview
    from scaling.schedule import FrozenClock

    monkeypatch.setattr(preview, "clock", FrozenClock(datetime(2026, 6, 1, 22, tzinfo=UTC)))
    app = make_app(replicas=4)
    make_schedule("evening", cron="0 21 * * *", apps={app: (AppAction.Mode.PERCENT, 50)})
    make_schedule("morning", cron="0 7 * * *", apps={app: (AppAction.Mode.PERCENT, 100)})
    response = client.get(reverse("scaling:overview"))
    (held,) = response.context["holding"]
    assert (held["schedule"].name, held["change"].desired, held["change"].current) == (
        "evening",
        2,
        4,
    )
    assert held["since"] == "Mon 01 Jun 21:00 UTC"
