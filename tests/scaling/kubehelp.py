"""Test helpers for localcluster: create workloads, wait on them by watching, clean up."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any

from deployer import k8s
from deployer.errors import KubeError
from scaling.kube import LOCAL_GROUP_LABEL

NS = "default"
Pods = list[Any]


class Cluster:
    """Makes uniquely named objects in the default namespace and removes them afterwards."""

    def __init__(self) -> None:
        self.core = k8s.core_v1()
        self.apps = k8s.apps_v1()
        self.policy = k8s.policy_v1()
        self.deployments: list[str] = []
        self.pdbs: list[str] = []
        self.pods: list[str] = []
        self.cordoned: set[str] = set()

    def name(self, prefix: str) -> str:
        """A fresh object name."""
        return f"{prefix}-{secrets.token_hex(3)}"

    def deployment(
        self,
        replicas: int,
        image: str = "demo/hello:1",
        grace: int = 1,
        name: str | None = None,
        cpu: str = "5m",
        labels: dict[str, str] | None = None,
    ) -> str:
        """Create a Deployment; returns its name (also its ``app`` label); ``labels`` go on its pods."""
        name = name or self.name("web")
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name, **(labels or {})}},
                    "spec": {
                        "terminationGracePeriodSeconds": grace,
                        "containers": [
                            {
                                "name": "main",
                                "image": image,
                                "resources": {"requests": {"cpu": cpu, "memory": "8Mi"}},
                            }
                        ],
                    },
                },
            },
        }
        k8s.call(self.apps.create_namespaced_deployment, NS, body)
        self.deployments.append(name)
        return name

    def daemonset_pod(self, node: str) -> str:
        """A pod owned by a DaemonSet, bound to ``node`` (as the DaemonSet controller would)."""
        ds_name = self.name("agent")
        ds = {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": ds_name, "namespace": NS},
            "spec": {
                "selector": {"matchLabels": {"app": ds_name}},
                "template": {
                    "metadata": {"labels": {"app": ds_name}},
                    "spec": {"containers": [{"name": "a", "image": "demo/hello:1"}]},
                },
            },
        }
        created = k8s.call(self.apps.create_namespaced_daemon_set, NS, ds)
        owner = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": ds_name}
        owner.update(uid=created.metadata.uid, controller=True)
        return self.bare_pod(node, owner=owner, prefix=ds_name)

    def bare_pod(self, node: str, owner: dict[str, Any] | None = None, prefix: str = "bare") -> str:
        """A pod bound to ``node``; without ``owner`` no controller would replace it."""
        name = self.name(prefix)
        meta: dict[str, Any] = {"name": name, "namespace": NS, "labels": {"app": prefix}}
        if owner:
            meta["ownerReferences"] = [owner]
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {
                "nodeName": node,
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "demo/hello:1"}],
            },
        }
        k8s.call(self.core.create_namespaced_pod, NS, body)
        self.pods.append(name)
        return name

    def pdb(self, app: str, min_available: int) -> str:
        """A PodDisruptionBudget over ``app``'s pods."""
        name = self.name("pdb")
        body = {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": {"app": app}}},
        }
        k8s.call(self.policy.create_namespaced_pod_disruption_budget, NS, body)
        self.pdbs.append(name)
        return name

    def pods_of(self, app: str) -> Pods:
        """The pods labelled ``app``."""
        return list(k8s.call(self.core.list_namespaced_pod, NS, label_selector=f"app={app}").items)

    def wait_pods(self, app: str, predicate: Callable[[Pods], bool], timeout: float = 30.0) -> Pods:
        """Watch ``app``'s pods until ``predicate`` holds for the live ones; raise on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            listed = k8s.call(self.core.list_namespaced_pod, NS, label_selector=f"app={app}")
            pods = {p.metadata.uid: p for p in listed.items}
            if predicate(list(pods.values())):
                return list(pods.values())
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"pods of {app} never matched: {describe(list(pods.values()))}")
            with contextlib.suppress(KubeError):
                for event in k8s.stream(
                    self.core.list_namespaced_pod,
                    NS,
                    label_selector=f"app={app}",
                    resource_version=listed.metadata.resource_version,
                    timeout_seconds=max(1, int(min(left, 5))),
                ):
                    obj = event["object"]
                    if event["type"] == "DELETED":
                        pods.pop(obj.metadata.uid, None)
                    else:
                        pods[obj.metadata.uid] = obj
                    if predicate(list(pods.values())):
                        return list(pods.values())

    def wait_budget(
        self, name: str, predicate: Callable[[Any], bool], timeout: float = 20.0
    ) -> None:
        """Poll a budget's status until ``predicate`` holds (the disruption controller is async)."""
        deadline = time.monotonic() + timeout
        while True:
            budget = k8s.call(self.policy.read_namespaced_pod_disruption_budget, name, NS)
            if budget.status is not None and predicate(budget.status):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"budget {name} never matched: {budget.status}")
            time.sleep(0.1)

    def nodes(self, group: str = "default") -> list[str]:
        """Names of the nodes in localcluster node group ``group``."""
        listed = k8s.call(self.core.list_node, label_selector=f"{LOCAL_GROUP_LABEL}={group}")
        return sorted(n.metadata.name for n in listed.items)

    def unschedulable(self, node: str) -> bool:
        """True when ``node`` is cordoned."""
        return bool(k8s.call(self.core.read_node, node).spec.unschedulable)

    def cleanup(self) -> None:
        """Delete what the test created and uncordon every node."""
        for name in self.pdbs:
            with contextlib.suppress(KubeError):
                k8s.call(self.policy.delete_namespaced_pod_disruption_budget, name, NS)
        for name in self.deployments:
            with contextlib.suppress(KubeError):
                k8s.call(self.apps.delete_namespaced_deployment, name, NS)
        for name in self.pods:
            with contextlib.suppress(KubeError):
                k8s.call(self.core.delete_namespaced_pod, name, NS, grace_period_seconds=0)
        for node in k8s.call(self.core.list_node).items:
            group = (node.metadata.labels or {}).get(LOCAL_GROUP_LABEL, "")
            if group != "default":
                with contextlib.suppress(KubeError):
                    k8s.call(self.core.delete_node, node.metadata.name)
            elif node.spec.unschedulable:
                with contextlib.suppress(KubeError):
                    k8s.call(
                        self.core.patch_node, node.metadata.name, {"spec": {"unschedulable": None}}
                    )


def running(pods: Pods) -> Pods:
    """Pods that run and are not being deleted."""
    return [
        p
        for p in pods
        if p.status and p.status.phase == "Running" and not p.metadata.deletion_timestamp
    ]


def describe(pods: Pods) -> list[tuple[str, str, str]]:
    """(name, node, phase) of each pod, for failure messages."""
    return [
        (p.metadata.name, p.spec.node_name or "", p.status.phase if p.status else "") for p in pods
    ]
