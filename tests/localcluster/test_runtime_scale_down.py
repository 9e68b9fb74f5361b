"""Which pods a ReplicaSet deletes when it scales down, pod-deletion-cost included.

Sources: pkg/controller/controller_utils.go (ActivePodsWithRanks.Less, logarithmicRankDiff),
pkg/controller/replicaset/replica_set.go (getPodsToDelete, getIndirectlyRelatedPods),
pkg/apis/core/helper (GetDeletionCostFromPodAnnotations) and
https://kubernetes.io/docs/concepts/workloads/controllers/replicaset/#pod-deletion-cost.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from kubernetes import client

from localcluster.controllers.replicaset import POD_DELETION_COST, deletion_cost, deletion_order

from .conftest import runtime_present
from .runtime_support import deployment, running_and_ready, watch_until
from .test_runtime_workloads import pods_of

NOW = dt.datetime(2025, 6, 1, 12, 0, 0, tzinfo=dt.UTC)


def _ago(seconds: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_pod(
    name: str,
    *,
    node: str = "node-1",
    phase: str = "Running",
    ready_for: float | None = 100,
    cost: str | None = None,
    restarts: int = 0,
    age: float = 100,
    uid: str | None = None,
) -> dict[str, Any]:
    """A pod as the ReplicaSet controller sees it; times are relative to NOW."""
    conditions = []
    if ready_for is not None:
        conditions.append(
            {"type": "Ready", "status": "True", "lastTransitionTime": _ago(ready_for)}
        )
    return {
        "metadata": {
            "name": name,
            "uid": uid or f"uid-{name}",
            "creationTimestamp": _ago(age),
            "annotations": {} if cost is None else {POD_DELETION_COST: cost},
        },
        "spec": {"nodeName": node} if node else {},
        "status": {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": [{"name": "app", "restartCount": restarts}],
        },
    }


def names(pods: list[dict[str, Any]]) -> list[str]:
    """The pods' names, in order."""
    return [p["metadata"]["name"] for p in pods]


def test_it_ranks_each_rule_above_the_ones_after_it() -> None:
    # Each pod goes before the next by its own rule, though it loses on every later rule.
    # node-2 holds three related pods, every later node one.
    pods = [
        make_pod("unassigned", node="", phase="Pending", ready_for=None, cost="100", age=1000),
        make_pod("pending", phase="Pending", ready_for=None, cost="100", age=1000),
        make_pod("unknown", phase="Unknown", ready_for=None, cost="100", age=1000),
        make_pod("not-ready", ready_for=None, cost="100", age=1000),
        make_pod("cheap", cost="-5", ready_for=1000, age=1000),
        make_pod("doubled-up", node="node-2", ready_for=1000, age=1000),
        make_pod("doubled-up-too", node="node-2", ready_for=1000, age=1000, restarts=1),
        make_pod("ready-briefly", node="node-3", ready_for=10, age=1000),
        make_pod("restarted", node="node-4", restarts=3, ready_for=1000, age=1000),
        make_pod("newer", node="node-5", ready_for=1000, age=500),
        make_pod("oldest", node="node-6", ready_for=1000, age=1000),
    ]
    related = [*pods, make_pod("sibling", node="node-2")]
    order = names(deletion_order(list(reversed(pods)), related))
    assert order == [
        "unassigned",
        "pending",
        "unknown",
        "not-ready",
        "cheap",
        "doubled-up-too",
        "doubled-up",
        "ready-briefly",
        "restarted",
        "newer",
        "oldest",
    ]


def test_it_deletes_the_lowest_deletion_cost_first_among_ready_running_pods() -> None:
    pods = [
        make_pod("new-default", age=10, ready_for=5),
        make_pod("old-cheap", age=1000, ready_for=900, cost="-100"),
        make_pod("old-dear", age=1000, ready_for=900, cost="2147483647"),
        make_pod("old-free", age=1000, ready_for=900, cost="0"),
    ]
    assert names(deletion_order(pods)) == ["old-cheap", "new-default", "old-free", "old-dear"]


