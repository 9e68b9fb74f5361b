"""The guard after the switch on the real stack: worker, proxysync, HAProxy, etcd, localcluster.

The guard reads HAProxy's own counters through its stats page, as it does in production;
the load runs through HAProxy from keep-alive and new-connection clients, in both
traffic modes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from deployer import k8s, services
from deployer.etcdstore import EtcdStore
from deployer.guardcounters import read_stats
from deployer.models import App, Deployment
from deployer.workflow import backend_name
from tests.deployer.guardkit import VersionedLoad
from tests.servers import Stack

pytestmark = pytest.mark.timeout(300)


def wait_until(
    stack: Stack, deployment: Deployment, done: Callable[[Deployment], bool], timeout: float
) -> Deployment:
    """Poll the row (the database offers no watch) until ``done``; fail with the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment.refresh_from_db()
        if done(deployment):
            return deployment
        time.sleep(0.2)
    log = "\n".join(deployment.logs.values_list("message", flat=True))
    raise AssertionError(
        f"deployment #{deployment.pk} is {deployment.status}\n{log}\n{stack.logs()}"
    )


def finished(stack: Stack, deployment: Deployment, timeout: float = 120) -> Deployment:
    """Wait for a terminal status."""
    return wait_until(stack, deployment, lambda d: d.is_terminal, timeout)


def guarded_app(name: str, **fields: object) -> App:
    """A demo app of 2 replicas whose deploys bake 4 s, judged over at least 20 requests."""
    values: dict[str, object] = {
        "name": name,
        "image": "demo/hello:1",
        "replicas": 2,
        "frontend": f"{name}.localhost",
        "health_deadline": 20,
        "guard_bake_seconds": 4,
        "guard_min_requests": 20,
        "guard_max_error_percent": 5.0,
        **fields,
    }
    return App.objects.create(**values)


def serving(stack: Stack, hostname: str, requests: int = 6) -> set[str]:
    """The versions answering ``/`` through the load balancer over a few new connections."""
    versions = set()
    for _ in range(requests):
        status, body = stack.get(hostname, "/")
        assert status == 200, (status, body)
        versions.add(str(body.get("version")))
    return versions


def test_a_bad_release_under_load_is_swapped_back_and_a_good_one_passes(live: Stack) -> None:
    app = guarded_app("baked")
    first = finished(live, services.request_deploy(app))
    assert first.status == Deployment.Status.SUCCEEDED, first.failure_reason
    guard_lines = list(first.logs.filter(step="guard").values_list("message", flat=True))
    assert guard_lines[1:2] == ["Guard skipped: there is no previous version to swap back to."]
    with EtcdStore() as store:
        record = store.load_balancers()[0].record
    assert read_stats(str(record["stats_address"])), record

    with VersionedLoad(live.lb_port, app.frontend, bad="2") as load:
        bad = finished(live, services.request_deploy(app, image="demo/bad-release:2"))
        # The old version serves the load again: 20 more requests after the swap back.
        after, deadline = load.requests, time.monotonic() + 10
        while load.requests < after + 20 and time.monotonic() < deadline:
            time.sleep(0.05)

    assert bad.status == Deployment.Status.FAILED
    assert bad.failure_reason.startswith("guard: v2 answered 5xx to "), bad.failure_reason
    assert ", above 5%; v1 " in bad.failure_reason
    assert bad.guard["state"] == "swapped_back"
    assert bad.guard["new"]["requests"] >= 20
    assert bad.guard["new"]["errors"] == bad.guard["new"]["requests"]
    # Nothing the old version would have answered failed: every answer but v2's own 500s
    # is v1's 200, on kept-alive and new connections alike.
    assert load.failures == [], load.failures[:10]
    assert load.count(500, "2") > 0 and load.count(200, "1") > 0
    assert set(load.answers) <= {(200, "1"), (500, "2")}, load.answers
    assert serving(live, app.frontend) == {"1"}
    app.refresh_from_db()
    assert app.live_version == 1
    with EtcdStore() as store:
        assert store.get_frontend(app.frontend)["backend"] == backend_name("default", app.name, 1)

    with VersionedLoad(live.lb_port, app.frontend, bad="none") as load:
        good = finished(live, services.request_deploy(app, image="demo/hello:3"))

    assert good.status == Deployment.Status.SUCCEEDED, good.failure_reason
    assert good.guard["state"] == "passed"
    assert good.guard["new"]["requests"] >= 20 and good.guard["new"]["errors"] == 0
    assert load.failures == [], load.failures[:10]
    assert serving(live, app.frontend) == {"3"}
    lines = list(good.logs.filter(step="guard").values_list("message", flat=True))
    assert any(line.startswith("Baking v3 for 4s") for line in lines), lines
    assert any(
        line.startswith("v3 passed the bake of 4s: v3 answered 5xx to 0 of") for line in lines
    )


