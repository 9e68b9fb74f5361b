"""The scaling REST API: runs and logs, schedules with next runs, actions that record runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from deployer.models import App
from scaling.models import AppAction, NodeGroup, ScalingRun, ScalingRunLog, Schedule

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(admin_user: Any) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=admin_user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def test_it_lists_schedules_with_their_next_runs(
    api: APIClient, make_app: Callable[..., App], make_schedule: Callable[..., Schedule]
) -> None:
    make_schedule("nights", cron="0 21 * * *", zone="Europe/Amsterdam",
                  apps={make_app(): (AppAction.Mode.PERCENT, 50)})  # fmt: skip
    data = api.get("/api/scaling/schedules/").json()
    (schedule,) = data["results"]
    assert schedule["name"] == "nights" and len(schedule["next_runs"]) == 5
    assert schedule["app_actions"][0] == {
        "app": schedule["app_actions"][0]["app"], "app_name": "hello", "mode": "percent",
        "value": 50, "floor": 1,
    }  # fmt: skip


def test_actions_answer_202_with_the_run_they_recorded(
    api: APIClient, make_app: Callable[..., App], make_schedule: Callable[..., Schedule]
) -> None:
    app = make_app()
    schedule = make_schedule("nights", cron="0 21 * * *", apps={app: (AppAction.Mode.ABSOLUTE, 1)})
    group = NodeGroup.objects.create(name="workers", min_size=1, max_size=5, desired=2)
    answers = [
        api.post(f"/api/scaling/schedules/{schedule.pk}/dry-run/"),
        api.post(f"/api/scaling/node-groups/{group.pk}/capacity/", {"desired": 3}, format="json"),
        api.post(f"/api/scaling/apps/{app.pk}/scale/", {"replicas": 2}, format="json"),
        api.post("/api/scaling/nodes/node-1/drain/", {"deadline": 60}, format="json"),
    ]
    assert [a.status_code for a in answers] == [202, 202, 202, 202]
    assert [a.json()["kind"] for a in answers] == ["dry_run", "set_capacity", "scale_app", "drain"]
    run = answers[3].json()
    assert run["url"].endswith(f"/api/scaling/runs/{run['id']}/")
    assert api.get(run["url"]).json()["params"] == {
        "node": "node-1",
        "force": False,
        "deadline": 60,
    }


def test_bad_input_is_refused_by_field(api: APIClient) -> None:
    group = NodeGroup.objects.create(name="workers", min_size=1, max_size=5, desired=2)
    answer = api.post(
        f"/api/scaling/node-groups/{group.pk}/capacity/", {"desired": 9}, format="json"
    )
    assert answer.status_code == 400
    assert "workers allows 1 to 5 nodes" in answer.json()["desired"][0]["message"]
    assert api.post("/api/scaling/nodes/n1/reboot/").status_code == 404
    answer = api.post("/api/scaling/nodes/Node_1/cordon/")
    assert answer.status_code == 400
    assert "'Node_1' is not a node name" in answer.json()["node"][0]
    assert (
        api.post("/api/scaling/apps/999/scale/", {"replicas": 1}, format="json").status_code == 404
    )
    assert not ScalingRun.objects.exists()


@pytest.mark.both_databases
def test_run_logs_page_by_sequence_number(api: APIClient) -> None:
    run = ScalingRun.objects.create(kind=ScalingRun.Kind.CORDON, params={"node": "n1"})
    ScalingRunLog.objects.bulk_create(
        [ScalingRunLog(run=run, seq=i, message=f"line {i}") for i in range(1, 4)]
    )
    page = api.get(f"/api/scaling/runs/{run.pk}/logs/", {"after": 1}).json()
    assert [line["seq"] for line in page["results"]] == [2, 3]
    assert (page["last_seq"], page["has_more"], page["status"]) == (3, False, "queued")
    page = api.get(f"/api/scaling/runs/{run.pk}/logs/", {"after": 2**70}).json()
    assert (page["results"], page["has_more"]) == ([], False)
    assert api.get(f"/api/scaling/runs/{run.pk}/logs/", {"after": "x"}).status_code == 400


def test_anonymous_and_unprivileged_callers_are_refused(django_user_model: Any) -> None:
    assert APIClient().get("/api/scaling/runs/").status_code in (401, 403)
    user = django_user_model.objects.create_user("dev", password="a-long-password-1")
    client = APIClient()
    client.force_authenticate(user)
    assert client.get("/api/scaling/runs/").status_code == 403
