"""Processes that come back: faults on the real stack lose no deployment and fail no request.

One stack with two load balancers, started the way ``make run`` starts it
(launcher.supervisor on the Procfile), serves one app for the whole module. Each test
deploys its next version while a load runs through lb-0's HAProxy (keep-alive and new
connections), does something bad to one process in the middle of the deploy, and checks
that the deploy finished or rolled back cleanly, that its log says what happened, and
that no request through the surviving load balancer failed.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest
import requests

from tests.deployer.load import Load
from tests.e2e.conftest import FaultStack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.both_databases, pytest.mark.timeout(600)]

APP = "faults"
HOST = f"{APP}.localhost"
# How long etcd and Redis stay stopped.
OUTAGE_SECONDS = 10.0


@pytest.fixture(scope="module")
def app_id(faults: FaultStack) -> int:
    """The module's app, live at v1 (demo/hello:1, 2 replicas)."""
    app_id = faults.create_app(APP)
    first = faults.finished(faults.deploy(app_id, "demo/hello:1"))
    assert first["status"] == "succeeded", (first, faults.log(first["id"]))
    faults.cluster.wait_settled(APP, first["version"], 2, timeout=60)
    return app_id


@pytest.fixture
def load(faults: FaultStack, app_id: int) -> Iterator[Load]:
    """4 clients GET the app through HAProxy for the whole test."""
    with Load(faults.lb_port, HOST, limit=400.0) as running:
        running.wait_requests(20)
        assert running.failures == [], running.failures[:5]
        yield running


def started_on(faults: FaultStack, deployment_id: int) -> str:
    """The worker that claimed the deployment, from its log."""
    prefix = "Started on worker "
    line = wait_for(
        f"deployment #{deployment_id} to start",
        lambda: next((m for m in faults.log(deployment_id) if m.startswith(prefix)), None),
        timeout=60,
    )
    return line[len(prefix) :].rstrip(".")


def assert_clean_rollback(faults: FaultStack, app_id: int, deployment: dict, before: int) -> None:
    """The old version still serves and the new one's pods are gone."""
    assert faults.live_version(app_id) == before
    wait_for(
        f"v{deployment['version']}'s pods to go",
        lambda: not [
            p for p in faults.cluster.pods(f"app={APP},version={deployment['version']}")
            if not p.deleting
        ],
        timeout=60,
    )  # fmt: skip


def test_a_worker_killed_mid_deploy_is_recovered_by_the_worker_that_keeps_running(
    faults: FaultStack, app_id: int, load: Load
) -> None:
    second = f"second-{faults.stack.web_port}@{socket.gethostname()}"
    first = f"worker-{faults.stack.web_port}@{socket.gethostname()}"
    worker = faults.start_worker(second)
    control = faults.celery().control
    wait_for(f"{second} to answer", lambda: control.ping([second], timeout=1.0), timeout=90)
    before = faults.live_version(app_id)
    # The supervisor's worker stops taking new work for a moment, so that the second one
    # runs the deploy: the run to recover is then that of a worker nobody restarts.
    assert control.cancel_consumer("celery", destination=[first], reply=True, timeout=5)
    try:
        deployment_id = faults.deploy(app_id, "demo/slow:lost")
        assert started_on(faults, deployment_id) == second
    finally:
        assert control.add_consumer("celery", destination=[first], reply=True, timeout=5)
    faults.running_step(deployment_id, "pods")

    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(10)
    deployment = faults.finished(deployment_id, timeout=150)

    log = faults.log(deployment_id)
    assert deployment["status"] == "failed", (deployment, log)
    assert "worker running this deployment was lost" in deployment["failure_reason"]
    assert f"The worker running this deployment ({second}) was lost; recovering." in log
    assert_clean_rollback(faults, app_id, deployment, before)
    assert faults.served_version(HOST) == str(before)
    load.wait_requests(20)
    assert load.failures == [], load.failures[:5]


