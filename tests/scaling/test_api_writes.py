"""The scaling API's write twins: schedules and node groups created, edited and deleted."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from rest_framework.test import APIClient

from deployer.models import App
from scaling import services
from scaling.models import AppAction, NodeGroup, NodeGroupAction, ScalingRun, Schedule
from scaling.schedule import FrozenClock

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(admin_user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


@pytest.fixture
def group() -> NodeGroup:
    return NodeGroup.objects.create(name="workers", min_size=1, max_size=5, desired=2)


def weeknights(app: App, group: NodeGroup) -> dict[str, Any]:
    return {
        "name": "weeknights",
        "kind": "weekly",
        "days": [0, 1, 2, 3, 4],
        "at_time": "21:00",
        "until_time": "06:30",
        "timezone": "Europe/Amsterdam",
        "app_actions": [{"app": app.pk, "mode": "percent", "value": 50, "floor": 1}],
        "node_group_actions": [{"node_group": group.pk, "desired": 1}],
    }


def test_it_creates_a_schedule_with_its_rows_and_answers_its_next_runs(
    api: APIClient, make_app: Callable[..., App], group: NodeGroup
) -> None:
    app = make_app()
    answer = api.post("/api/scaling/schedules/", weeknights(app, group), format="json")
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    schedule = Schedule.objects.get(pk=body["id"])
    assert (schedule.kind, schedule.days, schedule.timezone) == (
        "weekly",
        [0, 1, 2, 3, 4],
        "Europe/Amsterdam",
    )
    assert (body["at_time"], body["until_time"], body["revision"]) == ("21:00", "06:30", 1)
    assert body["app_actions"] == [
        {"app": app.pk, "app_name": "hello", "mode": "percent", "value": 50, "floor": 1}
    ]
    assert body["node_group_actions"] == [
        {"node_group": group.pk, "node_group_name": "workers", "desired": 1}
    ]
    assert len(body["next_runs"]) == 5 and body["problem"] == ""
    assert body["url"].endswith(f"/api/scaling/schedules/{schedule.pk}/")


def test_it_reports_each_bad_field_by_name(
    api: APIClient, make_app: Callable[..., App], group: NodeGroup
) -> None:
    app = make_app()
    body = {
        **weeknights(app, group),
        "kind": "cron",
        "cron": "0 0 30 2 *",
        "timezone": "Mars/Olympus_Mons",
        "app_actions": [{"app": app.pk, "mode": "percent", "value": 5000}],
        "node_group_actions": [{"node_group": group.pk, "desired": 9}],
    }
    answer = api.post("/api/scaling/schedules/", body, format="json")
    assert answer.status_code == 400
    errors = answer.json()
    assert set(errors) == {"cron", "timezone", "app_actions", "node_group_actions"}
    assert errors["app_actions"] == [{"value": ["A percentage must be between 0 and 1000."]}]
    assert errors["node_group_actions"] == [{"desired": ["workers allows 1 to 5 nodes."]}]
    assert api.post("/api/scaling/schedules/", {"at_time": "25:00"}, format="json").json()[
        "at_time"
    ] == ["Enter a time as HH:MM, e.g. 21:00."]
    assert not Schedule.objects.exists()


def test_it_refuses_a_schedule_without_actions_or_with_a_target_twice(
    api: APIClient, make_app: Callable[..., App], group: NodeGroup
) -> None:
    app = make_app()
    empty = {**weeknights(app, group), "app_actions": [], "node_group_actions": []}
    answer = api.post("/api/scaling/schedules/", empty, format="json")
    assert answer.status_code == 400
    assert answer.json() == {"non_field_errors": ["Add at least one app or node group action."]}
    twice = {**weeknights(app, group), "app_actions": [{"app": app.pk}, {"app": app.pk}]}
    answer = api.post("/api/scaling/schedules/", twice, format="json")
    assert answer.status_code == 400
    first, second = answer.json()["app_actions"]
    assert first == {} and second == {
        "non_field_errors": ["Please correct the duplicate values below."]
    }
    assert not Schedule.objects.exists()


def test_an_edit_bumps_the_revision_so_the_latest_due_time_applies_again(
    api: APIClient, make_app: Callable[..., App], group: NodeGroup
) -> None:
    app = make_app()
    created = api.post("/api/scaling/schedules/", weeknights(app, group), format="json").json()
    clock = FrozenClock(datetime(2026, 6, 15, 20, 0, tzinfo=UTC))  # Monday 22:00 in Amsterdam
    (first,) = services.tick(clock)
    assert services.tick(clock) == []  # each due time once per revision
    url = f"/api/scaling/schedules/{created['id']}/"
    answer = api.patch(
        url, {"node_group_actions": [{"node_group": group.pk, "desired": 3}]}, format="json"
    )
    assert answer.status_code == 200, answer.json()
    assert answer.json()["revision"] == 2
    (again,) = services.tick(clock)
    assert (again.due_at, again.revision) == (first.due_at, 2)
    assert [change["desired"] for change in again.plan if change["target"] == "node_group"] == [3]


def test_put_replaces_the_rows_and_patch_keeps_what_it_does_not_name(
    api: APIClient, make_app: Callable[..., App], group: NodeGroup
) -> None:
    one, two = make_app("one"), make_app("two")
    created = api.post("/api/scaling/schedules/", weeknights(one, group), format="json").json()
    url = f"/api/scaling/schedules/{created['id']}/"
    row = AppAction.objects.get()
    body = {**weeknights(one, group), "app_actions": [
        {"app": two.pk, "mode": "absolute", "value": 3, "floor": 0},
        {"app": one.pk, "mode": "absolute", "value": 2, "floor": 0},
    ]}  # fmt: skip
    assert api.put(url, body, format="json").status_code == 200
    rows = {action.app.name: action for action in AppAction.objects.all()}
    assert rows["one"].pk == row.pk and (rows["one"].mode, rows["one"].value) == ("absolute", 2)
    assert rows["two"].value == 3
    answer = api.patch(url, {"enabled": False, "app_actions": [{"app": two.pk}]}, format="json")
    assert answer.status_code == 200
    assert [a["app_name"] for a in answer.json()["app_actions"]] == ["two"]
    assert answer.json()["enabled"] is False and answer.json()["at_time"] == "21:00"
    assert NodeGroupAction.objects.count() == 1  # not named: kept
    assert Schedule.objects.get().revision == 3


def test_schedules_need_an_operator_on_every_namespace(
    role_user: Any, make_app: Callable[..., App], group: NodeGroup
) -> None:
    # A deployer may scale apps, an operator of one namespace acts there only: neither
    # may schedule, with or without app rows; an operator on * may.
    body = weeknights(make_app(), group)
    for user in (role_user("deployer", "deployer"), role_user("ops-a", "operator", "team-a")):
        client = APIClient()
        client.force_authenticate(user)
        assert client.post("/api/scaling/schedules/", body, format="json").status_code == 403
        answer = client.post("/api/scaling/schedules/", {**body, "app_actions": []}, format="json")
        assert answer.status_code == 403
        assert not Schedule.objects.exists()
    client = APIClient()
    client.force_authenticate(role_user("planner", "operator"))
    answer = client.post("/api/scaling/schedules/", body, format="json")
    assert answer.status_code == 201, answer.json()


def test_it_deletes_a_schedule_and_keeps_its_runs(api: APIClient, group: NodeGroup) -> None:
    schedule = Schedule.objects.create(name="nights", cron="0 21 * * *")
    NodeGroupAction.objects.create(schedule=schedule, node_group=group, desired=1)
    run = ScalingRun.objects.create(kind=ScalingRun.Kind.DRY_RUN, schedule=schedule)
    assert api.delete(f"/api/scaling/schedules/{schedule.pk}/").status_code == 204
    assert not Schedule.objects.exists()
    run.refresh_from_db()
    assert run.schedule is None


def test_it_creates_edits_and_deletes_node_groups_with_the_forms_rules(api: APIClient) -> None:
    answer = api.post(
        "/api/scaling/node-groups/",
        {"name": "spot", "min_size": 0, "max_size": 4, "desired": 1},
        format="json",
    )
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert (body["provider"], body["baseline_desired"]) == ("local", None)
    url = f"/api/scaling/node-groups/{body['id']}/"
    assert api.patch(url, {"desired": 4}, format="json").json()["desired"] == 4
    answer = api.patch(url, {"min_size": 5}, format="json")
    assert answer.status_code == 400
    assert answer.json() == {"max_size": ["The maximum must be at least the minimum."]}
    answer = api.post("/api/scaling/node-groups/", {"name": "Spot_A", "desired": 20}, format="json")
    assert answer.status_code == 400
    assert set(answer.json()) == {"name", "desired"}
    answer = api.post("/api/scaling/node-groups/", {"name": "spot"}, format="json")
    assert answer.json() == {"name": ["Node group with this Name already exists."]}
    assert api.delete(url).status_code == 204
    assert not NodeGroup.objects.exists()


def test_schedules_and_node_groups_need_their_edit_permissions(
    role_user: Any, group: NodeGroup
) -> None:
    user = role_user("watcher", "deployer")
    client = APIClient()
    client.force_authenticate(user)
    schedule = Schedule.objects.create(name="nights", cron="0 21 * * *")
    assert (
        client.patch(f"/api/scaling/schedules/{schedule.pk}/", {}, format="json").status_code == 403
    )
    assert client.delete(f"/api/scaling/schedules/{schedule.pk}/").status_code == 403
    assert client.post("/api/scaling/node-groups/", {"name": "x"}, format="json").status_code == 403
    assert client.delete(f"/api/scaling/node-groups/{group.pk}/").status_code == 403
    assert Schedule.objects.exists() and NodeGroup.objects.exists()
