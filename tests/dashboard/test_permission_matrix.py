"""Who may do what: every role against every page, API route, live-log socket and webhook.

The routes come from the URL resolvers, so a route (or a viewset method) added without
an entry here fails ``test_every_route_has_an_entry_in_the_matrix``. Each case sends a
request that passes the permission check and then stops short of real work where it
can (an invalid body, a finished deployment), so that an allowed cell answers with
something other than 403 and a refused one with 403 (or a sign-in redirect).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from dashboard.api.hooks import signature
from dashboard.asgi import application
from dashboard.notifications.models import Delivery, Subscription
from dashboard.routing import websocket_urlpatterns
from dashboard.tokens.models import ApiToken
from deployer.livelog import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from deployer.models import App, Deployment
from scaling.models import NodeGroup, NodeGroupAction, ScalingRun, Schedule

ANONYMOUS = "anonymous"
NOBODY = "no-permission"
VIEWER = "viewer"
EDITOR = "app-editor"
DEPLOYER = "deployer"
SCALER = "scaling-only"
SUPERUSER = "superuser"
ROLES = (ANONYMOUS, NOBODY, VIEWER, EDITOR, DEPLOYER, SCALER, SUPERUSER)

SCALING_PERMS = (
    "scaling.view_schedule",
    "scaling.view_scalingrun",
    "scaling.add_schedule",
    "scaling.change_schedule",
    "scaling.delete_schedule",
    "scaling.change_nodegroup",
    "scaling.add_scalingrun",
)
ROLE_PERMS: dict[str, tuple[str, ...]] = {
    NOBODY: (),
    VIEWER: ("deployer.view_app",),
    EDITOR: ("deployer.view_app", "deployer.add_app", "deployer.change_app", "deployer.delete_app"),
    DEPLOYER: ("deployer.view_app", "deployer.add_deployment", "deployer.change_deployment"),
    SCALER: SCALING_PERMS,
}

# A cell that expects a redirect to a sign-in page (the dashboard's or the admin's).
LOGIN = "login"
# Anonymous API callers: DRF answers 403 (session auth first, so no WWW-Authenticate).
API_ANON = 403

Expected = dict[str, int | str]


def cells(
    allowed: set[str], yes: int, *, no: int | str = 403, anonymous: int | str = LOGIN
) -> Expected:
    """``yes`` for the allowed roles and the superuser, ``no`` for the other users."""
    table: Expected = {role: (yes if role in allowed | {SUPERUSER} else no) for role in ROLES}
    table[ANONYMOUS] = anonymous
    return table


def everyone(status: int | str) -> Expected:
    """The same answer for every role, signed in or not (pages open to all, webhooks)."""
    return dict.fromkeys(ROLES, status)


VIEW = {VIEWER, EDITOR, DEPLOYER}
SCALING = {SCALER}
SIGNED_IN = {NOBODY, VIEWER, EDITOR, DEPLOYER, SCALER}


@dataclass
class World:
    """The objects the cases act on, created afresh for every cell."""

    app: App
    deployment: Deployment
    schedule: Schedule
    group: NodeGroup
    run: ScalingRun


@dataclass(frozen=True)
class Case:
    """One request against one route, and what each role gets back."""

    route: str
    method: str
    expected: Expected
    kwargs: Callable[[World], dict[str, Any]] = lambda world: {}
    data: Callable[[World], Any] | None = None
    label: str = ""
    api: bool = False
    headers: Callable[[World, bytes], dict[str, str]] = field(default=lambda world, body: {})

    @property
    def id(self) -> str:
        """The parametrize id: route, method and label."""
        return f"{self.route}-{self.method}" + (f"-{self.label}" if self.label else "")


def app_pk(world: World) -> dict[str, Any]:
    return {"pk": world.app.pk}


def deployment_pk(world: World) -> dict[str, Any]:
    return {"pk": world.deployment.pk}


def schedule_pk(world: World) -> dict[str, Any]:
    return {"pk": world.schedule.pk}


def group_pk(world: World) -> dict[str, Any]:
    return {"pk": world.group.pk}


def run_pk(world: World) -> dict[str, Any]:
    return {"pk": world.run.pk}


def subscription_pk(world: World) -> dict[str, Any]:
    """A subscription for every app, made on first use."""
    hook, _ = Subscription.objects.get_or_create(
        name="ops",
        defaults={
            "events": ["failed"],
            "channel": "slack",
            "target": "https://hooks.example.com/x",
        },
    )
    return {"pk": hook.pk}


def delivery_pk(world: World) -> dict[str, Any]:
    """A delivery of that subscription, made on first use."""
    hook = Subscription.objects.get(pk=subscription_pk(world)["pk"])
    delivery, _ = Delivery.objects.get_or_create(subscription=hook, event="failed")
    return {"pk": delivery.pk}


def others_token_pk(world: World) -> dict[str, Any]:
    """An API token of another user, made on first use: only an administrator may touch it."""
    owner, _ = User.objects.get_or_create(username="token-owner")
    token = ApiToken.objects.filter(user=owner).first()
    if token is None:
        token, _ = ApiToken.issue(owner, "ci", ["read"])
    return {"pk": token.pk}


def schedule_form(world: World, *, with_app: bool) -> dict[str, str]:
    data = {
        "name": "mornings",
        "enabled": "on",
        "kind": "cron",
        "cron": "0 21 * * 1-5",
        "timezone": "UTC",
        "apps-TOTAL_FORMS": "1" if with_app else "0",
        "apps-INITIAL_FORMS": "0",
        "groups-TOTAL_FORMS": "1",
        "groups-INITIAL_FORMS": "0",
        "groups-0-node_group": str(world.group.pk),
        "groups-0-desired": "2",
    }
    if with_app:
        data.update({"apps-0-app": str(world.app.pk), "apps-0-mode": "absolute"})
        data.update({"apps-0-value": "0", "apps-0-floor": "0"})
    return data


def schedule_body(world: World, *, with_app: bool) -> dict[str, Any]:
    """The API twin of ``schedule_form``: a valid schedule, with or without an app row."""
    body: dict[str, Any] = {
        "name": "mornings",
        "kind": "cron",
        "cron": "0 21 * * 1-5",
        "node_group_actions": [{"node_group": world.group.pk, "desired": 2}],
    }
    if with_app:
        body["app_actions"] = [{"app": world.app.pk, "mode": "absolute", "value": 0, "floor": 0}]
    return body


def signed_headers(world: World, body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    return {
        "X-Greenlight-Timestamp": stamp,
        "X-Greenlight-Signature": signature(world.app.webhook_secret, body, stamp),
    }


def dockerhub_push(world: World) -> dict[str, Any]:
    return {"push_data": {"tag": "2"}, "repository": {"repo_name": "demo/hello"}}


BAD_IMAGE = {"image": "Not An Image!"}

PAGES = [
    Case("home", "GET", cells(VIEW, 200)),
    Case("app-create", "GET", cells({EDITOR}, 200)),
    Case("app-create", "POST", cells({EDITOR}, 400), data=lambda w: {}),
    Case("app-detail", "GET", cells(VIEW, 200), app_pk),
    Case("app-edit", "GET", cells({EDITOR}, 200), app_pk),
    Case("app-edit", "POST", cells({EDITOR}, 400), app_pk, lambda w: {"replicas": "-1"}),
    Case("app-deploy", "POST", cells({DEPLOYER}, 400), app_pk, lambda w: BAD_IMAGE),
    Case("app-scale", "POST", cells({DEPLOYER}, 400), app_pk, lambda w: {"replicas": "-1"}),
    Case("app-swap-back", "POST", cells({DEPLOYER}, 302), app_pk),
    Case("app-undeploy", "GET", cells({DEPLOYER}, 200), app_pk),
    Case("app-undeploy", "POST", cells({DEPLOYER}, 400), app_pk, lambda w: {"confirm": "no"}),
    Case("app-history", "GET", cells(VIEW, 200), app_pk),
    # The matrix has no cluster: a user who may see the app learns that it did not answer.
    Case("pod-logs", "GET", cells(VIEW, 503), lambda w: {"pk": w.app.pk, "pod": "hello-v1-abcde"}),
    Case("deployment-list", "GET", cells(VIEW, 200)),
    Case("deployment-detail", "GET", cells(VIEW, 200), deployment_pk),
    Case("deployment-abort", "POST", cells({DEPLOYER}, 302), deployment_pk),
    Case("deployment-promote", "POST", cells({DEPLOYER}, 302), deployment_pk),
    Case("deployment-reject", "POST", cells({DEPLOYER}, 302), deployment_pk),
    Case("load-balancer", "GET", cells(VIEW, 200)),
    # Notifications: seen with the view permission, managed with the app-change one.
    Case("notifications", "GET", cells(VIEW, 200)),
    Case("subscription-create", "GET", cells({EDITOR}, 200)),
    Case("subscription-create", "POST", cells({EDITOR}, 400), data=lambda w: {}),
    Case("subscription-edit", "GET", cells({EDITOR}, 200), subscription_pk),
    Case(
        "subscription-edit", "POST", cells({EDITOR}, 400), subscription_pk, lambda w: {"name": ""}
    ),
    Case("subscription-delete", "POST", cells({EDITOR}, 302), subscription_pk),
    Case("scaling:overview", "GET", cells(SCALING, 200)),
    Case("scaling:schedule-create", "GET", cells(SCALING, 200)),
    Case("scaling:schedule-create", "POST", cells(SCALING, 400), data=lambda w: {}),
    Case(
        "scaling:schedule-create",
        "POST",
        cells(SCALING, 302),
        data=lambda w: schedule_form(w, with_app=False),
        label="node-groups-only",
    ),
    Case(
        "scaling:schedule-create",
        "POST",
        # A schedule that scales an app needs the right to scale apps.
        cells(set(), 302),
        data=lambda w: schedule_form(w, with_app=True),
        label="scaling-an-app",
    ),
    Case("scaling:schedule-preview", "GET", cells(SCALING, 200)),
    Case("scaling:schedule-edit", "GET", cells(SCALING, 200), schedule_pk),
    Case("scaling:schedule-edit", "POST", cells(SCALING, 400), schedule_pk, lambda w: {}),
    Case("scaling:schedule-delete", "POST", cells(SCALING, 302), schedule_pk),
    Case("scaling:schedule-dry-run", "POST", cells(SCALING, 302), schedule_pk),
    Case("scaling:cluster", "GET", cells(SCALING, 200)),
    Case("scaling:node-group-create", "GET", cells(SCALING, 200)),
    Case("scaling:node-group-create", "POST", cells(SCALING, 400), data=lambda w: {}),
    Case("scaling:node-group-edit", "GET", cells(SCALING, 200), group_pk),
    Case(
        "scaling:node-group-capacity",
        "POST",
        cells(SCALING, 302),
        group_pk,
        lambda w: {"desired": "99"},
    ),
    Case("scaling:node-group-delete", "POST", cells(SCALING, 302), group_pk),
    # Scaling an app is the app page's Scale: the scaling run permission is not enough.
    Case("scaling:app-scale", "POST", cells(set(), 302), app_pk, lambda w: {"replicas": "-1"}),
    Case(
        "scaling:node-action",
        "POST",
        cells(SCALING, 302),
        lambda w: {"name": "node-1", "action": "bogus"},
    ),
    Case("scaling:run-list", "GET", cells(SCALING, 200)),
    Case("scaling:run-detail", "GET", cells(SCALING, 200), run_pk),
    Case("scaling:run-logs", "GET", cells(SCALING, 200), run_pk),
    # Everyone signed in has a Tokens page of their own; revoking another's is an admin's.
    Case("tokens", "GET", cells(SIGNED_IN, 200)),
    Case("tokens", "POST", cells(SIGNED_IN, 400), data=lambda w: {}),
    # The audit trail: staff and superusers.
    Case("audit", "GET", cells(set(), 200)),
    Case("audit", "GET", cells(set(), 200), data=lambda w: {"export": "csv"}, label="csv"),
    Case("token-revoke", "POST", cells(set(), 302), others_token_pk),
    Case("login", "GET", everyone(200)),
    Case("logout", "POST", everyone(LOGIN)),
    # Single sign-on is off without GREENLIGHT_OIDC_ISSUER (tests/dashboard/test_sso.py).
    Case("oidc-authenticate", "GET", everyone(404)),
    Case("oidc-callback", "GET", everyone(404)),
    # The admin's sign-in page; a staff user is sent on to the admin site.
    Case("admin-login", "GET", {**everyone(200), SUPERUSER: 302}),
    # Django's admin sends signed-in users without staff status to its own sign-in page.
    Case("admin:index", "GET", cells(set(), 200, no=LOGIN)),
]


def api_case(route: str, method: str, expected: Expected, *args: Any, **kwargs: Any) -> Case:
    return Case(route, method, expected, *args, api=True, **kwargs)


def api_cells(allowed: set[str], yes: int) -> Expected:
    return cells(allowed, yes, anonymous=API_ANON)


API = [
    api_case("api:api-root", "GET", api_cells(SIGNED_IN, 200)),
    api_case("api:app-list", "GET", api_cells(VIEW, 200)),
    api_case("api:app-list", "POST", api_cells({EDITOR}, 400), data=lambda w: {}),
    api_case("api:app-detail", "GET", api_cells(VIEW, 200), app_pk),
    api_case("api:app-detail", "PUT", api_cells({EDITOR}, 400), app_pk, lambda w: {}),
    api_case(
        "api:app-detail", "PATCH", api_cells({EDITOR}, 400), app_pk, lambda w: {"replicas": -1}
    ),
    api_case("api:app-detail", "DELETE", api_cells({EDITOR}, 204), app_pk),
    api_case("api:app-deploy", "POST", api_cells({DEPLOYER}, 400), app_pk, lambda w: BAD_IMAGE),
    api_case(
        "api:app-scale", "POST", api_cells({DEPLOYER}, 400), app_pk, lambda w: {"replicas": -1}
    ),
    # No warm previous version: the permission check passes, then a 409.
    api_case("api:app-swap-back", "POST", api_cells({DEPLOYER}, 409), app_pk),
    api_case("api:app-undeploy", "POST", api_cells({DEPLOYER}, 202), app_pk),
    api_case("api:deployment-list", "GET", api_cells(VIEW, 200)),
    api_case("api:deployment-detail", "GET", api_cells(VIEW, 200), deployment_pk),
    api_case("api:deployment-logs", "GET", api_cells(VIEW, 200), deployment_pk),
    api_case("api:deployment-abort", "POST", api_cells({DEPLOYER}, 409), deployment_pk),
    # A finished deployment awaits nothing: an allowed promote or reject is a 409.
    api_case("api:deployment-promote", "POST", api_cells({DEPLOYER}, 409), deployment_pk),
    api_case("api:deployment-reject", "POST", api_cells({DEPLOYER}, 409), deployment_pk),
    # Read-only, like the Load balancer page; no etcd runs here, so an allowed read is a 503
    # that says why (tests/dashboard/test_api_load_balancers.py reads a live fleet).
    api_case("api:load-balancer-list", "GET", api_cells(VIEW, 503)),
    api_case("api:subscription-list", "GET", api_cells(VIEW, 200)),
    api_case("api:subscription-list", "POST", api_cells({EDITOR}, 400), data=lambda w: {}),
    api_case("api:subscription-detail", "GET", api_cells(VIEW, 200), subscription_pk),
    api_case(
        "api:subscription-detail", "PUT", api_cells({EDITOR}, 400), subscription_pk, lambda w: {}
    ),
    api_case(
        "api:subscription-detail",
        "PATCH",
        api_cells({EDITOR}, 400),
        subscription_pk,
        lambda w: {"events": ["nope"]},
    ),
    api_case("api:subscription-detail", "DELETE", api_cells({EDITOR}, 204), subscription_pk),
    api_case("api:delivery-list", "GET", api_cells(VIEW, 200)),
    api_case("api:delivery-detail", "GET", api_cells(VIEW, 200), delivery_pk),
    api_case("scaling-api:api-root", "GET", api_cells(SIGNED_IN, 200)),
    api_case("scaling-api:run-list", "GET", api_cells(SCALING, 200)),
    api_case("scaling-api:run-detail", "GET", api_cells(SCALING, 200), run_pk),
    api_case("scaling-api:run-logs", "GET", api_cells(SCALING, 200), run_pk),
    api_case("scaling-api:schedule-list", "GET", api_cells(SCALING, 200)),
    api_case("scaling-api:schedule-list", "POST", api_cells(SCALING, 400), data=lambda w: {}),
    api_case(
        "scaling-api:schedule-list",
        "POST",
        api_cells(SCALING, 201),
        data=lambda w: schedule_body(w, with_app=False),
        label="node-groups-only",
    ),
    api_case(
        "scaling-api:schedule-list",
        "POST",
        # As on the editor page: a schedule that scales an app needs the right to scale apps.
        api_cells(set(), 201),
        data=lambda w: schedule_body(w, with_app=True),
        label="scaling-an-app",
    ),
    api_case("scaling-api:schedule-detail", "GET", api_cells(SCALING, 200), schedule_pk),
    api_case(
        "scaling-api:schedule-detail", "PUT", api_cells(SCALING, 400), schedule_pk, lambda w: {}
    ),
    api_case(
        "scaling-api:schedule-detail",
        "PATCH",
        api_cells(SCALING, 400),
        schedule_pk,
        lambda w: {"timezone": "Mars/Olympus_Mons"},
    ),
    api_case("scaling-api:schedule-detail", "DELETE", api_cells(SCALING, 204), schedule_pk),
    api_case("scaling-api:schedule-dry-run", "POST", api_cells(SCALING, 202), schedule_pk),
    api_case("scaling-api:node-group-list", "GET", api_cells(SCALING, 200)),
    api_case("scaling-api:node-group-list", "POST", api_cells(SCALING, 400), data=lambda w: {}),
    api_case("scaling-api:node-group-detail", "GET", api_cells(SCALING, 200), group_pk),
    api_case(
        "scaling-api:node-group-detail", "PUT", api_cells(SCALING, 400), group_pk, lambda w: {}
    ),
    api_case(
        "scaling-api:node-group-detail",
        "PATCH",
        api_cells(SCALING, 400),
        group_pk,
        lambda w: {"min_size": 3, "max_size": 2},
    ),
    api_case("scaling-api:node-group-detail", "DELETE", api_cells(SCALING, 204), group_pk),
    api_case(
        "scaling-api:node-group-capacity",
        "POST",
        api_cells(SCALING, 400),
        group_pk,
        lambda w: {"desired": 99},
    ),
    # Scaling an app is /api/apps/{id}/scale/ by another route: the same permission.
    api_case(
        "scaling-api:app-scale", "POST", api_cells(set(), 400), app_pk, lambda w: {"replicas": -1}
    ),
    api_case(
        "scaling-api:node-action",
        "POST",
        api_cells(SCALING, 400),
        lambda w: {"name": "Not_A_Node!", "verb": "cordon"},
        lambda w: {},
    ),
    api_case("api:token-list", "GET", api_cells(SIGNED_IN, 200)),
    api_case("api:token-list", "POST", api_cells(SIGNED_IN, 400), data=lambda w: {}),
    api_case("api:audit-list", "GET", api_cells(set(), 200)),
    # Read-only: no write method exists for anyone.
    api_case("api:audit-list", "POST", api_cells(SIGNED_IN, 405), data=lambda w: {}),
    # Another user's token: out of sight (404) for all but an administrator.
    api_case(
        "api:token-detail", "GET", cells(set(), 200, no=404, anonymous=API_ANON), others_token_pk
    ),
    api_case(
        "api:token-detail",
        "DELETE",
        cells(set(), 204, no=404, anonymous=API_ANON),
        others_token_pk,
    ),
    # The API's description is public, as an OpenAPI document usually is; it holds no data.
    api_case("api-schema", "GET", everyone(200)),
    api_case("api-docs", "GET", everyone(200)),
]

# Webhooks authenticate the sender by secret or signature; who is signed in does not matter.
HOOKS = [
    api_case(
        "api:hook-dockerhub",
        "POST",
        everyone(202),
        lambda w: {"secret": w.app.webhook_secret},
        dockerhub_push,
        label="right-secret",
    ),
    api_case(
        "api:hook-dockerhub",
        "POST",
        everyone(404),
        lambda w: {"secret": "guessed"},
        dockerhub_push,
        label="wrong-secret",
    ),
    api_case(
        "api:hook-generic",
        "POST",
        everyone(202),
        lambda w: {"app_id": w.app.pk},
        lambda w: {"tag": "2"},
        label="signed",
        headers=signed_headers,
    ),
    api_case(
        "api:hook-generic",
        "POST",
        everyone(403),
        lambda w: {"app_id": w.app.pk},
        lambda w: {"tag": "2"},
        label="unsigned",
    ),
]

# Prometheus authenticates by the metrics token; who is signed in does not matter.
METRICS_TOKEN = "matrix-metrics-token-0123456789"
METRICS = [
    api_case(
        "metrics",
        "GET",
        everyone(200),
        headers=lambda w, body: {"Authorization": f"Bearer {METRICS_TOKEN}"},
        label="right-token",
    ),
    api_case("metrics", "GET", everyone(401), label="no-token"),
]

CASES = PAGES + API + HOOKS + METRICS

# Live-log sockets: (route pattern, object, role -> accepted (True) or close code).
SOCKETS: dict[str, tuple[Callable[[World], str], dict[str, bool | int]]] = {
    "ws/deployments/<int:pk>/": (
        lambda w: f"/ws/deployments/{w.deployment.pk}/",
        {
            **{role: (role in VIEW | {SUPERUSER}) or CLOSE_FORBIDDEN for role in ROLES},
            ANONYMOUS: CLOSE_UNAUTHENTICATED,
        },
    ),
    # Without a cluster the socket opens, says the cluster did not answer, and closes.
    "ws/apps/<int:pk>/pods/<str:pod>/logs/": (
        lambda w: f"/ws/apps/{w.app.pk}/pods/hello-v1-abcde/logs/",
        {
            **{role: (role in VIEW | {SUPERUSER}) or CLOSE_FORBIDDEN for role in ROLES},
            ANONYMOUS: CLOSE_UNAUTHENTICATED,
        },
    ),
    "ws/scaling/runs/<int:pk>/": (
        lambda w: f"/ws/scaling/runs/{w.run.pk}/",
        {
            **{role: (role in SCALING | {SUPERUSER}) or CLOSE_FORBIDDEN for role in ROLES},
            ANONYMOUS: CLOSE_UNAUTHENTICATED,
        },
    ),
}


def _routes(
    patterns: list[URLPattern | URLResolver], namespace: str = ""
) -> Iterator[tuple[str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = pattern.namespace or ""
            joined = f"{namespace}:{inner}" if namespace and inner else (inner or namespace)
            yield from _routes(pattern.url_patterns, joined)
        else:
            name = f"{namespace}:{pattern.name}" if namespace else str(pattern.name)
            yield name, pattern.callback


def test_every_route_has_an_entry_in_the_matrix() -> None:
    covered: dict[str, set[str]] = {}
    for case in CASES:
        covered.setdefault(case.route, set()).add(case.method.lower())
    missing: list[str] = []
    for name, callback in _routes(get_resolver().url_patterns):
        if name.startswith("admin:") and name != "admin:index":
            continue  # Django's admin: staff only throughout, sampled by admin:index
        if name not in covered:
            missing.append(name)
            continue
        # A viewset route lists its methods; each needs a case (HEAD is GET without a body).
        actions = set(getattr(callback, "actions", None) or {}) - {"head"}
        missing += [f"{name} {method.upper()}" for method in actions - covered[name]]
    assert not missing, f"routes without an entry in the permission matrix: {missing}"
    sockets = {str(pattern.pattern) for pattern in websocket_urlpatterns}
    assert sockets == set(SOCKETS), "every live-log socket needs an entry in SOCKETS"


def _user(django_user_model: Any, role: str) -> Any:
    if role == ANONYMOUS:
        return None
    if role == SUPERUSER:
        return django_user_model.objects.create_superuser("super", password="pw-super-user")
    user = django_user_model.objects.create_user(role, password="pw-" + role)
    for perm in ROLE_PERMS[role]:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


@pytest.fixture(autouse=True)
def _metrics_on(settings: Any) -> None:
    """GET /metrics answers for ``METRICS_TOKEN`` (it is off without a token)."""
    settings.METRICS_TOKEN = METRICS_TOKEN


@pytest.fixture
def world(make_app: Callable[..., App], make_deployment: Callable[..., Deployment]) -> World:
    """An undeployed app with a finished deploy, a schedule sizing a node group, a run."""
    app = make_app(name="hello", frontend="hello.localhost", image="demo/hello:1")
    group = NodeGroup.objects.create(name="workers", min_size=0, max_size=4, desired=2)
    schedule = Schedule.objects.create(name="nights", kind=Schedule.Kind.CRON, cron="0 21 * * *")
    NodeGroupAction.objects.create(schedule=schedule, node_group=group, desired=1)
    run = ScalingRun.objects.create(kind=ScalingRun.Kind.DRY_RUN, schedule=schedule)
    return World(app, make_deployment(app, lines=2), schedule, group, run)


def _assert_cell(response: Any, want: int | str, where: str) -> None:
    location = response.headers.get("Location", "")
    if want == LOGIN:
        assert response.status_code == 302 and "login" in location, (
            f"{where}: expected a sign-in redirect, got {response.status_code} {location}"
        )
        return
    assert response.status_code == want, (
        f"{where}: expected {want}, got {response.status_code}: {response.content[:300]!r}"
    )
    if want == 302:
        assert "login" not in location, f"{where}: sent to sign in instead of {want}"


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_each_role_gets_the_answer_its_permissions_allow(
    case: Case, role: str, world: World, django_user_model: Any
) -> None:
    user = _user(django_user_model, role)
    client = Client()
    if user is not None:
        client.force_login(user)
    url = reverse(case.route, kwargs=case.kwargs(world))
    data = case.data(world) if case.data is not None else None
    if case.api:
        body = json.dumps(data if data is not None else {}).encode()
        headers = case.headers(world, body)
        response = client.generic(
            case.method, url, body, content_type="application/json", headers=headers
        )
    elif case.method == "GET":
        response = client.get(url, data or {})
    else:
        assert case.method == "POST", "pages take form posts"
        response = client.post(url, data or {})
    _assert_cell(response, case.expected[role], f"{role} {case.method} {url}")


@database_sync_to_async
def _session_cookie(django_user_model: Any, role: str) -> str | None:
    user = _user(django_user_model, role)
    if user is None:
        return None
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", sorted(SOCKETS))
async def test_each_role_may_follow_only_the_live_logs_it_may_see(
    route: str, role: str, world: World, django_user_model: Any
) -> None:
    path, expected = SOCKETS[route]
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    cookie = await _session_cookie(django_user_model, role)
    if cookie is not None:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(application, path(world), headers=headers)
    connected, code = await communicator.connect()
    want = expected[role]
    if want is True:
        assert connected, f"{role} was refused {route} with {code}"
        await communicator.disconnect()
    else:
        assert not connected and code == want, f"{role} on {route}: {connected}, {code}"
