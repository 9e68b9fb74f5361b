"""GET /metrics: the token, and each series' value after the actions it counts."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from dashboard.metrics import savings
from deployer.etcdstore import EtcdStore
from deployer.lbconfig import REVISION_PATH, render_config
from deployer.lbregistration import APPLY_BUCKETS, Identity, Registration
from deployer.models import App, Deployment
from scaling.models import NodeGroup, ScalingRun
from tests.dashboard.fleetkit import register
from tests.servers import REPO

TOKEN = "metrics-token-for-the-tests-0123456789"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def token(settings: Any) -> str:
    """The metrics endpoint turned on with ``TOKEN``; etcd out of reach unless a test sets one."""
    settings.METRICS_TOKEN = TOKEN
    settings.ETCD_ENDPOINT = "127.0.0.1:1"
    return TOKEN


def scrape(token: str = TOKEN) -> Samples:
    """Every sample of one scrape, by name and labels."""
    response = Client().get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}``, or None when the scrape has none."""
    return samples.get((name, frozenset(labels.items())))


def finish(deployment: Deployment, outcome: str) -> None:
    """Run ``deployment`` through its transitions to ``outcome``."""
    deployment.start(worker="test-worker")
    if outcome == "succeeded":
        deployment.succeed()
    elif outcome == "failed":
        deployment.fail("pods never became healthy")
    else:
        deployment.abort()


# Token handling


