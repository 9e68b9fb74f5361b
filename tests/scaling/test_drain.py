"""Drain against a real localcluster: rescheduling, DaemonSet pods, disruption budgets, force."""

from __future__ import annotations

from collections import Counter

import pytest

from deployer.cluster import MANAGED_BY, MANAGER
from deployer.rotation import LogFn, Removal, ServingPod, StillRouted
from scaling.drain import DrainFailed, DrainOptions, drain_node
from scaling.kube import KubeNodes
from tests.scaling.kubehelp import Cluster, running

pytestmark = pytest.mark.timeout(120)


class Lines:
    """Collects drain log lines."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, level: str, message: str) -> None:
        self.lines.append((level, message))

    def text(self) -> str:
        return "\n".join(m for _, m in self.lines)


def busiest_node(pods: list) -> str:
    return Counter(p.spec.node_name for p in pods).most_common(1)[0][0]


def test_it_drains_a_node_and_the_pods_come_back_on_other_nodes(cluster: Cluster) -> None:
    app = cluster.deployment(replicas=6)
    pods = cluster.wait_pods(app, lambda ps: len(running(ps)) == 6)
    node = busiest_node(pods)
    before = {p.metadata.name for p in pods if p.spec.node_name == node}
    agent = cluster.daemonset_pod(node)
    log = Lines()

    report = drain_node(KubeNodes(), node, DrainOptions(deadline_seconds=30), log)

    assert sorted(report.evicted) == sorted(f"default/{name}" for name in before)
    assert [key for key, _ in report.skipped] == [f"default/{agent}"]
    assert "DaemonSet pod" in log.text()
    assert cluster.unschedulable(node)
    after = cluster.wait_pods(
        app, lambda ps: len(running(ps)) == 6 and all(p.spec.node_name != node for p in ps)
    )
    assert not before & {p.metadata.name for p in after}
    assert {p.metadata.name for p in cluster.pods_of(agent.rsplit("-", 1)[0])} == {agent}


def test_a_budget_that_never_allows_disruption_fails_at_the_deadline(cluster: Cluster) -> None:
    app = cluster.deployment(replicas=3)
    pods = cluster.wait_pods(app, lambda ps: len(running(ps)) == 3)
    cluster.pdb(app, min_available=3)
    node = busiest_node(pods)
    log = Lines()

    with pytest.raises(DrainFailed, match="disruption budget|eviction refused") as failure:
        drain_node(KubeNodes(), node, DrainOptions(deadline_seconds=3, backoff_initial=0.2), log)

    assert failure.value.report.retries >= 2
    assert "not drained within 3s" in str(failure.value)
    assert not cluster.unschedulable(node)
    assert "uncordoned" in log.text()
    assert {p.metadata.name for p in running(cluster.pods_of(app))} == {
        p.metadata.name for p in pods
    }


def test_it_refuses_pods_no_controller_would_replace_unless_forced(cluster: Cluster) -> None:
    node = cluster.nodes()[0]
    bare = cluster.bare_pod(node)
    cluster.wait_pods("bare", lambda ps: any(p.metadata.name == bare for p in running(ps)))

    with pytest.raises(DrainFailed, match="no controller would replace"):
        drain_node(KubeNodes(), node, DrainOptions(deadline_seconds=10), Lines())
    assert not cluster.unschedulable(node)
    assert any(p.metadata.name == bare for p in cluster.pods_of("bare"))

    drain_node(KubeNodes(), node, DrainOptions(deadline_seconds=10, force=True), Lines())
    assert all(p.metadata.name != bare for p in cluster.pods_of("bare"))


def test_it_waits_for_each_pods_grace_period_in_parallel(cluster: Cluster) -> None:
    # These pods ignore SIGTERM: each lives exactly its grace period after eviction.
    app = cluster.deployment(replicas=4, image="test/stubborn:1", grace=2)
    pods = cluster.wait_pods(app, lambda ps: len(running(ps)) == 4)
    node = busiest_node(pods)
    on_node = {p.metadata.name for p in pods if p.spec.node_name == node}

    report = drain_node(KubeNodes(), node, DrainOptions(deadline_seconds=30), Lines())

    assert sorted(report.evicted) == sorted(f"default/{name}" for name in on_node)
    assert report.seconds >= 2.0  # returned only once the pods had really stopped
    assert not on_node & {p.metadata.name for p in cluster.pods_of(app)}


class HeldRotation:
    """A fleet in which a load balancer whose proxysync is down still routes to every pod."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def serving(self, pod: ServingPod) -> int | None:
        return 2

    def take_out(self, pod: ServingPod, timeout: float, log: LogFn) -> Removal:
        self.asked.append(pod.name)
        raise StillRouted(f"lb-1 still routes to {pod.name}: its proxysync does not answer")

    def put_back(self, removal: Removal, log: LogFn) -> None:
        raise AssertionError("nothing was taken out")


def test_it_evicts_no_pod_a_load_balancer_still_routes_to(cluster: Cluster) -> None:
    labels = {MANAGED_BY: MANAGER, "version": "1"}
    app = cluster.deployment(replicas=2, labels=labels)
    pods = cluster.wait_pods(app, lambda ps: len(running(ps)) == 2)
    node = busiest_node(pods)
    on_node = {p.metadata.name for p in pods if p.spec.node_name == node}
    rotation = HeldRotation()
    log = Lines()

    with pytest.raises(DrainFailed, match="kept in service: lb-1 still routes to") as failure:
        drain_node(KubeNodes(), node, DrainOptions(deadline_seconds=10), log, rotation)

    assert failure.value.report.evicted == []
    assert rotation.asked == sorted(on_node)[:1]  # the rest of the version waits behind it
    assert not cluster.unschedulable(node)
    assert {p.metadata.name for p in running(cluster.pods_of(app))} == {
        p.metadata.name for p in pods
    }
