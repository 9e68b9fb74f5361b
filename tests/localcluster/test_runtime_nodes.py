"""Nodes on the runtime: drain through the Eviction API, PodDisruptionBudgets, node add and delete.

Sources: https://kubernetes.io/docs/tasks/administer-cluster/safely-drain-node/,
pkg/registry/core/pod/storage/eviction.go (429 while a budget allows no disruption),
pkg/controller/disruption/disruption.go (status fields), pkg/controller/podgc (pods of a
deleted node are deleted), staging/src/k8s.io/kubectl/pkg/drain.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.servers import LocalCluster

from .conftest import KUBECTL, runtime_present, validate
from .runtime_support import (
    condition,
    deployment,
    running_and_ready,
    running_cluster,
    wait_processes,
    watch_until,
    wire,
)

pytestmark = pytest.mark.skipif(
    not runtime_present(), reason="the localcluster runtime is not in this checkout"
)


@pytest.fixture(scope="module")
def node_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalCluster, client.ApiClient]]:
    """A private three-node cluster: these tests cordon, drain and delete nodes."""
    with running_cluster(tmp_path_factory.mktemp("nodes"), nodes=3) as pair:
        yield pair


@pytest.fixture
def ns(node_cluster: tuple[LocalCluster, client.ApiClient]) -> Iterator[str]:
    """A namespace in the private cluster."""
    core = client.CoreV1Api(node_cluster[1])
    name = f"n-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def run_kubectl(
    cluster: LocalCluster, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """kubectl against the private cluster (no check: callers assert on the outcome)."""
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(cluster.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def app_pods(core: client.CoreV1Api, namespace: str, app: str) -> Any:
    """A list function over one app's pods."""

    def list_pods(**kwargs: Any) -> Any:
        return core.list_namespaced_pod(namespace, label_selector=f"app={app}", **kwargs)

    return list_pods


def marked(name: str, marker: str, replicas: int) -> dict[str, Any]:
    """A hello Deployment whose processes carry ``marker`` in their environment."""
    body = deployment(name, replicas=replicas)
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "MESSAGE", "value": marker}
    ]
    return body


def test_it_brings_up_a_node_created_through_the_api(
    node_cluster: tuple[LocalCluster, client.ApiClient], ns: str
) -> None:
    core = client.CoreV1Api(node_cluster[1])
    core.create_node(
        {"metadata": {"name": "extra-1", "labels": {"localcluster.io/node-group": "extra"}}}
    )

    def nodes(**kwargs: Any) -> Any:
        return core.list_node(field_selector="metadata.name=extra-1", **kwargs)

    found = watch_until(
        nodes,
        lambda ns_: (condition(ns_.get("extra-1", {}), "Ready") or {}).get("status") == "True",
    )
    node = found["extra-1"]
    validate(node)
    labels = node["metadata"]["labels"]
    assert labels["localcluster.io/node-group"] == "extra"
    assert labels["localcluster.io/instance-id"].startswith("i-")
    assert labels["kubernetes.io/hostname"] == "extra-1"
    assert node["status"]["addresses"][0]["type"] == "InternalIP"
    assert node["status"]["addresses"][0]["address"].startswith("127.100.0.")
    assert {"cpu", "memory", "pods"} <= set(node["status"]["allocatable"])

    body = deployment("pinned", replicas=1)
    body["spec"]["template"]["spec"]["nodeSelector"] = {"localcluster.io/node-group": "extra"}
    client.AppsV1Api(node_cluster[1]).create_namespaced_deployment(ns, body)
    pods = watch_until(app_pods(core, ns, "pinned"), running_and_ready(1))
    assert next(iter(pods.values()))["spec"]["nodeName"] == "extra-1"
    core.delete_node("extra-1")


def test_it_drains_a_node_only_as_far_as_the_disruption_budget_allows(
    node_cluster: tuple[LocalCluster, client.ApiClient], ns: str
) -> None:
    cluster, api = node_cluster
    core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)
    apps.create_namespaced_deployment(ns, deployment("web", replicas=3))
    pods = watch_until(app_pods(core, ns, "web"), running_and_ready(3))
    policy.create_namespaced_pod_disruption_budget(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "web"}}},
        },
    )

    def budgets(**kwargs: Any) -> Any:
        return policy.list_namespaced_pod_disruption_budget(ns, **kwargs)

    pdbs = watch_until(
        budgets, lambda b: (b.get("web", {}).get("status") or {}).get("currentHealthy") == 3
    )
    validate(pdbs["web"])
    assert pdbs["web"]["status"]["disruptionsAllowed"] == 0
    assert pdbs["web"]["status"]["desiredHealthy"] == 3
    assert condition(pdbs["web"], "DisruptionAllowed")["reason"] == "InsufficientPods"

    victim = next(iter(pods.values()))
    node = victim["spec"]["nodeName"]
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_pod_eviction(
            victim["metadata"]["name"],
            ns,
            {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": victim["metadata"]["name"], "namespace": ns},
            },
        )
    assert refused.value.status == 429

    held = run_kubectl(cluster, "drain", node, "--ignore-daemonsets", "--timeout=4s")
    assert held.returncode != 0
    assert "disruption budget" in held.stderr or "global timeout" in held.stderr
    assert all(
        p.status.phase == "Running"
        for p in core.list_namespaced_pod(ns, label_selector="app=web").items
    )

    policy.patch_namespaced_pod_disruption_budget("web", ns, {"spec": {"minAvailable": 2}})
    drained = run_kubectl(
        cluster, "drain", node, "--ignore-daemonsets", "--timeout=60s", timeout=90
    )
    assert drained.returncode == 0, drained.stderr
    pods = watch_until(app_pods(core, ns, "web"), running_and_ready(3))
    assert all(p["spec"]["nodeName"] != node for p in pods.values()), (
        "evicted pods come back on other nodes"
    )
    cordoned = wire(core.read_node(node))
    assert cordoned["spec"]["unschedulable"] is True
    assert {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}.items() <= cordoned[
        "spec"
    ]["taints"][0].items()
    assert run_kubectl(cluster, "uncordon", node).returncode == 0


def test_it_reschedules_the_pods_of_a_deleted_node(
    node_cluster: tuple[LocalCluster, client.ApiClient], ns: str
) -> None:
    core, apps = client.CoreV1Api(node_cluster[1]), client.AppsV1Api(node_cluster[1])
    marker = f"node-loss-{uuid.uuid4().hex[:8]}"
    apps.create_namespaced_deployment(ns, marked("lost", marker, 2))
    pods = watch_until(app_pods(core, ns, "lost"), running_and_ready(2))
    node = next(iter(pods.values()))["spec"]["nodeName"]
    on_node = {name for name, p in pods.items() if p["spec"]["nodeName"] == node}

    core.delete_node(node)
    pods = watch_until(
        app_pods(core, ns, "lost"),
        lambda ps: running_and_ready(2)(ps) and not (set(ps) & on_node),
    )
    assert all(p["spec"]["nodeName"] != node for p in pods.values())
    # Only the two replacement processes remain; the lost node's are gone.
    assert len(wait_processes(marker, at_most=2)) == 2


def test_it_leaves_no_pod_process_behind_when_stopped(tmp_path: Path) -> None:
    marker = f"stop-{uuid.uuid4().hex[:8]}"
    with running_cluster(tmp_path, nodes=1) as (cluster, api):
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        apps.create_namespaced_deployment("default", marked("bye", marker, 2))
        watch_until(app_pods(core, "default", "bye"), running_and_ready(2))
        assert len(wait_processes(marker, at_most=2)) == 2
    assert wait_processes(marker) == []
