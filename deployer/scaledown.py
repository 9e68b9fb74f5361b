"""Scale a live version without losing a request: chosen pods leave rotation, then go.

Greenlight picks the pods that go (not ready ones first, then those on cordoned nodes,
then the newest), gives them the lowest ``controller.kubernetes.io/pod-deletion-cost`` so
that the ReplicaSet deletes exactly those, takes them out of the load balancer
(deployer.rotation), and only then lowers the replica count. A chosen pod that the
ReplicaSet kept after all goes back into rotation; a pod it deleted instead leaves
rotation at its deletionTimestamp (the endpoint sync) and its preStop delay covers that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from deployer.pods import PodInfo
from deployer.rotation import LogFn, RotationStore, ServingPod, put_back, take_out

# Lower than any cost a user would give (the default is 0): the victims go first.
VICTIM_COST = -1000


class ScalableCluster(Protocol):
    """The cluster calls a scale-down needs (deployer.cluster.KubeCluster)."""

    def pods(self, namespace: str, app: str, version: int) -> list[PodInfo]: ...
    def cordoned_nodes(self) -> set[str]: ...
    def set_deletion_cost(self, namespace: str, costs: dict[str, int | None]) -> None: ...
    def scale(self, namespace: str, app: str, version: int, replicas: int) -> None: ...
    def wait_pods_gone(
        self, namespace: str, app: str, version: int, keep: int, timeout: float
    ) -> list[PodInfo]: ...


def choose_victims(pods: list[PodInfo], cordoned: set[str], count: int) -> list[PodInfo]:
    """The ``count`` pods a scale-down removes: not serving first, then emptied nodes, newest."""

    def rank(pod: PodInfo) -> tuple[bool, bool]:
        return (pod.phase == "Running" and pod.ready, pod.node not in cordoned)

    # Newest first within a rank: sort by creation descending, then stably by rank.
    newest_first = sorted(pods, key=lambda p: p.created, reverse=True)
    return sorted(newest_first, key=rank)[:count]


def scale_version(
    cluster: ScalableCluster,
    store: RotationStore,
    *,
    namespace: str,
    app: str,
    version: int,
    replicas: int,
    grace: float,
    log: LogFn,
    cancelled: Callable[[], bool] = lambda: False,
) -> None:
    """Set the version's replicas; pods removed leave rotation before they are deleted."""
    pods = [p for p in cluster.pods(namespace, app, version) if not p.deleting]
    excess = len(pods) - replicas
    if excess <= 0:
        cluster.scale(namespace, app, version, replicas)
        return
    victims = choose_victims(pods, cluster.cordoned_nodes(), excess)
    names = [p.name for p in victims]
    log("info", f"{app} v{version}: removing {', '.join(names)} ({len(pods)} → {replicas} pods)")
    cluster.set_deletion_cost(namespace, dict.fromkeys(names, VICTIM_COST))
    removal = take_out(
        store,
        [ServingPod(namespace, p.name, p.app, p.version) for p in victims],
        timeout=grace,
        log=log,
        cancelled=cancelled,
    )
    cluster.scale(namespace, app, version, replicas)
    left = cluster.wait_pods_gone(namespace, app, version, replicas, grace)
    stayed = sorted({p.name for p in left} & set(names))
    gone = sorted(set(names) - {p.name for p in left})
    if gone:
        log("info", f"deleted {', '.join(gone)}")
    if stayed:
        # The ReplicaSet deleted other pods (they left rotation at their deletionTimestamp).
        put_back(store, removal, stayed, log)
        cluster.set_deletion_cost(namespace, dict.fromkeys(stayed))