def test_the_only_worker_killed_mid_deploy_is_restarted_and_recovers_its_own_run(
    faults: FaultStack, app_id: int, load: Load
) -> None:
    name = f"worker-{faults.stack.web_port}@{socket.gethostname()}"
    before = faults.live_version(app_id)
    deployment_id = faults.deploy(app_id, "demo/slow:restarted")
    assert started_on(faults, deployment_id) == name
    faults.running_step(deployment_id, "pods")
    killed = faults.pid("worker")

    os.killpg(killed, signal.SIGKILL)
    faults.restarted("worker", after=killed)
    deployment = faults.finished(deployment_id, timeout=150)

    log = faults.log(deployment_id)
    assert deployment["status"] == "failed", (deployment, log)
    assert f"The worker running this deployment ({name}) was lost; recovering." in log
    assert any("worker exited with code -9" in line for line in faults.stack.exits())
    assert_clean_rollback(faults, app_id, deployment, before)
    assert faults.served_version(HOST) == str(before)
    load.wait_requests(20)
    assert load.failures == [], load.failures[:5]


def test_a_proxysync_killed_mid_deploy_comes_back_and_the_deploy_completes(
    faults: FaultStack, app_id: int, load: Load
) -> None:
    # Pods that take 20 s to start: proxysync is back (its start takes seconds under load)
    # before the switch, which is what this test is about. A proxysync that is down at the
    # switch is the next test's.
    faults.api.call("PATCH", f"/api/apps/{app_id}/", {"env": {"STARTUP_SECONDS": "20"}})
    try:
        deployment_id = faults.deploy(app_id, "demo/slow:proxysync")
    finally:
        faults.api.call("PATCH", f"/api/apps/{app_id}/", {"env": {}})
    faults.running_step(deployment_id, "pods")
    killed = faults.pid("proxysync-0")

    os.kill(killed, signal.SIGKILL)
    faults.restarted("proxysync-0", after=killed)
    deployment = faults.finished(deployment_id, timeout=150)

    assert deployment["status"] == "succeeded", (deployment, faults.log(deployment_id))
    load.wait_requests(20)
    assert load.failures == [], load.failures[:5]
    assert faults.live_version(app_id) == deployment["version"]
    assert faults.served_version(HOST) == str(deployment["version"])
    assert any("proxysync-0 exited with code -9" in line for line in faults.stack.exits())


def test_etcd_stopped_mid_deploy_fails_no_request_and_the_deploy_ends_cleanly(
    faults: FaultStack, app_id: int, load: Load
) -> None:
    before = faults.live_version(app_id)
    deployment_id = faults.deploy(app_id, "demo/slow:etcd")
    faults.running_step(deployment_id, "pods")
    etcd = faults.pid("etcd")

    os.kill(etcd, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        served = load.requests
        time.sleep(OUTAGE_SECONDS)  # the outage itself: nothing to wait for
        assert load.requests - served > 20, "HAProxy stopped answering while etcd was stopped"
        assert load.failures == [], load.failures[:5]
    finally:
        os.kill(etcd, signal.SIGCONT)
    assert time.monotonic() - stopped_at >= OUTAGE_SECONDS
    deployment = faults.finished(deployment_id, timeout=180)

    log = faults.log(deployment_id)
    if deployment["status"] == "succeeded":
        assert faults.live_version(app_id) == deployment["version"]
        assert faults.served_version(HOST) == str(deployment["version"])
    else:
        assert deployment["status"] == "failed", (deployment, log)
        assert deployment["failure_reason"], log
        assert_clean_rollback(faults, app_id, deployment, before)
        assert faults.served_version(HOST) == str(before)
    load.wait_requests(20)
    assert load.failures == [], load.failures[:5]


def test_redis_stopped_keeps_pages_up_queues_a_deploy_and_runs_it_once_back(
    faults: FaultStack, app_id: int, load: Load
) -> None:
    last = faults.api.call("GET", f"/api/deployments/?app={app_id}")["results"][0]["id"]
    pages = ["/", f"/apps/{app_id}/", f"/apps/{app_id}/history/", f"/deployments/{last}/"]
    redis = faults.pid("redis")

    os.kill(redis, signal.SIGSTOP)
    try:
        stopped_at = time.monotonic()
        for path in pages:
            started = time.monotonic()
            response = faults.api.page("GET", path)
            assert response.status_code == 200, (path, response.status_code)
            assert time.monotonic() - started < 10, f"{path} took {time.monotonic() - started}s"
        started = time.monotonic()
        queued = faults.api.http.post(
            f"{faults.api.base}/api/apps/{app_id}/deploy/",
            json={"image": "demo/hello:redis"},
            timeout=30,
        )
        took = time.monotonic() - started
        assert queued.status_code == 202, queued.text
        assert queued.json()["status"] == "queued"
        assert took < 5, f"the deploy request took {took:.1f}s while Redis was stopped"
        deployment_id = int(queued.json()["id"])
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped_at)))  # the outage
        assert faults.deployment(deployment_id)["status"] == "queued"
    finally:
        os.kill(redis, signal.SIGCONT)
    deployment = faults.finished(deployment_id, timeout=150)

    log = faults.log(deployment_id)
    assert deployment["status"] == "succeeded", (deployment, log)
    assert any(line.startswith("The task queue did not answer") for line in log), log
    assert len([line for line in log if line.startswith("Started on worker")]) == 1, log
    assert faults.live_version(app_id) == deployment["version"]
    assert faults.served_version(HOST) == str(deployment["version"])
    assert requests.get(f"{faults.api.base}/login/", timeout=5).status_code == 200
    load.wait_requests(20)
    assert load.failures == [], load.failures[:5]


