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
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from dashboard.api.hooks import signature
from dashboard.asgi import application
from dashboard.notifications.models import Delivery, Subscription
from dashboard.routing import websocket_urlpatterns
from dashboard.tokens.models import ApiToken
from deployer import roles
from deployer.livelog import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from deployer.models import App, Deployment, RegistryCredential, RoleBinding
from scaling.models import NodeGroup, NodeGroupAction, ScalingRun, Schedule

# The namespace of the matrix's app, and another one.
NS = "team-a"
OTHER = "team-b"
EVERY = "*"
# "Somewhere": an action the user may do in at least one namespace (lists, new-object forms).
ANY = "any"

ANONYMOUS = "anonymous"
NOBODY = "no-role"
SUPERUSER = "superuser"
# Each role bound on the route's namespace, one bound only on another namespace, each on *.
BOUND: dict[str, tuple[str, str]] = {
    **{f"{role}@{NS}": (role, NS) for role in roles.ROLES},
    f"admin@{OTHER}": ("admin", OTHER),
    **{f"{role}@*": (role, EVERY) for role in roles.ROLES},
}
ROLES = (ANONYMOUS, NOBODY, *BOUND, SUPERUSER)

# A cell that expects a redirect to a sign-in page (the dashboard's or the admin's).
LOGIN = "login"
# Anonymous API callers: DRF answers 403 (session auth first, so no WWW-Authenticate).
API_ANON = 403

Expected = dict[str, int | str]
Rule = Callable[[str], int | str]


def may(principal: str, action: str, where: str) -> bool:
    """What the role table (deployer.roles.ACTIONS) says ``principal`` may do ``where``."""
    if principal in (ANONYMOUS, NOBODY):
        return False
    if principal == SUPERUSER:
        return True
    role, bound_on = BOUND[principal]
    least = roles.RANK[roles.ACTIONS[action][0]]
    if roles.RANK[role] < least:
        return False
    return bound_on == EVERY or where in (ANY, bound_on)


def need(
    action: str,
    where: str,
    yes: int,
    *,
    detail: bool = False,
    anonymous: int | str = LOGIN,
) -> Rule:
    """``yes`` where the table allows ``action``; else 403, or 404 for a ``detail`` the user
    cannot even see (names do not leak)."""

    def rule(principal: str) -> int | str:
        if principal == ANONYMOUS:
            return anonymous
        if may(principal, action, where):
            return yes
        if detail and not may(principal, "view", where):
            return 404
        return 403

    return rule


def api_need(action: str, where: str, yes: int, *, detail: bool = False) -> Rule:
    return need(action, where, yes, detail=detail, anonymous=API_ANON)


def signed_in(yes: int, *, anonymous: int | str = LOGIN) -> Rule:
    """``yes`` for every signed-in user (their own Tokens page, the API's root)."""
    return lambda principal: anonymous if principal == ANONYMOUS else yes


def everyone(status: int | str) -> Rule:
    """The same answer for every role, signed in or not (pages open to all, webhooks)."""
    return lambda principal: status


def binding_rule(yes: int, anonymous: int | str) -> Rule:
    """A binding on NS: its admins remove it; an admin elsewhere does not see it (404)."""

    def rule(principal: str) -> int | str:
        if principal == ANONYMOUS:
            return anonymous
        if may(principal, "roles", NS):
            return yes
        return 404 if may(principal, "roles", ANY) else 403

    return rule


def grant_rule(where: str) -> Rule:
    """Binding a role on ``where`` from the Access page: an admin elsewhere gets the form back
    with the refusal (400); a non-admin is refused the page (403)."""

    def rule(principal: str) -> int | str:
        if principal == ANONYMOUS:
            return LOGIN
        if may(principal, "roles", where):
            return 302
        return 400 if may(principal, "roles", ANY) else 403

    return rule


def others_token_rule(yes: int, *, page: bool) -> Rule:
    """Another user's token: an admin on * only; the API hides it (404), the page refuses."""

    def rule(principal: str) -> int | str:
        if principal == ANONYMOUS:
            return LOGIN if page else API_ANON
        if may(principal, "tokens", EVERY):
            return yes
        return 403 if page else 404

    return rule