def test_in_traffic_mode_service_a_bad_release_is_swapped_back_by_its_backends_counters(
    live: Stack,
) -> None:
    app = guarded_app("bakedsvc", traffic="service")
    first = finished(live, services.request_deploy(app))
    assert first.status == Deployment.Status.SUCCEEDED, first.failure_reason

    with VersionedLoad(live.lb_port, app.frontend, bad="2") as load:
        bad = finished(live, services.request_deploy(app, image="demo/bad-release:2"))
        after, deadline = load.requests, time.monotonic() + 10
        while load.requests < after + 20 and time.monotonic() < deadline:
            time.sleep(0.05)

    assert bad.status == Deployment.Status.FAILED
    assert bad.failure_reason.startswith("guard: v2 answered 5xx to "), bad.failure_reason
    assert bad.guard["state"] == "swapped_back" and bad.guard["traffic"] == "service"
    assert bad.guard["new"]["requests"] >= 20
    assert bad.guard["new"]["errors"] == bad.guard["new"]["requests"]
    lines = list(bad.logs.filter(step="guard").values_list("message", flat=True))
    assert any("whose one server is the stable Service bakedsvc" in line for line in lines), lines
    assert load.failures == [], load.failures[:10]
    assert load.count(500, "2") > 0 and load.count(200, "1") > 0
    assert set(load.answers) <= {(200, "1"), (500, "2")}, load.answers
    assert serving(live, app.frontend) == {"1"}
    selector = k8s.core_v1().read_namespaced_service("bakedsvc", "default").spec.selector
    assert selector["version"] == "1"


def test_a_bad_release_without_enough_requests_is_not_judged(live: Stack) -> None:
    app = guarded_app("quiet", replicas=1, guard_bake_seconds=3, guard_min_requests=50)
    assert finished(live, services.request_deploy(app)).status == Deployment.Status.SUCCEEDED

    with VersionedLoad(live.lb_port, app.frontend, bad="2", clients=1, pause=0.5) as load:
        bad = finished(live, services.request_deploy(app, image="demo/bad-release:2"))

    assert bad.status == Deployment.Status.SUCCEEDED, bad.failure_reason
    assert bad.guard["state"] == "passed"
    assert 0 < bad.guard["new"]["requests"] < 50
    assert "without judgement" in bad.guard["reason"]
    assert load.failures == [], load.failures[:10]


def test_a_reload_during_the_bake_resets_haproxys_counters_and_the_guard_counts_across_it(
    live: Stack,
) -> None:
    app = guarded_app("reloaded", replicas=1, guard_bake_seconds=6)
    assert finished(live, services.request_deploy(app)).status == Deployment.Status.SUCCEEDED

    with VersionedLoad(live.lb_port, app.frontend, bad="none") as load:
        good = services.request_deploy(app, image="demo/hello:2")
        wait_until(live, good, lambda d: d.guard.get("state") == "baking", 60)
        time.sleep(2.5)  # counted by the first HAProxy worker, longer than a reading apart
        with EtcdStore() as store:
            # Another app's new backend: proxysync reloads HAProxy, whose new worker counts from 0.
            store.put_backend("default.elsewhere-v1", {"servers": [], "version": 1})
        good = finished(live, good)

    assert good.status == Deployment.Status.SUCCEEDED, good.failure_reason
    assert good.guard["state"] == "passed"
    assert good.guard["resets"] >= 1, good.guard
    # What the clients got from v2 during the bake, give or take its first and last moments.
    assert good.guard["new"]["requests"] >= 0.6 * load.count(200, "2"), (good.guard, load.answers)
    assert load.failures == [], load.failures[:10]
    with EtcdStore() as store:
        store.delete_backend("default.elsewhere-v1")
