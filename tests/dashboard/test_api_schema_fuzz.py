"""Schemathesis against /api/schema/: every operation, on real objects, answers as its schema says.

The schema is loaded from the running Django app (WSGI, in-process, no network), and
each operation gets valid and invalid requests drawn from it, with its path parameters
bound to objects that exist, so that none stops at 404. Every answer must be below 500
and conform to the schema: a documented status code, content type and body.

Draws are derandomized, so CI sends the same cases every run;
``GREENLIGHT_FUZZ_EXAMPLES=N`` asks for a hunt with N fresh random cases per operation
and mode. Each case runs in a savepoint that is rolled back, so every case sees the
same objects (a DELETE does not leave the next case a 404); bodies known to be valid
are sent first and must succeed, and generic hook deliveries are signed as a sender
signs them, so that the fuzzer gets past the signature. Deploys and scaling runs
are only recorded: their tasks are sent after commit, and the test's transaction never
commits; the Celery send is patched all the same, and asserted unused.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import product
from typing import Any
from unittest import mock

import pytest
import schemathesis
from celery.app.task import Task
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dashboard.api.hooks import signature
from dashboard.notifications.models import Delivery, Subscription
from dashboard.tokens.models import ApiToken
from deployer.models import App, Deployment, DeploymentLog, RoleBinding
from scaling.models import (
    AppAction,
    NodeGroup,
    NodeGroupAction,
    ScalingRun,
    ScalingRunLog,
    Schedule,
)

HUNT = int(os.environ.get("GREENLIGHT_FUZZ_EXAMPLES", "0"))
EXAMPLES = HUNT or 25  # per operation and generation mode
MIN_CASES = 1000
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

# Django's own test client does this around each request: the handler's signals would
# otherwise close the test's connection, and with it the transaction holding the objects.
request_started.disconnect(close_old_connections)
request_finished.disconnect(close_old_connections)
try:
    SCHEMA = schemathesis.openapi.from_wsgi("/api/schema/?format=json", WSGIHandler())
finally:
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@dataclass
class World:
    """Objects every path parameter can name, several of each kind."""

    apps: list[App]
    deployments: list[Deployment]
    schedules: list[Schedule]
    groups: list[NodeGroup]
    runs: list[ScalingRun]
    token: str
    subscriptions: list[Subscription] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    api_tokens: list[ApiToken] = field(default_factory=list)
    role_bindings: list[RoleBinding] = field(default_factory=list)


@pytest.fixture
def world(admin: Any, make_app: Callable[..., App], make_deployment: Any, fleet: Any) -> World:
    """Apps with deployments and logs, schedules sizing apps and node groups, runs with logs,
    and two load balancers registered in an etcd of the test's own (``fleet``)."""
    apps = [make_app(), make_app(replicas=1), make_app(keep_old_seconds=60)]
    deployments = [
        make_deployment(apps[0], version=1, lines=3),
        make_deployment(
            apps[1], status=Deployment.Status.QUEUED, started_at=None, finished_at=None
        ),
        make_deployment(apps[2], status=Deployment.Status.RUNNING, finished_at=None, lines=1),
    ]
    groups = [
        NodeGroup.objects.create(name="workers", min_size=0, max_size=5, desired=2),
        NodeGroup.objects.create(name="batch", min_size=1, max_size=3, desired=1),
    ]
    nights = Schedule.objects.create(name="nights", cron="0 21 * * 1-5", timezone="Europe/Berlin")
    AppAction.objects.create(schedule=nights, app=apps[0], mode=AppAction.Mode.PERCENT, value=50)
    NodeGroupAction.objects.create(schedule=nights, node_group=groups[0], desired=1)
    mornings = Schedule.objects.create(
        name="mornings",
        kind=Schedule.Kind.WEEKLY,
        days=[0, 1, 2, 3, 4],
        at_time="07:30",
        until_time="19:00",
    )
    NodeGroupAction.objects.create(schedule=mornings, node_group=groups[1], desired=3)
    runs = [
        ScalingRun.objects.create(kind=ScalingRun.Kind.DRY_RUN, schedule=nights),
        ScalingRun.objects.create(kind=ScalingRun.Kind.CORDON, params={"node": "node-1"}),
    ]
    ScalingRunLog.objects.bulk_create(
        ScalingRunLog(run=runs[0], seq=seq, message=f"line {seq}") for seq in (1, 2, 3)
    )
    assert DeploymentLog.objects.exists()
    token = Token.objects.create(user=admin).key
    subscriptions = [
        Subscription.objects.create(
            name="ops", events=["failed"], channel="slack", target="https://hooks.example.com/x"
        ),
        Subscription.objects.create(
            name="ci",
            app=apps[0],
            events=["succeeded"],
            channel="webhook",
            target="https://ci.example.com/hook",
            secret="fuzz-secret",
        ),
    ]
    deliveries = [Delivery.objects.create(subscription=subscriptions[0], event="failed")]
    api_tokens = [ApiToken.issue(admin, name, ["read"])[0] for name in ("ci", "nightly")]
    role_bindings = [
        RoleBinding.objects.create(role="viewer", user=admin, namespace="default"),
        RoleBinding.objects.create(role="deployer", user=admin, namespace="team-a"),
    ]
    return World(
        apps,
        deployments,
        [nights, mornings],
        groups,
        runs,
        token,
        subscriptions,
        deliveries,
        api_tokens,
        role_bindings,
    )


