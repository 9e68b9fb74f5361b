"""The local node-group provider through a scaling run: scale out creates nodes, scale in drains."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from deployer.models import App
from scaling import services
from scaling.models import AppAction, NodeGroup, ScalingRun, Schedule
from scaling.runner import RunContext, execute
from scaling.schedule import FrozenClock
from tests.scaling.kubehelp import Cluster, running

pytestmark = [pytest.mark.timeout(120), pytest.mark.django_db]


def _capacity(group: NodeGroup, desired: int) -> ScalingRun:
    run = ScalingRun.objects.create(
        kind=ScalingRun.Kind.SET_CAPACITY, params={"group_id": group.pk, "desired": desired}
    )
    execute(run.pk, RunContext())
    run.refresh_from_db()
    return run


def test_it_scales_a_local_group_out_and_back_in_through_a_drain(cluster: Cluster) -> None:
    group = NodeGroup.objects.create(name="extra", provider="local", min_size=0, max_size=3)
    group.desired = 0
    group.save()

    out = _capacity(group, 2)
    assert out.status == ScalingRun.Status.SUCCEEDED, out.failure_reason
    nodes = cluster.nodes("extra")
    assert len(nodes) == 2

    # Put a workload on the new nodes only: cordon the default group while it schedules.
    defaults = cluster.nodes()
    for node in defaults:
        cluster.core.patch_node(node, {"spec": {"unschedulable": True}})
    app = cluster.deployment(replicas=3)
    pods = cluster.wait_pods(app, lambda ps: len(running(ps)) == 3)
    assert {p.spec.node_name for p in pods} <= set(nodes)
    for node in defaults:
        cluster.core.patch_node(node, {"spec": {"unschedulable": None}})
    busiest = max(nodes, key=lambda n: sum(p.spec.node_name == n for p in pods))
    emptiest = next(n for n in nodes if n != busiest)

    inward = _capacity(group, 1)
    assert inward.status == ScalingRun.Status.SUCCEEDED, inward.failure_reason
    assert cluster.nodes("extra") == [busiest]
    lines = " ".join(inward.logs.values_list("message", flat=True))
    assert f"removing {emptiest}" in lines and "terminated" in lines
    cluster.wait_pods(app, lambda ps: len(running(ps)) == 3)
    group.refresh_from_db()
    assert group.desired == 1


def test_it_never_goes_below_the_groups_minimum(cluster: Cluster) -> None:
    group = NodeGroup.objects.create(name="default", provider="local", min_size=3, max_size=5)
    run = _capacity(group, 1)
    assert run.status == ScalingRun.Status.SUCCEEDED
    assert len(cluster.nodes()) == 3
    assert "outside min 3" in " ".join(run.logs.values_list("message", flat=True))


def test_a_schedule_scales_the_apps_live_version_in_the_cluster(
    cluster: Cluster, make_app: Callable[..., App], make_schedule: Callable[..., Schedule]
) -> None:
    app = make_app("shop", replicas=4)
    cluster.deployment(replicas=4, name="shop-v1")  # the live version, as the deployer names it
    App.objects.filter(pk=app.pk).update(live_version=1)
    make_schedule("nights", cron="0 0 * * *", apps={app: (AppAction.Mode.PERCENT, 50)})

    (run,) = services.tick(FrozenClock(datetime(2026, 6, 1, 0, 1, tzinfo=UTC)))
    execute(run.pk, RunContext())

    run.refresh_from_db()
    assert run.status == ScalingRun.Status.SUCCEEDED, run.failure_reason
    scale = cluster.apps.read_namespaced_deployment_scale("shop-v1", "default")
    assert scale.spec.replicas == 2
    cluster.wait_pods("shop-v1", lambda ps: len(running(ps)) == 2)
    app.refresh_from_db()
    assert (app.replicas, app.baseline_replicas) == (2, 4)


def test_a_scale_in_whose_pods_cannot_fit_is_refused_before_any_cordon(cluster: Cluster) -> None:
    group = NodeGroup.objects.create(name="tight", provider="local", min_size=0, max_size=3)
    group.desired = 0
    group.save()
    out = _capacity(group, 2)
    assert out.status == ScalingRun.Status.SUCCEEDED, out.failure_reason
    nodes = cluster.nodes("tight")
    defaults = cluster.nodes()
    for node in defaults:
        cluster.core.patch_node(node, {"spec": {"unschedulable": True}})
    try:
        # 3 of a node's 4 cores each: one pod per node, and neither node can take the other's.
        app = cluster.deployment(replicas=2, cpu="3")
        cluster.wait_pods(app, lambda ps: len(running(ps)) == 2)

        inward = _capacity(group, 1)

        assert inward.status == ScalingRun.Status.FAILED
        assert "would not fit on the nodes that stay" in inward.failure_reason
        assert "3000m cpu" in inward.failure_reason
        assert f"default/{app}-" in inward.failure_reason
        assert sorted(cluster.nodes("tight")) == sorted(nodes)
        for node in nodes:
            assert not cluster.core.read_node(node).spec.unschedulable
        group.refresh_from_db()
        assert group.desired == 2
    finally:
        for node in defaults:
            cluster.core.patch_node(node, {"spec": {"unschedulable": None}})


def test_a_scale_in_blocked_by_a_budget_for_good_is_refused(cluster: Cluster) -> None:
    group = NodeGroup.objects.create(name="guarded", provider="local", min_size=0, max_size=3)
    group.desired = 0
    group.save()
    assert _capacity(group, 1).status == ScalingRun.Status.SUCCEEDED
    (node,) = cluster.nodes("guarded")
    defaults = cluster.nodes()
    for other in defaults:
        cluster.core.patch_node(other, {"spec": {"unschedulable": True}})
    try:
        app = cluster.deployment(replicas=2)
        cluster.wait_pods(app, lambda ps: len(running(ps)) == 2)
        budget = cluster.pdb(app, min_available=2)
    finally:
        for other in defaults:
            cluster.core.patch_node(other, {"spec": {"unschedulable": None}})
    cluster.wait_budget(budget, lambda status: status.expected_pods == 2)

    inward = _capacity(group, 0)

    assert inward.status == ScalingRun.Status.FAILED
    assert f"budget default/{budget} has minAvailable 2" in inward.failure_reason
    assert not cluster.core.read_node(node).spec.unschedulable