@pytest.mark.parametrize(
    ("value", "cost"),
    [
        ("-100", -100),
        ("42", 42),
        ("0", 0),
        ("-0", 0),
        ("-007", -7),
        ("-2147483648", -(2**31)),
        ("2147483647", 2**31 - 1),
        ("2147483648", 0),
        ("-2147483649", 0),
        ("+5", 0),
        ("007", 0),
        ("1_000", 0),
        (" 5", 0),
        ("5\n", 0),
        ("", 0),
        ("-", 0),
        ("ten", 0),
        ("1.5", 0),
        ("٣", 0),
    ],
)
def test_it_reads_the_deletion_cost_as_an_int32_and_an_invalid_one_as_zero(
    value: str, cost: int
) -> None:
    assert deletion_cost(make_pod("p", cost=value)) == cost


def test_it_counts_only_active_related_pods_on_the_same_node_as_doubled_up() -> None:
    lone = make_pod("lone", node="node-1", age=1000, ready_for=1000)
    crowded = make_pod("crowded", node="node-2", age=2000, ready_for=2000)
    terminating = make_pod("leaving", node="node-2")
    terminating["metadata"]["deletionTimestamp"] = _ago(1)
    finished = make_pod("finished", node="node-2", phase="Succeeded")
    # Inactive neighbours do not count: newer first decides.
    assert names(deletion_order([crowded, lone], [crowded, lone, terminating, finished])) == [
        "lone",
        "crowded",
    ]
    neighbour = make_pod("neighbour", node="node-2")
    assert names(deletion_order([crowded, lone], [crowded, lone, neighbour])) == [
        "crowded",
        "lone",
    ]
    # A ReplicaSet without a controller has no related pods: no pod ranks as doubled up.
    assert names(deletion_order([crowded, lone, neighbour], [])) == ["neighbour", "lone", "crowded"]


def test_it_compares_times_in_logarithmic_buckets_and_breaks_ties_by_uid_given_now() -> None:
    # 600 s and 700 s ago share a power-of-two bucket of nanoseconds (2**39 .. 2**40).
    older = make_pod("older", age=700, ready_for=700, uid="a")
    newer = make_pod("newer", age=600, ready_for=600, uid="b")
    assert names(deletion_order([older, newer])) == ["newer", "older"]
    assert names(deletion_order([newer, older], now=NOW)) == ["older", "newer"]
    # Buckets apart, the newer one goes first whatever the UIDs.
    young = make_pod("young", age=10, ready_for=10, uid="z")
    assert names(deletion_order([older, young], now=NOW)) == ["young", "older"]


def test_it_puts_a_pod_without_ready_time_or_creation_time_first() -> None:
    stamped = make_pod("stamped", age=10, ready_for=10)
    unstamped = make_pod("unstamped", age=1000, ready_for=1000)
    del unstamped["status"]["conditions"][0]["lastTransitionTime"]
    assert names(deletion_order([stamped, unstamped], now=NOW)) == ["unstamped", "stamped"]
    nameless = make_pod("no-creation", age=1000, ready_for=None)
    del nameless["metadata"]["creationTimestamp"]
    also_not_ready = make_pod("young", age=1, ready_for=None)
    assert names(deletion_order([also_not_ready, nameless], now=NOW)) == ["no-creation", "young"]


@pytest.mark.skipif(
    not runtime_present(), reason="the localcluster runtime is not in this checkout"
)
def test_it_scales_down_by_deleting_the_pod_with_the_lowest_deletion_cost(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("costly", replicas=1))
    first = next(iter(watch_until(pods_of(core, namespace, "costly"), running_and_ready(1))))
    apps.patch_namespaced_deployment_scale("costly", namespace, {"spec": {"replicas": 3}})
    pods = watch_until(pods_of(core, namespace, "costly"), running_and_ready(3))
    created = {name: p["metadata"]["creationTimestamp"] for name, p in pods.items()}
    assert created[first] == min(created.values()), "the chosen pod is not the newest"
    core.patch_namespaced_pod(
        first, namespace, {"metadata": {"annotations": {POD_DELETION_COST: "-100"}}}
    )

    apps.patch_namespaced_deployment_scale("costly", namespace, {"spec": {"replicas": 2}})

    def live(found: dict[str, Any]) -> set[str]:
        return {n for n, p in found.items() if not p["metadata"].get("deletionTimestamp")}

    after = watch_until(pods_of(core, namespace, "costly"), lambda ps: len(live(ps)) == 2)
    assert live(after) == set(pods) - {first}
    events = core.list_namespaced_event(
        namespace, field_selector="involvedObject.kind=ReplicaSet"
    ).items
    deleted = [e.message for e in events if e.reason == "SuccessfulDelete"]
    assert deleted == [f"Deleted pod: {first}"]