def path_values(path: str, world: World) -> dict[str, list[Any]]:
    """Values for the path parameters of ``path``, each naming an object that exists."""
    apps = [app.pk for app in world.apps]
    by_prefix: dict[str, dict[str, list[Any]]] = {
        "/api/apps/{id}/": {"id": apps},
        "/api/deployments/{id}/": {"id": [row.pk for row in world.deployments]},
        "/api/hooks/dockerhub/{secret}/": {"secret": [app.webhook_secret for app in world.apps]},
        "/api/hooks/generic/{app_id}/": {"app_id": apps},
        "/api/scaling/apps/{id}/": {"id": apps},
        "/api/notifications/subscriptions/{id}/": {"id": [s.pk for s in world.subscriptions]},
        "/api/notifications/deliveries/{id}/": {"id": [d.pk for d in world.deliveries]},
        "/api/tokens/{id}/": {"id": [token.pk for token in world.api_tokens]},
        "/api/role-bindings/{id}/": {"id": [row.pk for row in world.role_bindings]},
        "/api/scaling/runs/{id}/": {"id": [row.pk for row in world.runs]},
        "/api/scaling/schedules/{id}/": {"id": [row.pk for row in world.schedules]},
        "/api/scaling/node-groups/{id}/": {"id": [row.pk for row in world.groups]},
        "/api/scaling/nodes/{name}/{verb}/": {
            "name": ["node-1", "node-2"],
            "verb": ["cordon", "uncordon", "drain"],
        },
    }
    for prefix, values in by_prefix.items():
        if path.startswith(prefix):
            return values
    assert "{" not in path, f"bind the path parameters of {path} to real objects here"
    return {}


