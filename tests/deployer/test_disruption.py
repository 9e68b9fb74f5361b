"""No request fails while Greenlight changes a running app: scale-down, drains, killed pods.

Each test puts a small load (keep-alive and new connections) through the real HAProxy
of the deploy stack while the change happens, and asserts that no request failed.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from deployer import services
from deployer.cluster import KubeCluster
from deployer.etcdstore import EtcdStore
from deployer.models import Deployment
from deployer.rotation import PodRotation
from scaling.drain import DrainOptions, drain_node
from scaling.kube import KubeNodes
from tests.deployer.load import Load
from tests.deployer.test_integration import backend_servers_become, finished, make_app
from tests.servers import Stack as DeployStack
from tests.servers import pod_process_ids

pytestmark = pytest.mark.timeout(240)


def deployed(stack: DeployStack, **fields: object) -> tuple[object, list[str]]:
    """A live app (v1) with ``fields``; returns it and a list that collects log lines."""
    app = make_app(**fields)
    deployment = finished(stack, services.request_deploy(app))
    assert deployment.status == Deployment.Status.SUCCEEDED, deployment.failure_reason
    app.refresh_from_db()
    return app, []


def in_order(lines: list[str], *fragments: str) -> bool:
    """True when a line with each fragment comes after a line with the previous one."""
    position = -1
    for fragment in fragments:
        found = next((i for i, line in enumerate(lines) if i > position and fragment in line), None)
        if found is None:
            return False
        position = found
    return True


def test_it_scales_down_under_load_without_losing_a_request(live: DeployStack) -> None:
    app, lines = deployed(live, name="shrink", frontend="shrink.localhost", replicas=4)
    before = {p.name for p in KubeCluster().pods("default", "shrink", 1)}

    with Load(live.haproxy.port, "shrink.localhost") as load:
        load.wait_requests(20)
        services.scale_app(app, 1, log=lambda level, message: lines.append(message))  # type: ignore[arg-type]
        backend_servers_become(live, "shrink", 1, lambda names, ready: len(names) == 1)
        load.wait_requests(20)

    assert load.failures == [], load.failures[:5]
    after = {p.name for p in KubeCluster().pods("default", "shrink", 1) if not p.deleting}
    assert len(after) == 1 and after <= before
    for pod in sorted(before - after):
        assert in_order(lines, f"pod {pod} left rotation", "no requests left", "deleted"), lines


def test_it_drains_a_node_one_pod_at_a_time_under_a_budget(live: DeployStack) -> None:
    nodes = KubeNodes()
    names = sorted(n.name for n in nodes.list_nodes())
    target, spare = names[0], names[1]
    for name in names[1:]:
        nodes.set_unschedulable(name, True)
    try:
        app, lines = deployed(live, name="drained", frontend="drained.localhost", replicas=3)
        pods = KubeCluster().pods("default", "drained", 1)
        assert {p.node for p in pods} == {target}
    finally:
        for name in names[1:]:
            nodes.set_unschedulable(name, False)
    del spare

    with Load(live.haproxy.port, "drained.localhost") as load, EtcdStore() as store:
        load.wait_requests(20)
        drain_node(
            nodes,
            target,
            DrainOptions(deadline_seconds=120),
            lambda level, message: lines.append(message),
            PodRotation(store),
        )
        load.wait_requests(20)
    nodes.set_unschedulable(target, False)

    assert load.failures == [], load.failures[:5]
    # Each pod left rotation and was evicted before the next one left (other apps' pods
    # on the node are drained beside them, in parallel).
    ours = sorted(p.name for p in pods)
    events = [
        line
        for line in lines
        if (" left rotation " in line or line.startswith("evicted "))
        and any(name in line for name in ours)
    ]
    assert len(events) == 6, lines
    for index, pod in enumerate(ours):
        assert f"pod {pod} left rotation" in events[2 * index], events
        assert events[2 * index + 1] == f"evicted default/{pod}", events
    moved = KubeCluster().pods("default", "drained", 1)
    assert len([p for p in moved if not p.deleting]) == 3
    assert target not in {p.node for p in moved if not p.deleting}


def test_a_pod_killed_with_sigkill_loses_no_get(live: DeployStack) -> None:
    deployed(live, name="killed", frontend="killed.localhost", replicas=3)
    victim = KubeCluster().pods("default", "killed", 1)[0]
    processes = pod_process_ids(victim.ip)
    assert processes, f"no process found for {victim.name} at {victim.ip}"

    with Load(live.haproxy.port, "killed.localhost") as load:
        load.wait_requests(20)
        for pid in processes:
            os.kill(pid, signal.SIGKILL)
        load.wait_requests(100)
        time.sleep(1.0)
        load.wait_requests(20)

    assert load.failures == [], load.failures[:5]