@dataclass
class World:
    """The objects the cases act on, created afresh for every cell."""

    app: App
    deployment: Deployment
    schedule: Schedule
    group: NodeGroup
    run: ScalingRun
    someone: User


@dataclass(frozen=True)
class Case:
    """One request against one route, and what each role gets back."""

    route: str
    method: str
    rule: Rule
    kwargs: Callable[[World], dict[str, Any]] = lambda world: {}
    data: Callable[[World], Any] | None = None
    label: str = ""
    api: bool = False
    headers: Callable[[World, bytes], dict[str, str]] = field(default=lambda world, body: {})

    @property
    def expected(self) -> Expected:
        """Each role's answer."""
        return {principal: self.rule(principal) for principal in ROLES}

    @property
    def id(self) -> str:
        """The parametrize id: route, method and label."""
        return f"{self.route}-{self.method}" + (f"-{self.label}" if self.label else "")


def registry_pk(world: World) -> dict[str, Any]:
    credential, _ = RegistryCredential.objects.get_or_create(host="registry.example.com")
    return {"pk": credential.pk}


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


def binding_pk(world: World) -> dict[str, Any]:
    """A binding of another user on NS."""
    binding, _ = RoleBinding.objects.get_or_create(role="viewer", user=world.someone, namespace=NS)
    return {"pk": binding.pk}


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
    Case("home", "GET", need("view", ANY, 200)),
    Case("app-create", "GET", need("app", ANY, 200)),
    Case("app-create", "POST", need("app", ANY, 400), data=lambda w: {}),
    Case("app-detail", "GET", need("view", NS, 200, detail=True), app_pk),
    Case("app-edit", "GET", need("app", NS, 200, detail=True), app_pk),
    Case(
        "app-edit",
        "POST",
        need("app", NS, 400, detail=True),
        app_pk,
        lambda w: {"replicas": "-1"},
    ),
    Case("app-deploy", "POST", need("deploy", NS, 400, detail=True), app_pk, lambda w: BAD_IMAGE),
    Case(
        "app-scale",
        "POST",
        need("scale", NS, 400, detail=True),
        app_pk,
        lambda w: {"replicas": "-1"},
    ),
    Case("app-swap-back", "POST", need("swap_back", NS, 302, detail=True), app_pk),
    Case("app-undeploy", "GET", need("undeploy", NS, 200, detail=True), app_pk),
    Case(
        "app-undeploy",
        "POST",
        need("undeploy", NS, 400, detail=True),
        app_pk,
        lambda w: {"confirm": "no"},
    ),
    Case("app-history", "GET", need("view", NS, 200, detail=True), app_pk),
    # The matrix has no cluster: a user who may see the app learns that it did not answer.
    Case(
        "pod-logs",
        "GET",
        need("view", NS, 503, detail=True),
        lambda w: {"pk": w.app.pk, "pod": "hello-v1-abcde"},
    ),
    Case("deployment-list", "GET", need("view", ANY, 200)),
    Case("deployment-detail", "GET", need("view", NS, 200, detail=True), deployment_pk),
    Case("deployment-abort", "POST", need("abort", NS, 302, detail=True), deployment_pk),
    Case("deployment-promote", "POST", need("promote", NS, 302, detail=True), deployment_pk),
    Case("deployment-reject", "POST", need("reject", NS, 302, detail=True), deployment_pk),
    # The fleet serves every namespace: a role on *.
    Case("load-balancer", "GET", need("view", EVERY, 200)),
    # Notifications: the list shows the visible namespaces' subscriptions; the matrix's
    # subscription is for every app, so it is about *.
    Case("notifications", "GET", need("view", ANY, 200)),
    Case("subscription-create", "GET", need("notifications", ANY, 200)),
    Case("subscription-create", "POST", need("notifications", ANY, 400), data=lambda w: {}),
    Case(
        "subscription-edit", "GET", need("notifications", EVERY, 200, detail=True), subscription_pk
    ),
    Case(
        "subscription-edit",
        "POST",
        need("notifications", EVERY, 400, detail=True),
        subscription_pk,
        lambda w: {"name": ""},
    ),
    Case(
        "subscription-delete",
        "POST",
        need("notifications", EVERY, 302, detail=True),
        subscription_pk,
    ),
    # Scaling acts on the cluster as a whole: roles on *.
    Case("scaling:overview", "GET", need("view", EVERY, 200)),
    Case("scaling:schedule-create", "GET", need("schedule", EVERY, 200)),
    Case("scaling:schedule-create", "POST", need("schedule", EVERY, 400), data=lambda w: {}),
    Case(
        "scaling:schedule-create",
        "POST",
        need("schedule", EVERY, 302),
        data=lambda w: schedule_form(w, with_app=False),
        label="node-groups-only",
    ),
    Case(
        "scaling:schedule-create",
        "POST",
        # Scaling an app from a schedule is the deployer's scale on *: an operator on * has it.
        need("schedule", EVERY, 302),
        data=lambda w: schedule_form(w, with_app=True),
        label="scaling-an-app",
    ),
    Case("scaling:schedule-preview", "GET", need("view", EVERY, 200)),
    Case("scaling:schedule-edit", "GET", need("view", EVERY, 200), schedule_pk),
    Case("scaling:schedule-edit", "POST", need("schedule", EVERY, 400), schedule_pk, lambda w: {}),
    Case("scaling:schedule-delete", "POST", need("schedule", EVERY, 302), schedule_pk),
    Case("scaling:schedule-dry-run", "POST", need("schedule", EVERY, 302), schedule_pk),
    Case("scaling:cluster", "GET", need("view", EVERY, 200)),
    Case("scaling:node-group-create", "GET", need("node", EVERY, 200)),
    Case("scaling:node-group-create", "POST", need("node", EVERY, 400), data=lambda w: {}),
    Case("scaling:node-group-edit", "GET", need("node", EVERY, 200), group_pk),
    Case(
        "scaling:node-group-capacity",
        "POST",
        need("node", EVERY, 302),
        group_pk,
        lambda w: {"desired": "99"},
    ),
    Case("scaling:node-group-delete", "POST", need("node", EVERY, 302), group_pk),
    # Scaling one app is the app page's Scale: a deployer in its namespace.
    Case(
        "scaling:app-scale",
        "POST",
        need("scale", NS, 302, detail=True),
        app_pk,
        lambda w: {"replicas": "-1"},
    ),
    Case(
        "scaling:node-action",
        "POST",
        need("node", EVERY, 302),
        lambda w: {"name": "node-1", "action": "bogus"},
    ),
    Case("scaling:run-list", "GET", need("view", EVERY, 200)),
    Case("scaling:run-detail", "GET", need("view", EVERY, 200), run_pk),
    Case("scaling:run-logs", "GET", need("view", EVERY, 200), run_pk),
    # Everyone signed in has a Tokens page of their own; revoking another's is an admin's on *.
    Case("tokens", "GET", signed_in(200)),
    Case("tokens", "POST", signed_in(400), data=lambda w: {}),
    Case("token-revoke", "POST", others_token_rule(302, page=True), others_token_pk),
    # Registry logins serve every namespace: admins on * keep them; tags for app editors.
    Case("registries", "GET", need("app", EVERY, 200)),
    Case("registries", "POST", need("app", EVERY, 400), data=lambda w: {}),
    Case("registry-delete", "POST", need("app", EVERY, 302), registry_pk),
    Case("registry-tags", "GET", need("app", ANY, 400)),
    # Access: the admins of a namespace manage its bindings; of * every binding.
    Case("access", "GET", need("roles", ANY, 200)),
    Case("access", "POST", need("roles", ANY, 400), data=lambda w: {"role": "nope"}),
    Case(
        "access",
        "POST",
        grant_rule(NS),
        data=lambda w: {"role": "viewer", "user": "someone", "namespace": NS},
        label="bind-on-the-namespace",
    ),
    Case(
        "access",
        "POST",
        grant_rule(EVERY),
        data=lambda w: {"role": "viewer", "user": "someone", "namespace": EVERY},
        label="bind-on-every-namespace",
    ),
    Case("binding-delete", "POST", binding_rule(302, LOGIN), binding_pk),
    # The audit trail: admins read their namespaces' events, admins on * (and staff) all.
    Case("audit", "GET", need("roles", ANY, 200)),
    Case("audit", "GET", need("roles", ANY, 200), data=lambda w: {"export": "csv"}, label="csv"),
    Case("login", "GET", everyone(200)),
    Case("logout", "POST", everyone(LOGIN)),
    # Single sign-on is off without GREENLIGHT_OIDC_ISSUER (tests/dashboard/test_sso.py).
    Case("oidc-authenticate", "GET", everyone(404)),
    Case("oidc-callback", "GET", everyone(404)),
    # The admin's sign-in page; a staff user is sent on to the admin site.
    Case("admin-login", "GET", lambda principal: 302 if principal == SUPERUSER else 200),
    # Django's admin sends signed-in users without staff status to its own sign-in page.
    Case("admin:index", "GET", lambda principal: 200 if principal == SUPERUSER else LOGIN),
]