def test_one_haproxy_killed_mid_deploy_leaves_the_deploy_to_the_other_load_balancer(
    faults: FaultStack, app_id: int, load: Load
) -> None:
    deployment_id = faults.deploy(app_id, "demo/slow:haproxy")
    faults.running_step(deployment_id, "pods")
    killed = faults.pid("haproxy-1")

    # The whole HAProxy of lb-1, master and workers, at once.
    os.killpg(killed, signal.SIGKILL)
    deployment = faults.finished(deployment_id, timeout=150)

    log = faults.log(deployment_id)
    assert deployment["status"] == "succeeded", (deployment, log)
    assert faults.live_version(app_id) == deployment["version"]
    assert faults.served_version(HOST, lb=0) == str(deployment["version"])
    assert any("lb-0" in line for line in log), log
    assert any("haproxy-1 exited with code -9" in line for line in faults.stack.exits())
    load.wait_requests(20)
    assert load.failures == [], load.failures[:5]
    # The supervisor starts lb-1's HAProxy again; it rejoins and serves the new version.
    faults.restarted("haproxy-1", after=killed)
    wait_for("lb-1 to register again", lambda: faults.healthy_lbs() == 2, timeout=60)
    wait_for(
        "lb-1 to serve the new version",
        lambda: faults.served_version(HOST, lb=1) == str(deployment["version"]),
        timeout=60,
    )


def test_a_load_balancer_whose_proxysync_is_down_at_the_switch_keeps_serving(
    faults: FaultStack, app_id: int, load: Load
) -> None:
    deployment_id = faults.deploy(app_id, "demo/slow:hung")
    faults.running_step(deployment_id, "pods")
    proxysync = faults.pid("proxysync-0")

    # A proxysync that hangs (or restarts slowly) past its lease, across the switch.
    os.kill(proxysync, signal.SIGSTOP)
    try:
        faults.running_step(deployment_id, "switch")
        time.sleep(OUTAGE_SECONDS)  # the outage itself: past the switch and the lease
    finally:
        os.kill(proxysync, signal.SIGCONT)
    deployment = faults.finished(deployment_id, timeout=150)

    log = faults.log(deployment_id)
    assert deployment["status"] == "succeeded", (deployment, log)
    assert any(
        "lb-0 is not registered (its proxysync does not answer) and keeps the previous routes"
        in line
        for line in log
    ), log
    load.wait_requests(20)
    assert load.failures == [], (len(load.failures), load.failures[:5])
    # Once its proxysync is back, lb-0 applies the current routes and registers again.
    wait_for("lb-0 to register again", lambda: faults.healthy_lbs() == 2, timeout=60)
    wait_for(
        "lb-0 to serve the new version",
        lambda: faults.served_version(HOST) == str(deployment["version"]),
        timeout=60,
    )
    assert load.failures == [], (len(load.failures), load.failures[:5])
