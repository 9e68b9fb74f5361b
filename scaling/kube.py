"""Node and eviction calls for scaling, on top of deployer.k8s (its clients and error translation)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from kubernetes import client
from kubernetes.utils import parse_quantity

from deployer import k8s
from deployer.errors import NotFound
from deployer.pods import PodInfo, pod_info

# localcluster's own node labels (see localcluster/nodes.py).
LOCAL_GROUP_LABEL = "localcluster.io/node-group"
LOCAL_INSTANCE_LABEL = "localcluster.io/instance-id"


@dataclass(frozen=True)
class NodeInfo:
    """What scaling needs to know about a Node."""

    name: str
    labels: dict[str, str]
    unschedulable: bool
    ready: bool
    provider_id: str = ""
    allocatable: dict[str, Decimal] = field(default_factory=dict)

    @property
    def instance_id(self) -> str:
        """The machine behind the node: the last part of providerID (aws:///zone/i-0abc)."""
        if self.provider_id:
            return self.provider_id.rstrip("/").rsplit("/", 1)[-1]
        return self.labels.get(LOCAL_INSTANCE_LABEL, "")


@dataclass(frozen=True)
class BudgetInfo:
    """A PodDisruptionBudget as scale-in planning reads it."""

    namespace: str
    name: str
    match_labels: dict[str, str]
    max_unavailable: int | str | None
    min_available: int | str | None
    expected_pods: int
    disruptions_allowed: int

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    def selects(self, pod: PodInfo) -> bool:
        """True when the budget covers ``pod`` (matchLabels; an empty selector selects nothing)."""
        return (
            pod.namespace == self.namespace
            and bool(self.match_labels)
            and all(pod.labels.get(k) == v for k, v in self.match_labels.items())
        )


@dataclass(frozen=True)
class PodEvent:
    """A watch event about a pod on a node."""

    type: str
    pod: PodInfo
    resource_version: str = ""


class NodeOps(Protocol):
    """The cluster operations scaling uses; the real one is ``KubeNodes``."""

    def list_nodes(self, selector: str | None = None) -> list[NodeInfo]:
        """Nodes, optionally only those matching the label selector ``selector``."""
        ...

    def get_node(self, name: str) -> NodeInfo:
        """One node; raises NotFound."""
        ...

    def set_unschedulable(self, name: str, unschedulable: bool) -> None:
        """Cordon (True) or uncordon (False) a node."""
        ...

    def create_node(self, name: str, labels: dict[str, str]) -> None:
        """Register a Node object (localcluster brings up a simulated node for it)."""
        ...

    def delete_node(self, name: str) -> None:
        """Delete a Node object; a missing node is not an error."""
        ...

    def pods_on_node(self, name: str) -> tuple[list[PodInfo], str]:
        """The pods bound to node ``name`` and the list's resourceVersion."""
        ...

    def pods_by_node(self) -> dict[str, list[PodInfo]]:
        """Every bound pod of the cluster, grouped by node name (one list call)."""
        ...

    def evict(self, pod: PodInfo, grace_seconds: int | None) -> None:
        """Ask the Eviction API to evict ``pod``; raises TooManyRequests when a PDB forbids it."""
        ...

    def list_budgets(self) -> list[BudgetInfo]:
        """Every PodDisruptionBudget of the cluster."""
        ...

    def watch_pods_on_node(
        self, name: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[PodEvent]:
        """Pod events on node ``name`` after ``resource_version``, for up to ``timeout_seconds``."""
        ...


def _node_info(node: Any) -> NodeInfo:
    meta, spec, status = node.metadata, node.spec, node.status
    ready = False
    for condition in (status.conditions if status and status.conditions else []) or []:
        if condition.type == "Ready":
            ready = condition.status == "True"
    allocatable = (status.allocatable if status and status.allocatable else {}) or {}
    return NodeInfo(
        name=meta.name,
        labels=dict(meta.labels or {}),
        unschedulable=bool(spec and spec.unschedulable),
        ready=ready,
        provider_id=(spec.provider_id if spec and spec.provider_id else ""),
        allocatable={k: parse_quantity(v) for k, v in allocatable.items()},
    )


# Parallel evictions each hold a connection; the shared client's pool (5 per CPU) is too small.
POOL_SIZE = 64


class KubeNodes:
    """NodeOps against the cluster configured in settings, through deployer.k8s."""

    def __init__(self) -> None:
        self._core: client.CoreV1Api | None = None

    @property
    def core(self) -> client.CoreV1Api:
        """CoreV1Api on a client configured like deployer.k8s's, with a larger pool."""
        if self._core is None:
            base = k8s.new_api_client()
            configuration = base.configuration
            configuration.connection_pool_maxsize = POOL_SIZE
            self._core = client.CoreV1Api(client.ApiClient(configuration))
        return self._core

    def list_nodes(self, selector: str | None = None) -> list[NodeInfo]:
        """Nodes, optionally only those matching the label selector ``selector``."""
        kwargs: dict[str, Any] = {"label_selector": selector} if selector else {}
        result = k8s.call(self.core.list_node, **kwargs)
        return [_node_info(n) for n in result.items or []]

    def get_node(self, name: str) -> NodeInfo:
        """One node; raises NotFound."""
        return _node_info(k8s.call(self.core.read_node, name))

    def set_unschedulable(self, name: str, unschedulable: bool) -> None:
        """Cordon (True) or uncordon (False) a node."""
        body = {"spec": {"unschedulable": True if unschedulable else None}}
        k8s.call(self.core.patch_node, name, body)

    def create_node(self, name: str, labels: dict[str, str]) -> None:
        """Register a Node object (localcluster brings up a simulated node for it)."""
        body = client.V1Node(
            api_version="v1",
            kind="Node",
            metadata=client.V1ObjectMeta(name=name, labels=labels),
        )
        k8s.call(self.core.create_node, body)

    def delete_node(self, name: str) -> None:
        """Delete a Node object; a missing node is not an error."""
        with contextlib.suppress(NotFound):
            k8s.call(self.core.delete_node, name)

    def pods_on_node(self, name: str) -> tuple[list[PodInfo], str]:
        """The pods bound to node ``name`` and the list's resourceVersion."""
        result = k8s.call(
            self.core.list_pod_for_all_namespaces, field_selector=f"spec.nodeName={name}"
        )
        version = (result.metadata.resource_version if result.metadata else "") or ""
        return [pod_info(p) for p in result.items or []], version

    def pods_by_node(self) -> dict[str, list[PodInfo]]:
        """Every bound pod of the cluster, grouped by node name (one list call)."""
        result = k8s.call(self.core.list_pod_for_all_namespaces)
        grouped: dict[str, list[PodInfo]] = {}
        for pod in result.items or []:
            info = pod_info(pod)
            if info.node:
                grouped.setdefault(info.node, []).append(info)
        return grouped

    def evict(self, pod: PodInfo, grace_seconds: int | None) -> None:
        """Ask the Eviction API to evict ``pod``; raises TooManyRequests when a PDB forbids it."""
        options = (
            client.V1DeleteOptions(grace_period_seconds=grace_seconds)
            if grace_seconds is not None
            else None
        )
        body = client.V1Eviction(
            api_version="policy/v1",
            kind="Eviction",
            metadata=client.V1ObjectMeta(name=pod.name, namespace=pod.namespace),
            delete_options=options,
        )
        k8s.call(self.core.create_namespaced_pod_eviction, pod.name, pod.namespace, body)

    def list_budgets(self) -> list[BudgetInfo]:
        """Every PodDisruptionBudget of the cluster."""
        policy = client.PolicyV1Api(self.core.api_client)
        result = k8s.call(policy.list_pod_disruption_budget_for_all_namespaces)
        budgets = []
        for item in result.items or []:
            spec, status = item.spec, item.status
            selector = spec.selector if spec else None
            budgets.append(
                BudgetInfo(
                    namespace=item.metadata.namespace or "default",
                    name=item.metadata.name,
                    match_labels=dict((selector.match_labels if selector else None) or {}),
                    max_unavailable=spec.max_unavailable if spec else None,
                    min_available=spec.min_available if spec else None,
                    expected_pods=int((status.expected_pods if status else 0) or 0),
                    disruptions_allowed=int((status.disruptions_allowed if status else 0) or 0),
                )
            )
        return budgets

    def watch_pods_on_node(
        self, name: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[PodEvent]:
        """Pod events on node ``name`` after ``resource_version``, for up to ``timeout_seconds``."""
        events = k8s.stream(
            self.core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={name}",
            resource_version=resource_version,
            timeout_seconds=max(1, timeout_seconds),
            _request_timeout=timeout_seconds + 5,
        )
        for event in events:
            if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                obj = event["object"]
                version = (obj.metadata.resource_version if obj.metadata else "") or ""
                yield PodEvent(type=event["type"], pod=pod_info(obj), resource_version=version)
