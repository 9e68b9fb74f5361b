"""The audit trail: one append-only record per user action, with who, when, where and what."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from dashboard.audit.models import AppendOnly, AuditEvent
from dashboard.audit.service import changes, client_ip, record
from dashboard.tokens.models import ApiToken
from deployer import services
from deployer.models import App, Deployment
from scaling.models import NodeGroup, Schedule

pytestmark = [pytest.mark.django_db, pytest.mark.both_databases]

ADDRESS = "198.51.100.7"


@pytest.fixture
def api(admin: Any) -> APIClient:
    """A REST client of the superuser, calling from ``ADDRESS``."""
    client = APIClient(REMOTE_ADDR=ADDRESS)
    client.force_authenticate(admin)
    return client


def only(action: str) -> AuditEvent:
    """The one event of ``action``."""
    events = list(AuditEvent.objects.filter(action=action))
    assert len(events) == 1, [(event.action, event.target) for event in events]
    return events[0]


def test_an_app_created_changed_and_deleted_through_the_api_is_recorded_with_diffs(
    api: APIClient,
) -> None:
    body = {"name": "shop", "image": "demo/hello:1", "frontend": "shop.localhost"}
    created = api.post("/api/apps/", {**body, "env": {"TOKEN": "s3cret"}}, format="json")
    assert created.status_code == 201, created.json()
    url = f"/api/apps/{created.json()['id']}/"
    assert (
        api.patch(url, {"replicas": 4, "image": "demo/hello:2"}, format="json").status_code == 200
    )
    assert api.delete(url).status_code == 204

    create = only("app.create")
    assert (create.username, create.ip, create.app, create.namespace) == (
        "root",
        ADDRESS,
        "shop",
        "default",
    )
    assert create.diff["name"] == [None, "shop"]
    assert create.diff["env"] == {"added": ["TOKEN"], "removed": [], "changed": []}
    edit = only("app.edit")
    assert edit.diff == {"image": ["demo/hello:1", "demo/hello:2"], "replicas": [2, 4]}
    delete = only("app.delete")
    assert delete.diff["image"] == ["demo/hello:2", None]
    assert "s3cret" not in json.dumps([create.diff, delete.diff])


def test_an_env_change_names_the_keys_and_never_a_value(api: APIClient, app: App) -> None:
    App.objects.filter(pk=app.pk).update(env={"KEEP": "same", "OLD": "gone-value", "PW": "one"})
    answer = api.patch(
        f"/api/apps/{app.pk}/",
        {"env": {"KEEP": "same", "PW": "two-value", "NEW": "new-value"}},
        format="json",
    )
    assert answer.status_code == 200, answer.json()
    edit = only("app.edit")
    assert edit.diff == {"env": {"added": ["NEW"], "removed": ["OLD"], "changed": ["PW"]}}
    text = json.dumps({"diff": edit.diff, "details": edit.details})
    for value in ("same", "gone-value", "one", "two-value", "new-value"):
        assert value not in text


def test_the_app_form_records_a_create_and_an_edit(admin_client: Client, app: App) -> None:
    from tests.dashboard.test_app_form import VALID

    assert admin_client.post("/apps/new/", VALID, REMOTE_ADDR=ADDRESS).status_code == 302
    answer = admin_client.post(
        f"/apps/{app.pk}/edit/",
        {**VALID, "name": "hello", "frontend": "hello.localhost", "replicas": "7"},
    )
    assert answer.status_code == 302
    create = only("app.create")
    assert (create.app, create.ip, create.diff["env"]["added"]) == ("shop", ADDRESS, ["LOG_LEVEL"])
    edit = only("app.edit")
    assert edit.app == "hello"
    assert edit.diff["replicas"] == [2, 7]
    assert "debug" not in json.dumps(edit.diff)


def test_deploy_scale_and_undeploy_through_the_api_are_recorded(api: APIClient, app: App) -> None:
    assert api.post(f"/api/apps/{app.pk}/scale/", {"replicas": 5}, format="json").status_code == 200
    answer = api.post(f"/api/apps/{app.pk}/deploy/", {"image": "demo/hello:2"}, format="json")
    assert answer.status_code == 202
    deploy = only("deploy")
    assert (deploy.username, deploy.ip, deploy.app, deploy.target_id) == (
        "root",
        ADDRESS,
        "hello",
        str(answer.json()["id"]),
    )
    assert deploy.details == {"image": "demo/hello:2", "trigger": "api"}
    assert only("scale").diff == {"replicas": [2, 5]}
    Deployment.objects.filter(app=app).update(status=Deployment.Status.SUCCEEDED)
    assert api.post(f"/api/apps/{app.pk}/undeploy/").status_code == 202
    assert only("undeploy").app == "hello"


def test_abort_promote_and_reject_are_recorded(
    api: APIClient, admin: Any, app: App, make_deployment: Callable[..., Deployment]
) -> None:
    queued = make_deployment(app, status=Deployment.Status.QUEUED, finished_at=None)
    assert api.post(f"/api/deployments/{queued.pk}/abort/").status_code in (200, 202)
    abort = only("abort")
    assert (abort.target_id, abort.ip, abort.app) == (str(queued.pk), ADDRESS, "hello")

    for decision in ("promote", "reject"):
        waiting = make_deployment(
            app,
            status=Deployment.Status.AWAITING_PROMOTION,
            finished_at=None,
            awaiting_since=timezone.now(),
        )
        services.request_promotion(waiting, decision, user=admin)
        event = only(decision)
        assert (event.username, event.target_id, event.ip) == ("root", str(waiting.pk), None)


def test_a_swap_back_is_recorded_with_the_version(
    admin: Any, app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(services, "warm_previous_version", lambda app: (1, "demo/hello:1"))
    deployment = services.request_swap_back(app, user=admin)
    assert deployment is not None
    event = only("swap_back")
    assert (event.target_id, event.details) == (str(deployment.pk), {"version": 1})


def test_a_webhook_deploy_names_its_trigger_and_a_refused_deploy_records_nothing(
    app: App,
) -> None:
    with pytest.raises(services.InvalidRequest):
        services.request_deploy(app, image="no spaces")
    assert not AuditEvent.objects.exists()
    services.request_deploy(app, trigger=Deployment.Trigger.WEBHOOK)
    assert only("deploy").username == "webhook"


def test_a_token_call_names_the_token_and_token_changes_are_recorded(admin: Any, app: App) -> None:
    ci, secret = ApiToken.issue(admin, "ci", ["read", "deploy", "admin"], [], None)
    client = APIClient(REMOTE_ADDR=ADDRESS, HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert client.post(f"/api/apps/{app.pk}/deploy/").status_code == 202
    deploy = only("deploy")
    assert (deploy.username, deploy.token, deploy.actor) == ("root", "ci", "root (token ci)")

    answer = client.post("/api/tokens/", {"name": "reader", "scopes": ["read"]}, format="json")
    assert answer.status_code == 201, answer.json()
    create = only("token.create")
    assert (create.target, create.token, create.details["scopes"]) == (
        str(ApiToken.objects.get(name="reader")),
        "ci",
        ["read"],
    )
    assert answer.json()["token"] not in json.dumps(create.details)
    reader = ApiToken.objects.get(name="reader")
    assert client.delete(f"/api/tokens/{reader.pk}/").status_code == 204
    assert client.delete(f"/api/tokens/{reader.pk}/").status_code == 204
    assert only("token.revoke").target_id == str(reader.pk)


def test_the_tokens_page_records_create_and_revoke(admin_client: Client, admin: Any) -> None:
    answer = admin_client.post("/tokens/", {"name": "laptop", "scopes": ["read"]})
    assert answer.status_code == 201
    token = ApiToken.objects.get(name="laptop")
    assert admin_client.post(f"/tokens/{token.pk}/revoke/").status_code == 302
    assert only("token.create").details["owner"] == "root"
    assert only("token.revoke").target_id == str(token.pk)


def test_schedules_node_groups_and_node_actions_are_recorded(api: APIClient, app: App) -> None:
    group = api.post(
        "/api/scaling/node-groups/",
        {"name": "spot", "min_size": 0, "max_size": 4, "desired": 1},
        format="json",
    ).json()
    group_url = f"/api/scaling/node-groups/{group['id']}/"
    assert api.patch(group_url, {"desired": 3}, format="json").status_code == 200
    body = {
        "name": "nights",
        "kind": "cron",
        "cron": "0 21 * * *",
        "timezone": "UTC",
        "app_actions": [{"app": app.pk, "mode": "absolute", "value": 1}],
        "node_group_actions": [],
    }
    created = api.post("/api/scaling/schedules/", body, format="json")
    assert created.status_code == 201, created.json()
    schedule_url = f"/api/scaling/schedules/{created.json()['id']}/"
    assert api.patch(schedule_url, {"cron": "0 22 * * *"}, format="json").status_code == 200
    assert api.delete(schedule_url).status_code == 204
    assert api.delete(group_url).status_code == 204
    assert api.post("/api/scaling/nodes/node-1/cordon/").status_code == 202

    assert only("node_group.create").diff["name"] == [None, "spot"]
    assert only("node_group.edit").diff == {"desired": [1, 3]}
    assert only("node_group.delete").diff["desired"] == [3, None]
    assert only("schedule.create").diff["app_actions"][1][0]["app"] == app.pk
    assert only("schedule.edit").diff["cron"] == ["0 21 * * *", "0 22 * * *"]
    assert only("schedule.delete").target == "nights"
    node = only("node.action")
    assert (node.target, node.details["verb"], node.ip) == ("node node-1", "cordon", ADDRESS)
    assert not Schedule.objects.exists() and not NodeGroup.objects.exists()


def test_the_scaling_pages_record_a_node_group_and_its_deletion(admin_client: Client) -> None:
    answer = admin_client.post(
        "/scaling/node-groups/new/",
        {"name": "web", "provider": "local", "min_size": 0, "max_size": 3, "desired": 1},
    )
    assert answer.status_code == 302
    group = NodeGroup.objects.get(name="web")
    assert admin_client.post(f"/scaling/node-groups/{group.pk}/delete/").status_code == 302
    assert only("node_group.create").username == "root"
    assert only("node_group.delete").target == "web"


def test_sign_ins_and_failed_sign_ins_are_recorded(admin: Any) -> None:
    client = Client(REMOTE_ADDR=ADDRESS)
    client.post("/login/", {"username": "root", "password": "wrong"})
    failed = only("login_failed")
    assert (failed.username, failed.user_id, failed.ip) == ("root", None, ADDRESS)
    assert "wrong" not in json.dumps(failed.details)
    assert client.post("/login/", {"username": "root", "password": "pw-root"}).status_code == 302
    login = only("login")
    assert (login.username, login.user_id, login.ip, login.details) == (
        "root",
        admin.pk,
        ADDRESS,
        {"method": "password"},
    )


def test_events_refuse_every_change_and_deletion(admin: Any) -> None:
    event = record(admin, "login", admin)
    event.username = "someone-else"
    with pytest.raises(AppendOnly):
        event.save()
    with pytest.raises(AppendOnly):
        event.delete()
    with pytest.raises(AppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(username="x")
    with pytest.raises(AppendOnly):
        AuditEvent.objects.all().delete()
    with pytest.raises(AppendOnly):
        AuditEvent.objects.bulk_update([event], ["username"])
    assert AuditEvent.objects.get(pk=event.pk).username == "root"
    with pytest.raises(ValueError, match="Unknown audit action"):
        record(admin, "made-up", admin)


def test_the_api_is_read_only(api: APIClient, admin: Any) -> None:
    event = record(admin, "login", admin)
    assert api.post("/api/audit/", {"action": "login"}, format="json").status_code == 405
    assert api.delete("/api/audit/").status_code == 405
    assert api.put(f"/api/audit/{event.pk}/", {}, format="json").status_code == 404
    assert AuditEvent.objects.get().username == "root"


def test_the_client_address_follows_x_forwarded_for_only_from_a_trusted_proxy(
    settings: Any, rf: Any
) -> None:
    forwarded = {"HTTP_X_FORWARDED_FOR": "203.0.113.9, 10.0.0.2", "REMOTE_ADDR": "10.0.0.1"}
    assert client_ip(rf.get("/", **forwarded)) == "10.0.0.1"
    settings.TRUSTED_PROXIES = ["10.0.0.1", "10.0.0.2"]
    assert client_ip(rf.get("/", **forwarded)) == "203.0.113.9"
    spoofed = {**forwarded, "REMOTE_ADDR": "192.0.2.50"}
    assert client_ip(rf.get("/", **spoofed)) == "192.0.2.50"
    garbage = {**forwarded, "HTTP_X_FORWARDED_FOR": "not-an-ip"}
    assert client_ip(rf.get("/", **garbage)) == "10.0.0.1"


def test_changes_lists_only_what_differs() -> None:
    assert changes({"a": 1, "b": 2}, {"a": 1, "b": 3}) == {"b": [2, 3]}
    assert changes({"env": {"A": "1"}}, {"env": {"A": "1"}}) == {}


@pytest.fixture
def history(admin: Any, django_user_model: Any) -> list[AuditEvent]:
    """Five events: ops and ann, two namespaces, two apps, spread over three days."""
    now = timezone.now()
    rows = [
        ("ops", "deploy", "shop", "team-a", now - timedelta(days=2)),
        ("ops", "scale", "shop", "team-a", now - timedelta(days=1)),
        ("ann", "deploy", "blog", "team-b", now - timedelta(hours=1)),
        ("ann", "login", "", "", now - timedelta(minutes=5)),
        ("ops", "app.edit", "blog", "team-b", now),
    ]
    return [
        AuditEvent.objects.create(
            username=who, action=action, app=app, namespace=namespace, at=at, ip=ADDRESS
        )
        for who, action, app, namespace, at in rows
    ]


def actions_of(page: Any) -> list[str]:
    """The page's actions, less the sign-in of the test's own client."""
    return [event.action for event in page.context["page"].object_list if event.username != "root"]


def test_the_page_filters_by_who_what_app_namespace_and_time(
    admin_client: Client, history: list[AuditEvent]
) -> None:
    assert actions_of(admin_client.get("/audit/")) == [
        "app.edit",
        "login",
        "deploy",
        "scale",
        "deploy",
    ]
    assert actions_of(admin_client.get("/audit/?user=ann")) == ["login", "deploy"]
    assert actions_of(admin_client.get("/audit/?action=deploy&app=shop")) == ["deploy"]
    assert actions_of(admin_client.get("/audit/?namespace=team-b")) == ["app.edit", "deploy"]
    since = (timezone.now() - timedelta(days=1, hours=1)).strftime("%Y-%m-%dT%H:%M")
    until = (timezone.now() - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M")
    answer = admin_client.get(f"/audit/?since={since}&until={until}")
    assert actions_of(answer) == ["deploy", "scale"]
    assert b"Audit" in answer.content and ADDRESS.encode() in answer.content


def test_a_bad_filter_is_a_400_with_the_reason(
    admin_client: Client, history: list[AuditEvent]
) -> None:
    answer = admin_client.get("/audit/?since=yesterday")
    assert answer.status_code == 400
    assert "since" in answer.context["filters"].errors
    answer = admin_client.get("/audit/?since=2026-12-02&until=2026-12-01")
    assert answer.context["filters"].errors["until"] == [
        "The end of the range is before its start."
    ]
    assert admin_client.get("/audit/?action=nope").status_code == 400
    assert admin_client.get("/audit/?export=xml").status_code == 400
    assert admin_client.get("/api/audit/?until=soon").status_code == 400


def test_csv_and_json_exports_hold_the_filtered_events(
    admin_client: Client, history: list[AuditEvent]
) -> None:
    answer = admin_client.get("/audit/?export=csv&user=ops&namespace=team-a")
    assert answer["Content-Disposition"] == 'attachment; filename="greenlight-audit.csv"'
    rows = list(csv.DictReader(io.StringIO(b"".join(answer.streaming_content).decode())))
    assert [(row["action"], row["app"], row["ip"]) for row in rows] == [
        ("scale", "shop", ADDRESS),
        ("deploy", "shop", ADDRESS),
    ]
    answer = admin_client.get("/audit/?export=json&action=deploy")
    body = json.loads(answer.content)
    assert [(row["username"], row["app"]) for row in body] == [("ann", "blog"), ("ops", "shop")]
    assert set(body[0]) >= {"at", "username", "token", "ip", "action", "target", "diff"}


def test_the_api_pages_through_the_same_filtered_events(api: APIClient, admin: Any) -> None:
    for number in range(55):
        record(admin, "scale", f"app {number}", app="shop", namespace="team-a")
    record(admin, "login", admin)
    first = api.get("/api/audit/?action=scale").json()
    assert first["count"] == 55
    assert len(first["results"]) == 50
    assert first["results"][0]["target"] == "app 54"
    second = api.get(first["next"]).json()
    assert [row["target"] for row in second["results"]] == [f"app {n}" for n in range(4, -1, -1)]
    assert second["next"] is None
    assert api.get("/api/audit/?user=nobody").json()["count"] == 0


def test_only_staff_and_admins_read_the_trail(
    django_user_model: Any, admin: Any, history: list[AuditEvent]
) -> None:
    plain = django_user_model.objects.create_user(username="plain", password="pw")
    staff = django_user_model.objects.create_user(username="staff", password="pw", is_staff=True)
    client = Client()
    client.force_login(plain)
    assert client.get("/audit/").status_code == 403
    assert b'href="/audit/"' not in client.get("/tokens/").content
    api = APIClient()
    api.force_authenticate(plain)
    assert api.get("/api/audit/").status_code == 403
    client.force_login(staff)
    assert client.get("/audit/").status_code == 200
    assert b'href="/audit/"' in client.get("/tokens/").content
    _, secret = ApiToken.issue(admin, "deployer", ["deploy"], [], None)
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {secret}").get("/api/audit/").status_code == 403
    _, secret = ApiToken.issue(admin, "reader", ["read"], [], None)
    assert APIClient(HTTP_AUTHORIZATION=f"Bearer {secret}").get("/api/audit/").status_code == 200


def test_a_namespace_limited_token_reads_only_its_namespaces_events(
    admin: Any, history: list[AuditEvent]
) -> None:
    _, secret = ApiToken.issue(admin, "team-a", ["read"], ["team-a"], None)
    answer = APIClient(HTTP_AUTHORIZATION=f"Bearer {secret}").get("/api/audit/")
    assert [row["action"] for row in answer.json()["results"]] == ["scale", "deploy"]


def test_role_bindings_added_and_removed_are_recorded(
    api: APIClient, django_user_model: Any
) -> None:
    pytest.importorskip("deployer.roles")
    django_user_model.objects.create_user("someone")
    body = {"role": "viewer", "user": "someone", "namespace": "team-a"}
    answer = api.post("/api/role-bindings/", body, format="json")
    assert answer.status_code == 201, answer.json()
    assert api.delete(f"/api/role-bindings/{answer.json()['id']}/").status_code == 204
    create = only("role_binding.create")
    assert (create.namespace, create.ip, create.details) == ("team-a", ADDRESS, {"role": "viewer"})
    assert "someone" in create.target
    assert only("role_binding.delete").target_id == create.target_id


def test_a_namespace_admin_reads_only_that_namespaces_events(
    django_user_model: Any, history: list[AuditEvent]
) -> None:
    pytest.importorskip("deployer.roles")
    binding = django_user_model._meta.apps.get_model("deployer", "RoleBinding")
    client = Client()
    for name, role, status in (("team-admin", "admin", 200), ("team-operator", "operator", 403)):
        user = django_user_model.objects.create_user(name)
        binding.objects.create(role=role, user=user, namespace="team-b")
        client.force_login(user)
        answer = client.get("/audit/")
        assert answer.status_code == status
    client.force_login(django_user_model.objects.get(username="team-admin"))
    page = client.get("/audit/").context["page"]
    assert {event.namespace for event in page.object_list} == {"team-b"}
