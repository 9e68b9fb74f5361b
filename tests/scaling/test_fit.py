"""Scale-in planning: pods must fit on the nodes that stay, and no budget may block for good."""

from __future__ import annotations

from decimal import Decimal

from kubernetes.utils import parse_quantity

from deployer.pods import PodInfo
from scaling.fit import pinned_by, scale_in_problems
from scaling.kube import BudgetInfo, NodeInfo


def node(name: str, cpu: str = "4", memory: str = "8Gi", unschedulable: bool = False) -> NodeInfo:
    allocatable = {
        "cpu": parse_quantity(cpu),
        "memory": parse_quantity(memory),
        "pods": Decimal(110),
    }
    return NodeInfo(name, {}, unschedulable, True, allocatable=allocatable)


def pod(
    name: str, on: str, cpu: str = "100m", annotations: dict[str, str] | None = None
) -> PodInfo:
    return PodInfo(
        namespace="default",
        name=name,
        uid=name,
        node=on,
        phase="Running",
        owner_kind="ReplicaSet",
        owner_name="web-1",
        labels={"app": "web"},
        annotations=annotations or {},
        requests={"cpu": parse_quantity(cpu), "memory": parse_quantity("64Mi")},
    )


def test_it_finds_no_problem_when_the_pods_fit() -> None:
    nodes = [node("a"), node("b")]
    pods = {"a": [pod("p1", "a", "1")], "b": [pod("p2", "b", "2")]}

    assert scale_in_problems([nodes[0]], nodes, pods, []) == []


def test_it_names_the_pods_that_do_not_fit_and_the_shortfall() -> None:
    nodes = [node("a"), node("b")]
    pods = {"a": [pod("p1", "a", "3")], "b": [pod("p2", "b", "3")]}

    (problem,) = scale_in_problems([nodes[0]], nodes, pods, [])

    assert "default/p1" in problem
    assert "3000m cpu" in problem
    assert "b 1000m cpu" in problem


def test_a_cordoned_node_that_stays_takes_no_pod() -> None:
    nodes = [node("a"), node("b", unschedulable=True)]
    pods = {"a": [pod("p1", "a")]}

    (problem,) = scale_in_problems([nodes[0]], nodes, pods, [])

    assert "no schedulable node stays" in problem


def test_a_budget_that_allows_no_eviction_blocks_the_plan() -> None:
    nodes = [node("a"), node("b")]
    pods = {"a": [pod("p1", "a")]}
    frozen = BudgetInfo("default", "web", {"app": "web"}, 0, None, 1, 0)
    floor = BudgetInfo("default", "floor", {"app": "web"}, None, 2, 2, 0)
    other = BudgetInfo("default", "other", {"app": "api"}, 0, None, 1, 0)

    problems = scale_in_problems([nodes[0]], nodes, pods, [frozen, floor, other])

    assert len(problems) == 2
    assert "budget default/web has maxUnavailable 0" in problems[0]
    assert "budget default/floor has minAvailable 2" in problems[1]


def test_a_pod_that_must_not_be_disrupted_pins_its_node() -> None:
    safe = pod("p1", "a", annotations={"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"})
    karpenter = pod("p2", "a", annotations={"karpenter.sh/do-not-disrupt": "true"})

    assert pinned_by([pod("p0", "a"), safe]) == safe
    assert pinned_by([karpenter]) == karpenter
    assert pinned_by([pod("p3", "a")]) is None
