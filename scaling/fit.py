"""Will a scale-in work? Checked before any node is cordoned, as Cluster Autoscaler simulates it.

Two checks on the pods that would move off the nodes chosen to go:

- they fit on the nodes that stay: each pod's requests (cpu, memory, one pod slot)
  against each staying node's allocatable minus what its pods already request, placed
  largest first, first fit;
- no PodDisruptionBudget covering them forbids every eviction for good
  (``maxUnavailable: 0``, or ``minAvailable`` at least the pods it expects).

Pods that ask to keep their node (``cluster-autoscaler.kubernetes.io/safe-to-evict:
"false"``, ``karpenter.sh/do-not-disrupt: "true"``) pin it: such a node is never chosen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from deployer.pods import PodInfo
from scaling.drain import plan_drain
from scaling.kube import BudgetInfo, NodeInfo

SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
RESOURCES = ("cpu", "memory")
DEFAULT_POD_SLOTS = Decimal(110)


def pinned_by(pods: list[PodInfo]) -> PodInfo | None:
    """The first pod that asks to keep its node, or None."""
    for pod in pods:
        if pod.finished or pod.deleting:
            continue
        annotations = pod.annotations
        if annotations.get(SAFE_TO_EVICT, "").lower() == "false":
            return pod
        if annotations.get(DO_NOT_DISRUPT, "").lower() == "true":
            return pod
    return None


def pin_reason(pod: PodInfo) -> str:
    """Why ``pod`` keeps its node, for the log."""
    if pod.annotations.get(SAFE_TO_EVICT, "").lower() == "false":
        return f'{pod.key} is annotated {SAFE_TO_EVICT}: "false"'
    return f'{pod.key} is annotated {DO_NOT_DISRUPT}: "true"'


def _amount(resource: str, value: Decimal) -> str:
    if resource == "memory":
        return f"{math.ceil(value / 2**20)}Mi"
    if resource == "cpu":
        return f"{math.ceil(value * 1000)}m"
    return str(value)


@dataclass
class _Room:
    node: str
    free: dict[str, Decimal]

    def takes(self, pod: PodInfo) -> bool:
        return self.free["pods"] >= 1 and all(
            pod.requests.get(r, Decimal(0)) <= self.free[r] for r in RESOURCES
        )

    def place(self, pod: PodInfo) -> None:
        self.free["pods"] -= 1
        for resource in RESOURCES:
            self.free[resource] -= pod.requests.get(resource, Decimal(0))


def _rooms(staying: list[NodeInfo], by_node: dict[str, list[PodInfo]]) -> list[_Room]:
    rooms = []
    for node in staying:
        if node.unschedulable or not node.ready:
            continue
        free = {r: node.allocatable.get(r, Decimal(0)) for r in RESOURCES}
        free["pods"] = node.allocatable.get("pods", DEFAULT_POD_SLOTS)
        for pod in by_node.get(node.name, []):
            if pod.finished:
                continue
            free["pods"] -= 1
            for resource in RESOURCES:
                free[resource] -= pod.requests.get(resource, Decimal(0))
        rooms.append(_Room(node.name, free))
    return rooms


def _blocks_forever(budget: BudgetInfo) -> str:
    """Why ``budget`` never allows an eviction, or ""."""
    limit = budget.max_unavailable
    if limit is not None and str(limit).strip() in ("0", "0%"):
        return f"budget {budget.key} has maxUnavailable {limit}"
    floor = budget.min_available
    if floor is None:
        return ""
    text = str(floor).strip()
    if text.endswith("%"):
        if text == "100%":
            return f"budget {budget.key} has minAvailable 100%"
        return ""
    if text.isdigit() and budget.expected_pods and int(text) >= budget.expected_pods:
        return (
            f"budget {budget.key} has minAvailable {text} with {budget.expected_pods} pods "
            "expected, so it allows no eviction"
        )
    return ""


def scale_in_problems(
    going: list[NodeInfo],
    nodes: list[NodeInfo],
    by_node: dict[str, list[PodInfo]],
    budgets: list[BudgetInfo],
) -> list[str]:
    """Why removing ``going`` would fail (empty when it would work), in words for the log."""
    leaving = {node.name for node in going}
    moving = [
        pod for node in going for pod in plan_drain(by_node.get(node.name, []), force=True).evict
    ]
    problems = []
    blocked: dict[str, list[str]] = {}
    for budget in budgets:
        reason = _blocks_forever(budget)
        covered = [pod.key for pod in moving if budget.selects(pod)]
        if reason and covered:
            blocked[reason] = covered
    for reason, keys in blocked.items():
        problems.append(f"{reason}: {', '.join(keys)} could never be evicted")
    rooms = _rooms([n for n in nodes if n.name not in leaving], by_node)
    homeless = []
    for pod in sorted(
        moving, key=lambda p: tuple(p.requests.get(r, Decimal(0)) for r in RESOURCES), reverse=True
    ):
        room = next((room for room in rooms if room.takes(pod)), None)
        if room is None:
            homeless.append(pod)
        else:
            room.place(pod)
    if homeless:
        needed = {
            r: sum((p.requests.get(r, Decimal(0)) for p in homeless), Decimal(0)) for r in RESOURCES
        }
        free = (
            ", ".join(
                f"{room.node} {_amount('cpu', room.free['cpu'])} cpu / "
                f"{_amount('memory', room.free['memory'])} memory"
                for room in rooms
            )
            or "no schedulable node stays"
        )
        problems.append(
            f"{len(homeless)} of {len(moving)} pods would not fit on the nodes that stay: "
            f"{', '.join(p.key for p in homeless)} need {_amount('cpu', needed['cpu'])} cpu "
            f"and {_amount('memory', needed['memory'])} memory; free after placing the others: "
            f"{free}"
        )
    return problems