def valid_bodies(world: World) -> dict[str, list[dict[str, Any]]]:
    """Bodies that succeed, per operation: the fuzzer sends them first, on the first objects."""
    app, group = world.apps[0], world.groups[0]
    schedule = {
        "name": "weeknights",
        "kind": "weekly",
        "days": [0, 1, 2, 3, 4],
        "at_time": "21:00",
        "until_time": "06:30",
        "timezone": "Europe/Amsterdam",
        "app_actions": [{"app": app.pk, "mode": "percent", "value": 50, "floor": 1}],
        "node_group_actions": [{"node_group": group.pk, "desired": 1}],
    }
    node_group = {"name": "spot", "provider": "local", "min_size": 0, "max_size": 4, "desired": 1}
    return {
        "POST /api/apps/": [
            {"name": "shop", "image": "demo/hello:1", "replicas": 2, "frontend": "shop.localhost"}
        ],
        "PATCH /api/apps/{id}/": [{"replicas": 3, "env": {"MODE": "fuzz"}}],
        "POST /api/apps/{id}/deploy/": [{"image": "demo/hello:2"}, {}],
        "POST /api/apps/{id}/scale/": [{"replicas": 3}],
        "POST /api/scaling/apps/{id}/scale/": [{"replicas": 3, "baseline": True}],
        "POST /api/scaling/node-groups/{id}/capacity/": [{"desired": 3}],
        "POST /api/scaling/nodes/{name}/{verb}/": [{"force": False, "deadline": 60}],
        "POST /api/scaling/schedules/": [
            schedule,
            {**schedule, "kind": "cron", "cron": "0 7 * * 1-5", "app_actions": []},
        ],
        "PUT /api/scaling/schedules/{id}/": [schedule],
        "PATCH /api/scaling/schedules/{id}/": [
            {"enabled": False},
            {"node_group_actions": [{"node_group": group.pk, "desired": 4}]},
        ],
        "POST /api/scaling/node-groups/": [node_group],
        "PUT /api/scaling/node-groups/{id}/": [{**node_group, "name": "workers"}],
        "PATCH /api/scaling/node-groups/{id}/": [{"max_size": 8, "desired": 3}],
        "POST /api/hooks/dockerhub/{secret}/": [
            {"push_data": {"tag": "2"}, "repository": {"repo_name": "demo/hello"}}
        ],
        "POST /api/hooks/generic/{app_id}/": [{"tag": "3"}, {"image": "demo/hello:4"}],
        "POST /api/notifications/subscriptions/": [
            {
                "name": "team",
                "events": ["failed", "rolled_back"],
                "channel": "email",
                "target": "ops@example.com",
            },
            {
                "name": "hook",
                "app": app.pk,
                "events": ["started"],
                "channel": "webhook",
                "target": "https://ci.example.com/x",
            },
        ],
        "POST /api/tokens/": [
            {"name": "deploys", "scopes": ["read", "deploy"]},
            {
                "name": "team-a",
                "scopes": ["read"],
                "namespaces": ["team-a"],
                "expires_at": "2099-01-01T00:00:00Z",
            },
        ],
        "PATCH /api/notifications/subscriptions/{id}/": [
            {"enabled": False},
            {"events": ["queued"], "rotate_secret": True},
        ],
    }


def signed_delivery(case: Any, world: World) -> dict[str, Any]:
    """A generic hook case's JSON body, signed with its app's secret as a sender would."""
    if not case.path.startswith("/api/hooks/generic/") or case.media_type != "application/json":
        return {}
    app = next(app for app in world.apps if app.pk == case.path_parameters["app_id"])
    try:
        body = json.dumps(case.body).encode()
    except (TypeError, ValueError):
        return {}  # not JSON (bytes drawn for a negative case): sent unsigned
    stamp = str(int(time.time()))
    headers = {
        "X-Greenlight-Timestamp": stamp,
        "X-Greenlight-Signature": signature(app.webhook_secret, body, stamp),
    }
    return {"headers": headers, "data": body}


def cases(operation: Any, world: World, mode: GenerationMode) -> st.SearchStrategy[Any]:
    """Cases of ``operation`` in ``mode`` whose path parameters name real objects."""
    values = path_values(operation.path, world)
    # One strategy per combination, built once: a strategy built while drawing would
    # make Hypothesis replay a case differently.
    combinations = [dict(zip(values, chosen, strict=True)) for chosen in product(*values.values())]
    return st.one_of(
        [
            operation.as_strategy(generation_mode=mode, path_parameters=chosen or None)
            for chosen in combinations
        ]
    )