def test_it_is_off_and_says_how_to_turn_it_on_without_a_token(settings: Any, db: None) -> None:
    settings.METRICS_TOKEN = None
    response = Client().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404
    assert b"GREENLIGHT_METRICS_TOKEN" in response.content


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer ", f"{TOKEN}"],
)
def test_it_refuses_a_missing_or_wrong_token(token: str, header: str | None, db: None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = Client().get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"greenlight_" not in response.content


def test_it_takes_a_token_with_characters_beyond_ascii_as_a_wrong_one(token: str, db: None) -> None:
    response = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer jeton-\u00e9t\u00e9")
    assert response.status_code == 401


def test_it_serves_no_other_method(token: str, db: None) -> None:
    response = Client().post("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 405


def test_a_signed_in_user_without_the_token_is_refused(token: str, admin_client: Client) -> None:
    assert admin_client.get("/metrics").status_code == 401


# Deployments


def test_it_counts_finished_deployments_by_app_kind_and_outcome(
    token: str, app: App, make_app: Callable[..., App], make_deployment: Callable[..., Deployment]
) -> None:
    other = make_app(name="shop", namespace="team-b", frontend="shop.localhost")
    for outcome in ("succeeded", "succeeded", "failed", "aborted"):
        finish(make_deployment(app, status=Deployment.Status.QUEUED), outcome)
    finish(make_deployment(other, status=Deployment.Status.QUEUED), "failed")
    swap = make_deployment(app, status=Deployment.Status.QUEUED, kind=Deployment.Kind.SWAP_BACK)
    finish(swap, "succeeded")
    make_deployment(app, status=Deployment.Status.QUEUED)  # not finished: not counted

    samples = scrape(token)
    name = "greenlight_deployments_total"
    hello = {"app": "hello", "namespace": "default"}
    assert value(samples, name, **hello, kind="deploy", outcome="succeeded") == 2
    assert value(samples, name, **hello, kind="deploy", outcome="failed") == 1
    assert value(samples, name, **hello, kind="deploy", outcome="aborted") == 1
    assert value(samples, name, **hello, kind="swap-back", outcome="succeeded") == 1
    assert value(samples, name, app="shop", namespace="team-b", kind="deploy", outcome="failed")
    total = sum(v for (n, _), v in samples.items() if n == name)
    assert total == 6


def test_step_seconds_and_switch_seconds_are_histograms_of_finished_deployments(
    token: str, app: App, make_deployment: Callable[..., Deployment]
) -> None:
    make_deployment(
        app,
        steps={
            "prepare": {"state": "done", "seconds": 0.02},
            "health": {"state": "done", "seconds": 4.0},
            "switch": {"state": "done", "seconds": 0.03},
        },
    )
    make_deployment(
        app,
        status=Deployment.Status.FAILED,
        steps={
            "health": {"state": "failed", "seconds": 45.5},
            # A switch that failed is a step like any other, but no completed switch.
            "switch": {"state": "failed", "seconds": 12.0},
        },
    )
    make_deployment(
        app,
        status=Deployment.Status.RUNNING,
        finished_at=None,
        steps={"health": {"state": "done", "seconds": 1.0}},
    )

    samples = scrape(token)
    step = "greenlight_deployment_step_seconds"
    health = {"kind": "deploy", "step": "health"}
    assert value(samples, f"{step}_count", **health) == 2
    assert value(samples, f"{step}_sum", **health) == pytest.approx(49.5)
    assert value(samples, f"{step}_bucket", **health, le="5.0") == 1
    assert value(samples, f"{step}_bucket", **health, le="60.0") == 2
    assert value(samples, f"{step}_bucket", **health, le="+Inf") == 2
    assert value(samples, f"{step}_count", kind="deploy", step="switch") == 2
    assert value(samples, f"{step}_count", kind="deploy", step="prepare") == 1
    assert value(samples, f"{step}_count", kind="deploy", step="retire") is None

    switch = "greenlight_switch_seconds"
    assert value(samples, f"{switch}_count", kind="deploy") == 1
    assert value(samples, f"{switch}_sum", kind="deploy") == pytest.approx(0.03)
    assert value(samples, f"{switch}_bucket", kind="deploy", le="0.025") == 0
    assert value(samples, f"{switch}_bucket", kind="deploy", le="0.05") == 1


def test_queue_depth_counts_the_deployments_waiting_per_app(
    token: str, app: App, make_app: Callable[..., App], make_deployment: Callable[..., Deployment]
) -> None:
    idle = make_app(name="idle", frontend="idle.localhost")
    running = make_deployment(app, status=Deployment.Status.QUEUED, finished_at=None)
    running.start(worker="test-worker")
    for _ in range(3):
        make_deployment(app, status=Deployment.Status.QUEUED, finished_at=None)

    samples = scrape(token)
    assert (
        value(samples, "greenlight_deployment_queue_depth", app="hello", namespace="default") == 3
    )
    assert value(samples, "greenlight_deployments_running", app="hello", namespace="default") == 1
    assert (
        value(samples, "greenlight_deployment_queue_depth", app=idle.name, namespace="default") == 0
    )


# Scaling


def _run(kind: str, outcome: str, *, seconds: float = 1.0, **fields: Any) -> ScalingRun:
    """A scaling run taken through its transitions to ``outcome``, ``seconds`` after its start."""
    run = ScalingRun.objects.create(kind=kind, **fields)
    started = timezone.now() - timedelta(seconds=seconds)
    run.start(now=started)
    if outcome == "succeeded":
        run.succeed(now=started + timedelta(seconds=seconds))
    else:
        run.fail("the node did not drain in time", now=started + timedelta(seconds=seconds))
    return run


def test_it_counts_finished_scaling_runs_and_times_drains(token: str, db: None) -> None:
    _run(ScalingRun.Kind.DRAIN, "succeeded", seconds=7, params={"node": "node-1"})
    _run(ScalingRun.Kind.DRAIN, "succeeded", seconds=90, params={"node": "node-2"})
    _run(ScalingRun.Kind.DRAIN, "failed", seconds=300, params={"node": "node-3"})
    _run(ScalingRun.Kind.CORDON, "succeeded", params={"node": "node-1"})
    ScalingRun.objects.create(kind=ScalingRun.Kind.SCHEDULE)  # queued: not counted

    samples = scrape(token)
    runs = "greenlight_scaling_runs_total"
    assert value(samples, runs, kind="drain", outcome="succeeded") == 2
    assert value(samples, runs, kind="drain", outcome="failed") == 1
    assert value(samples, runs, kind="cordon", outcome="succeeded") == 1
    assert value(samples, runs, kind="schedule", outcome="succeeded") is None

    drain = "greenlight_drain_seconds"
    assert value(samples, f"{drain}_count", outcome="succeeded") == 2
    assert value(samples, f"{drain}_sum", outcome="succeeded") == pytest.approx(97, abs=0.01)
    assert value(samples, f"{drain}_bucket", outcome="succeeded", le="10.0") == 1
    assert value(samples, f"{drain}_bucket", outcome="succeeded", le="60.0") == 1
    assert value(samples, f"{drain}_bucket", outcome="succeeded", le="120.0") == 2
    assert value(samples, f"{drain}_bucket", outcome="failed", le="120.0") == 0
    assert value(samples, f"{drain}_bucket", outcome="failed", le="300.0") == 1


def test_node_groups_report_their_desired_minimum_and_maximum(token: str, db: None) -> None:
    NodeGroup.objects.create(name="workers", min_size=1, max_size=6, desired=3)
    samples = scrape(token)
    labels = {"node_group": "workers", "provider": "local"}
    assert value(samples, "greenlight_node_group_desired_nodes", **labels) == 3
    assert value(samples, "greenlight_node_group_min_nodes", **labels) == 1
    assert value(samples, "greenlight_node_group_max_nodes", **labels) == 6


def _change(key: str, before: int, after: int, outcome: str = "scaled") -> dict[str, Any]:
    """A ``ScalingRun.result`` entry as scaling.runner records a finished change."""
    return {"key": key, "name": key, "from": before, "to": after, "outcome": outcome}


def test_replica_hours_saved_integrate_a_night_window_of_a_schedule(token: str, app: App) -> None:
    group = NodeGroup.objects.create(name="workers", min_size=0, max_size=6, desired=4)
    now = timezone.now()
    night = now - timedelta(hours=10)
    key = f"app:{app.pk}"

    def finished(kind: str, at: Any, result: list[dict[str, Any]], event: str = "") -> None:
        run = ScalingRun.objects.create(kind=kind, event=event, result=result)
        run.start(now=at - timedelta(seconds=5))
        run.succeed(now=at)

    # 20:00 the app goes 4 -> 1 and the group 4 -> 2; 23:00 the app 1 -> 2; 06:00 back to 4.
    schedule = ScalingRun.Kind.SCHEDULE
    finished(schedule, night, [_change(key, 4, 1), _change(f"node_group:{group.pk}", 4, 2)])
    finished(schedule, night + timedelta(hours=3), [_change(key, 1, 2)])
    finished(
        schedule, night + timedelta(hours=10) - timedelta(hours=2), [_change(key, 2, 4)], "restore"
    )
    # A dry run and a superseded change change nothing.
    finished(ScalingRun.Kind.DRY_RUN, night + timedelta(hours=1), [_change(key, 1, 0, "dry run")])
    finished(schedule, night + timedelta(hours=2), [_change(key, 1, 0, "superseded")])

    samples = scrape(token)
    # 3 replicas saved for 3 hours, then 2 for 5 hours: 19 replica-hours.
    hours = value(
        samples, "greenlight_schedule_replica_hours_saved_total", app="hello", namespace="default"
    )
    assert hours == pytest.approx(19, abs=0.01)
    # The group still runs 2 below its 4 nodes: 2 nodes for 10 hours less the settle minute.
    nodes = value(samples, "greenlight_schedule_node_hours_saved_total", node_group="workers")
    assert nodes == pytest.approx(20 - 2 / 60, abs=0.01)


def test_a_manual_change_ends_a_scheduled_stretch_and_late_runs_never_lower_the_sum() -> None:
    start = timezone.now()
    runs = [
        (ScalingRun.Kind.SCHEDULE, "", start, [_change("app:1", 5, 2)]),
        (ScalingRun.Kind.SCALE_APP, "", start + timedelta(hours=1), [_change("app:1", 2, 3)]),
        # A schedule after the manual change starts a new stretch from 3.
        (ScalingRun.Kind.SCHEDULE, "", start + timedelta(hours=2), [_change("app:1", 3, 1)]),
    ]
    at_3h = savings.integrate(runs, start + timedelta(hours=3))
    assert at_3h == {"app:1": pytest.approx(3 + 0 + 2)}
    # A run finished after the horizon is left for a later scrape.
    later = [
        *runs,
        (ScalingRun.Kind.SCALE_APP, "", start + timedelta(hours=4), [_change("app:1", 1, 3)]),
    ]
    assert savings.integrate(later, start + timedelta(hours=3)) == at_3h
    assert savings.integrate(later, start + timedelta(hours=5))["app:1"] == pytest.approx(7)


# The load balancers


def test_reloads_and_apply_timings_come_from_each_registration(
    token: str, records: EtcdStore, db: None
) -> None:
    registration = Registration(records, Identity("lb-0", "http://127.0.0.1:1"), master_socket=None)  # type: ignore[arg-type]
    for seconds in (0.004, 0.02):
        registration.note_apply("runtime", seconds)
    registration.note_apply("reload", 0.3)
    registration.note_reload()
    register(
        records,
        "lb-0",
        "http://127.0.0.1:1",
        **{k: v for k, v in registration.record.items() if k not in ("id", "address")},
    )

    samples = scrape(token)
    assert value(samples, "greenlight_etcd_up") == 1
    assert value(samples, "greenlight_load_balancers", state="live") == 1
    assert value(samples, "greenlight_proxysync_reloads_total", lb="lb-0") == 1
    apply = "greenlight_proxysync_apply_seconds"
    runtime = {"lb": "lb-0", "how": "runtime"}
    assert value(samples, f"{apply}_count", **runtime) == 2
    assert value(samples, f"{apply}_sum", **runtime) == pytest.approx(0.024)
    assert value(samples, f"{apply}_bucket", **runtime, le="0.005") == 1
    assert value(samples, f"{apply}_bucket", **runtime, le="0.025") == 2
    assert value(samples, f"{apply}_bucket", lb="lb-0", how="reload", le="0.25") == 0
    assert value(samples, f"{apply}_bucket", lb="lb-0", how="reload", le="0.5") == 1
    assert len(registration.record["applies"]["reload"]["buckets"]) == len(APPLY_BUCKETS)


def test_an_unreachable_etcd_is_a_zero_not_a_failed_scrape(token: str, db: None) -> None:
    samples = scrape(token)
    assert value(samples, "greenlight_etcd_up") == 0
    assert not [name for name, _ in samples if name.startswith("greenlight_proxysync_")]


# Bounds


def test_a_scrape_takes_the_same_queries_however_many_rows_there_are(
    token: str,
    app: App,
    make_app: Callable[..., App],
    make_deployment: Callable[..., Deployment],
    django_assert_num_queries: Any,
) -> None:
    def grow() -> None:
        other = make_app()
        make_deployment(other, steps={"switch": {"state": "done", "seconds": 0.02}})
        make_deployment(other, status=Deployment.Status.QUEUED, finished_at=None)
        _run(ScalingRun.Kind.DRAIN, "succeeded", params={"node": "node-1"})
        NodeGroup.objects.create(name=f"group-{other.pk}", min_size=0, max_size=3, desired=1)

    grow()
    # Deployments, steps, queue, scaling runs, drains, node groups; savings: runs, apps, groups.
    with django_assert_num_queries(9):
        scrape(token)
    for _ in range(5):
        grow()
    with django_assert_num_queries(9):
        scrape(token)


def test_a_short_token_is_refused_at_startup() -> None:
    environment = {**os.environ, "GREENLIGHT_METRICS_TOKEN": "too-short"}
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-c", "import dashboard.settings"],
        capture_output=True,
        text=True,
        env={**environment, "SECRET_KEY": "metrics-settings-check"},
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode != 0
    assert "GREENLIGHT_METRICS_TOKEN must be at least 16 characters" in result.stderr


def test_the_stats_frontend_serves_haproxys_exporter_beside_its_health_and_revision() -> None:
    config = render_config(lb_port=8080, stats_port=8081, backends={}, revision=7)
    stats = config.split("frontend stats", 1)[1].split("\nfrontend ", 1)[0]
    assert "http-request use-service prometheus-exporter if { path /metrics }" in stats
    assert "if { path /healthz }" in stats
    assert f"string 7 if {{ path {REVISION_PATH} }}" in stats