def api_case(route: str, method: str, rule: Rule, *args: Any, **kwargs: Any) -> Case:
    return Case(route, method, rule, *args, api=True, **kwargs)


API = [
    api_case("api:api-root", "GET", signed_in(200, anonymous=API_ANON)),
    api_case("api:app-list", "GET", api_need("view", ANY, 200)),
    # A new app in NS (the body is invalid otherwise): NS's admins get the 400.
    api_case("api:app-list", "POST", api_need("app", NS, 400), data=lambda w: {"namespace": NS}),
    api_case("api:app-detail", "GET", api_need("view", NS, 200, detail=True), app_pk),
    api_case("api:app-detail", "PUT", api_need("app", NS, 400, detail=True), app_pk, lambda w: {}),
    api_case(
        "api:app-detail",
        "PATCH",
        api_need("app", NS, 400, detail=True),
        app_pk,
        lambda w: {"replicas": -1},
    ),
    api_case("api:app-detail", "DELETE", api_need("app", NS, 204, detail=True), app_pk),
    api_case(
        "api:app-deploy",
        "POST",
        api_need("deploy", NS, 400, detail=True),
        app_pk,
        lambda w: BAD_IMAGE,
    ),
    api_case(
        "api:app-scale",
        "POST",
        api_need("scale", NS, 400, detail=True),
        app_pk,
        lambda w: {"replicas": -1},
    ),
    # No warm previous version: the permission check passes, then a 409.
    api_case("api:app-swap-back", "POST", api_need("swap_back", NS, 409, detail=True), app_pk),
    api_case("api:app-undeploy", "POST", api_need("undeploy", NS, 202, detail=True), app_pk),
    api_case("api:deployment-list", "GET", api_need("view", ANY, 200)),
    api_case("api:deployment-detail", "GET", api_need("view", NS, 200, detail=True), deployment_pk),
    api_case("api:deployment-logs", "GET", api_need("view", NS, 200, detail=True), deployment_pk),
    api_case(
        "api:deployment-abort", "POST", api_need("abort", NS, 409, detail=True), deployment_pk
    ),
    # A finished deployment awaits nothing: an allowed promote or reject is a 409.
    api_case(
        "api:deployment-promote", "POST", api_need("promote", NS, 409, detail=True), deployment_pk
    ),
    api_case(
        "api:deployment-reject", "POST", api_need("reject", NS, 409, detail=True), deployment_pk
    ),
    # Read-only, like the Load balancer page; no etcd runs here, so an allowed read is a 503
    # that says why (tests/dashboard/test_api_load_balancers.py reads a live fleet).
    api_case("api:load-balancer-list", "GET", api_need("view", EVERY, 503)),
    api_case("api:subscription-list", "GET", api_need("view", ANY, 200)),
    # No app: a subscription for every app, which is about *.
    api_case(
        "api:subscription-list", "POST", api_need("notifications", EVERY, 400), data=lambda w: {}
    ),
    api_case(
        "api:subscription-detail",
        "GET",
        api_need("view", EVERY, 200, detail=True),
        subscription_pk,
    ),
    api_case(
        "api:subscription-detail",
        "PUT",
        api_need("notifications", EVERY, 400, detail=True),
        subscription_pk,
        lambda w: {},
    ),
    api_case(
        "api:subscription-detail",
        "PATCH",
        api_need("notifications", EVERY, 400, detail=True),
        subscription_pk,
        lambda w: {"events": ["nope"]},
    ),
    api_case(
        "api:subscription-detail",
        "DELETE",
        api_need("notifications", EVERY, 204, detail=True),
        subscription_pk,
    ),
    api_case("api:delivery-list", "GET", api_need("view", ANY, 200)),
    api_case("api:delivery-detail", "GET", api_need("view", EVERY, 200, detail=True), delivery_pk),
    api_case("scaling-api:api-root", "GET", signed_in(200, anonymous=API_ANON)),
    api_case("scaling-api:run-list", "GET", api_need("view", EVERY, 200)),
    api_case("scaling-api:run-detail", "GET", api_need("view", EVERY, 200), run_pk),
    api_case("scaling-api:run-logs", "GET", api_need("view", EVERY, 200), run_pk),
    api_case("scaling-api:schedule-list", "GET", api_need("view", EVERY, 200)),
    api_case(
        "scaling-api:schedule-list", "POST", api_need("schedule", EVERY, 400), data=lambda w: {}
    ),
    api_case(
        "scaling-api:schedule-list",
        "POST",
        api_need("schedule", EVERY, 201),
        data=lambda w: schedule_body(w, with_app=False),
        label="node-groups-only",
    ),
    api_case(
        "scaling-api:schedule-list",
        "POST",
        api_need("schedule", EVERY, 201),
        data=lambda w: schedule_body(w, with_app=True),
        label="scaling-an-app",
    ),
    api_case("scaling-api:schedule-detail", "GET", api_need("view", EVERY, 200), schedule_pk),
    api_case(
        "scaling-api:schedule-detail",
        "PUT",
        api_need("schedule", EVERY, 400),
        schedule_pk,
        lambda w: {},
    ),
    api_case(
        "scaling-api:schedule-detail",
        "PATCH",
        api_need("schedule", EVERY, 400),
        schedule_pk,
        lambda w: {"timezone": "Mars/Olympus_Mons"},
    ),
    api_case(
        "scaling-api:schedule-detail", "DELETE", api_need("schedule", EVERY, 204), schedule_pk
    ),
    api_case("scaling-api:schedule-dry-run", "POST", api_need("schedule", EVERY, 202), schedule_pk),
    api_case("scaling-api:node-group-list", "GET", api_need("view", EVERY, 200)),
    api_case(
        "scaling-api:node-group-list", "POST", api_need("node", EVERY, 400), data=lambda w: {}
    ),
    api_case("scaling-api:node-group-detail", "GET", api_need("view", EVERY, 200), group_pk),
    api_case(
        "scaling-api:node-group-detail", "PUT", api_need("node", EVERY, 400), group_pk, lambda w: {}
    ),
    api_case(
        "scaling-api:node-group-detail",
        "PATCH",
        api_need("node", EVERY, 400),
        group_pk,
        lambda w: {"min_size": 3, "max_size": 2},
    ),
    api_case("scaling-api:node-group-detail", "DELETE", api_need("node", EVERY, 204), group_pk),
    api_case(
        "scaling-api:node-group-capacity",
        "POST",
        api_need("node", EVERY, 400),
        group_pk,
        lambda w: {"desired": 99},
    ),
    # Scaling an app is /api/apps/{id}/scale/ by another route: a deployer in its namespace.
    api_case(
        "scaling-api:app-scale",
        "POST",
        api_need("scale", NS, 400, detail=True),
        app_pk,
        lambda w: {"replicas": -1},
    ),
    api_case(
        "scaling-api:node-action",
        "POST",
        api_need("node", EVERY, 400),
        lambda w: {"name": "Not_A_Node!", "verb": "cordon"},
        lambda w: {},
    ),
    api_case("api:token-list", "GET", signed_in(200, anonymous=API_ANON)),
    api_case("api:token-list", "POST", signed_in(400, anonymous=API_ANON), data=lambda w: {}),
    # Another user's token: out of sight (404) for all but an admin on *.
    api_case("api:token-detail", "GET", others_token_rule(200, page=False), others_token_pk),
    api_case("api:token-detail", "DELETE", others_token_rule(204, page=False), others_token_pk),
    api_case("api:role-binding-list", "GET", api_need("roles", ANY, 200)),
    api_case("api:role-binding-list", "POST", api_need("roles", ANY, 400), data=lambda w: {}),
    api_case(
        "api:role-binding-list",
        "POST",
        api_need("roles", NS, 201),
        data=lambda w: {"role": "viewer", "user": "someone", "namespace": NS},
        label="bind-on-the-namespace",
    ),
    api_case(
        "api:role-binding-list",
        "POST",
        api_need("roles", EVERY, 201),
        data=lambda w: {"role": "viewer", "group": "everyone", "namespace": EVERY},
        label="bind-on-every-namespace",
    ),
    api_case("api:role-binding-detail", "DELETE", binding_rule(204, API_ANON), binding_pk),
    api_case("api:audit-list", "GET", api_need("roles", ANY, 200)),
    # Read-only: no write method exists for anyone.
    api_case("api:audit-list", "POST", signed_in(405, anonymous=API_ANON), data=lambda w: {}),
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
def _socket_rule(where: str) -> Callable[[str], bool | int]:
    def rule(principal: str) -> bool | int:
        if principal == ANONYMOUS:
            return CLOSE_UNAUTHENTICATED
        return may(principal, "view", where) or CLOSE_FORBIDDEN

    return rule


SOCKETS: dict[str, tuple[Callable[[World], str], Callable[[str], bool | int]]] = {
    "ws/deployments/<int:pk>/": (lambda w: f"/ws/deployments/{w.deployment.pk}/", _socket_rule(NS)),
    # Without a cluster the socket opens, says the cluster did not answer, and closes.
    "ws/apps/<int:pk>/pods/<str:pod>/logs/": (
        lambda w: f"/ws/apps/{w.app.pk}/pods/hello-v1-abcde/logs/",
        _socket_rule(NS),
    ),
    # Scaling runs act on the cluster as a whole: a role on *.
    "ws/scaling/runs/<int:pk>/": (lambda w: f"/ws/scaling/runs/{w.run.pk}/", _socket_rule(EVERY)),
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


def _user(django_user_model: Any, principal: str) -> Any:
    """The user of a principal: none, a superuser, or a user with one binding."""
    if principal == ANONYMOUS:
        return None
    if principal == SUPERUSER:
        return django_user_model.objects.create_superuser("super", password="pw-super-user")
    user = django_user_model.objects.create_user("principal", password="pw-principal")
    if principal in BOUND:
        role, namespace = BOUND[principal]
        RoleBinding.objects.create(role=role, user=user, namespace=namespace)
    return user


@pytest.fixture(autouse=True)
def _metrics_on(settings: Any) -> None:
    """GET /metrics answers for ``METRICS_TOKEN`` (it is off without a token); apps may run
    in the matrix's namespaces."""
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.ALLOWED_NAMESPACES = ["default", NS, OTHER]


@pytest.fixture
def world(make_app: Callable[..., App], make_deployment: Callable[..., Deployment]) -> World:
    """An undeployed app with a finished deploy, a schedule sizing a node group, a run."""
    app = make_app(name="hello", namespace=NS, frontend="hello.localhost", image="demo/hello:1")
    group = NodeGroup.objects.create(name="workers", min_size=0, max_size=4, desired=2)
    schedule = Schedule.objects.create(name="nights", kind=Schedule.Kind.CRON, cron="0 21 * * *")
    NodeGroupAction.objects.create(schedule=schedule, node_group=group, desired=1)
    run = ScalingRun.objects.create(kind=ScalingRun.Kind.DRY_RUN, schedule=schedule)
    # Whom the Access cases bind roles to.
    someone = User.objects.create_user("someone")
    Group.objects.create(name="everyone")
    return World(app, make_deployment(app, lines=2), schedule, group, run, someone)


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
    _assert_cell(response, case.rule(role), f"{role} {case.method} {url}")


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
    path, rule = SOCKETS[route]
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    cookie = await _session_cookie(django_user_model, role)
    if cookie is not None:
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(application, path(world), headers=headers)
    # Generous: under a loaded machine a consumer may take more than the default second.
    connected, code = await communicator.connect(timeout=10)
    want = rule(role)
    if want is True:
        assert connected, f"{role} was refused {route} with {code}"
        await communicator.disconnect()
    else:
        assert not connected and code == want, f"{role} on {route}: {connected}, {code}"