def explicit_cases(operation: Any, world: World) -> list[Any]:
    """The valid bodies of ``operation``, as cases on the first object of each kind."""
    values = path_values(operation.path, world)
    first = {name: choices[0] for name, choices in values.items()}
    return [
        operation.Case(path_parameters=first, body=body, media_type="application/json")
        for body in valid_bodies(world).get(operation.label, [])
    ]


@pytest.fixture
def unsent_tasks() -> Iterator[mock.MagicMock]:
    """Celery's send, patched: nothing may reach a broker from inside the test's transaction."""
    with mock.patch.object(Task, "apply_async") as send:
        yield send


@pytest.fixture
def connection_kept() -> Iterator[None]:
    """Keep the test's database connection across requests, as Django's test client does."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@dataclass
class Tally:
    """Answers per operation and status code, and what failed."""

    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def sent(self) -> int:
        """Cases sent in all."""
        return sum(self.answers.values())

    def report(self) -> str:
        """One line per operation: how many answers of each status code."""
        lines: dict[str, list[str]] = {}
        for (label, code), count in sorted(self.answers.items()):
            lines.setdefault(label, []).append(f"{code}×{count}")
        return "\n".join(f"{label}: {' '.join(codes)}" for label, codes in lines.items())


def modes(operation: Any) -> list[GenerationMode]:
    """Valid cases always; invalid ones where there is something to break besides the path."""
    if len(operation.body) or len(operation.query):
        return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    return [GenerationMode.POSITIVE]


def run_operation(operation: Any, world: World, mode: GenerationMode, tally: Tally) -> None:
    """Send ``operation``'s cases and check each answer; failures are recorded in ``tally``."""
    headers = {"Authorization": f"Token {world.token}"}
    seen: set[str] = set()

    @settings(
        max_examples=EXAMPLES,
        derandomize=not HUNT,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=cases(operation, world, mode))
    def check(case: Any) -> None:
        send(case)

    def send(case: Any, *, must_succeed: bool = False) -> None:
        with transaction.atomic():
            try:
                signed = signed_delivery(case, world)
                sent_headers = {**headers, **signed.pop("headers", {})}
                response = case.call(headers=sent_headers, **signed)
            finally:
                transaction.set_rollback(True)
        tally.answers[(operation.label, response.status_code)] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=sent_headers)
        except (AssertionError, FailureGroup) as exc:
            message = f"{operation.label} ({mode.value}): {exc}"
            key = message.splitlines()[0] + str(response.status_code)
            if key not in seen:
                seen.add(key)
                tally.failures.append(message[:3000])
        if must_succeed and response.status_code >= 300:
            tally.failures.append(
                f"{operation.label} refused a valid body {case.body!r}: "
                f"{response.status_code} {response.text[:500]}"
            )

    try:
        if mode == GenerationMode.POSITIVE:
            for case in explicit_cases(operation, world):
                send(case, must_succeed=True)
        check()
    except Exception as exc:  # e.g. a strategy that cannot draw: report, keep going
        tally.failures.append(f"{operation.label} ({mode.value}): {exc!r}"[:3000])


@pytest.mark.timeout(0 if HUNT else 300)  # a hunt takes as long as it was asked to
def test_every_operation_answers_as_its_schema_says(
    world: World, unsent_tasks: mock.MagicMock, connection_kept: None, caplog: Any
) -> None:
    caplog.set_level(logging.ERROR, logger="django.request")  # thousands of 4xx lines
    operations = [result.ok() for result in SCHEMA.get_all_operations()]
    assert len(operations) >= 35, [operation.label for operation in operations]
    tally = Tally()
    started = time.monotonic()
    for operation in operations:
        for mode in modes(operation):
            run_operation(operation, world, mode, tally)
    elapsed = time.monotonic() - started
    print(tally.report())
    print(f"schemathesis: {tally.sent} cases over {len(operations)} operations in {elapsed:.0f} s")
    assert not tally.failures, "\n\n".join(tally.failures)
    assert tally.sent >= MIN_CASES
    assert not unsent_tasks.called, "a task was sent before its transaction committed"
