"""Pod subresources: log, eviction (with PodDisruptionBudgets) and binding.

Sources: pkg/registry/core/pod/storage/eviction.go (429 "Cannot evict pod as it
would violate the pod's disruption budget."), pkg/registry/core/pod/rest/log.go
and https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#read-log-of-the-specified-pod,
https://kubernetes.io/docs/concepts/scheduling-eviction/api-eviction/.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from kubernetes import client

from tests.servers import LocalCluster

from .conftest import controllers_running, validate, wait_for
from .test_api_crud import deployment_body, pod_body


def held_pod(
    core: client.CoreV1Api, namespace: str, name: str, labels: dict[str, str] | None = None
) -> client.V1Pod:
    """A pod bound to a node no kubelet serves, kept by a finalizer so tests control it."""
    body = pod_body(name, labels or {"app": "held"}, nodeName="ghost-node")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    return core.create_namespaced_pod(namespace, body)


def release(core: client.CoreV1Api, namespace: str, name: str) -> None:
    """Drop the test finalizer and delete the pod for good."""
    core.patch_namespaced_pod(name, namespace, {"metadata": {"finalizers": None}})
    try:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    except client.ApiException as exc:
        assert exc.status == 404


def write_log(
    cluster: LocalCluster, namespace: str, pod: str, container: str, lines: list[str]
) -> Path:
    """Write CRI-format log records where the kubelet would (Store.log_path)."""
    assert cluster.state_dir is not None
    path = cluster.state_dir / "logs" / namespace / pod / f"{container}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        for i, line in enumerate(lines):
            fh.write(f"2026-01-01T00:00:{i:02d}.000000001Z stdout F {line}\n")
    return path


@pytest.fixture
def local_only(cluster: LocalCluster) -> LocalCluster:
    """Skip tests that write kubelet files themselves when the cluster is not a local one."""
    if cluster.state_dir is None:
        pytest.skip("writes kubelet log files; needs a localcluster")
    return cluster


def test_it_serves_pod_logs_with_tail_and_timestamps(
    core: client.CoreV1Api, namespace: str, local_only: LocalCluster
) -> None:
    # log.go: tailLines, timestamps (RFC3339Nano prefix), limitBytes.
    held_pod(core, namespace, "logs")
    write_log(local_only, namespace, "logs", "app", ["one", "two", "three"])
    assert core.read_namespaced_pod_log("logs", namespace) == "one\ntwo\nthree\n"
    assert core.read_namespaced_pod_log("logs", namespace, tail_lines=2) == "two\nthree\n"
    stamped = core.read_namespaced_pod_log("logs", namespace, tail_lines=1, timestamps=True)
    assert stamped == "2026-01-01T00:00:02.000000001Z three\n"
    assert core.read_namespaced_pod_log("logs", namespace, limit_bytes=5) == "one\nt"
    release(core, namespace, "logs")


def test_it_follows_pod_logs(
    core: client.CoreV1Api, namespace: str, local_only: LocalCluster
) -> None:
    # follow=true streams lines as the container writes them.
    held_pod(core, namespace, "follow")
    path = write_log(local_only, namespace, "follow", "app", ["first"])
    resp = core.read_namespaced_pod_log("follow", namespace, follow=True, _preload_content=False)
    got = b""
    appended = threading.Timer(
        0.2, lambda: write_log(local_only, namespace, "follow", "app", ["second"])
    )
    appended.start()
    try:
        for chunk in resp.stream(decode_content=False, amt=None) if hasattr(resp, "stream") else []:
            got += chunk
            if b"second\n" in got:
                break
    finally:
        resp.close()
        appended.cancel()
    assert got == b"first\nsecond\n"
    assert path.exists()
    release(core, namespace, "follow")


def test_it_requires_a_container_name_for_multi_container_pods(
    core: client.CoreV1Api, namespace: str
) -> None:
    # log.go: "a container name must be specified for pod X, choose one of: [a b]".
    body = pod_body("multi", schedulerName="nobody")
    body["spec"]["containers"] = [{"name": "a", "image": "x:1"}, {"name": "b", "image": "x:1"}]
    core.create_namespaced_pod(namespace, body)
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_pod_log("multi", namespace)
    assert err.value.status == 400
    status = json.loads(err.value.body)
    validate(status)
    assert (
        status["message"]
        == "a container name must be specified for pod multi, choose one of: [a b]"
    )


def test_eviction_is_refused_with_429_while_the_budget_allows_no_disruption(
    core: client.CoreV1Api,
    policy: client.PolicyV1Api,
    apps: client.AppsV1Api,
    cluster: LocalCluster,
    namespace: str,
) -> None:
    # eviction.go: disruptionsAllowed == 0 -> 429 TooManyRequests with the DisruptionBudget cause;
    # otherwise the pod is deleted with its grace period and the budget decremented.
    pdb = {
        "metadata": {"name": "budget"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "guarded"}}},
    }
    if controllers_running(cluster):
        apps.create_namespaced_deployment(
            namespace, deployment_body("guarded", replicas=2, image="demo/hello:1")
        )
        policy.create_namespaced_pod_disruption_budget(namespace, pdb)
        wait_for(
            policy.list_namespaced_pod_disruption_budget,
            namespace,
            name="budget",
            check=lambda p: p.status.current_healthy == 2,
        )
        victim = (
            core.list_namespaced_pod(namespace, label_selector="app=guarded").items[0].metadata.name
        )
    else:
        victim = "guarded"
        held_pod(core, namespace, victim, {"app": "guarded"})
        core.patch_namespaced_pod_status(victim, namespace, {"status": {"phase": "Running"}})
        policy.create_namespaced_pod_disruption_budget(namespace, pdb)
        policy.patch_namespaced_pod_disruption_budget_status(
            "budget",
            namespace,
            {
                "status": {
                    "currentHealthy": 1,
                    "desiredHealthy": 2,
                    "disruptionsAllowed": 0,
                    "expectedPods": 1,
                }
            },
        )
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name=victim, namespace=namespace))
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod_eviction(victim, namespace, eviction)
    assert err.value.status == 429
    status = json.loads(err.value.body)
    validate(status)
    assert status["reason"] == "TooManyRequests"
    assert status["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert status["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert status["details"]["causes"][0]["message"].startswith(
        "The disruption budget budget needs 2 healthy pods"
    )

    policy.patch_namespaced_pod_disruption_budget(
        "budget", namespace, {"spec": {"minAvailable": 1}}
    )
    if controllers_running(cluster):
        wait_for(
            policy.list_namespaced_pod_disruption_budget,
            namespace,
            name="budget",
            check=lambda p: (p.status.disruptions_allowed or 0) >= 1,
        )
    else:
        policy.patch_namespaced_pod_disruption_budget_status(
            "budget", namespace, {"status": {"disruptionsAllowed": 1}}
        )
    core.create_namespaced_pod_eviction(victim, namespace, eviction)
    if not controllers_running(cluster):
        pod = core.read_namespaced_pod(victim, namespace)
        assert pod.metadata.deletion_timestamp is not None
        budget = policy.read_namespaced_pod_disruption_budget("budget", namespace)
        assert budget.status.disruptions_allowed == 0
        assert victim in budget.status.disrupted_pods
        release(core, namespace, victim)


def test_eviction_of_a_missing_pod_is_not_found(core: client.CoreV1Api, namespace: str) -> None:
    # eviction.go looks the pod up first.
    eviction = client.V1Eviction(metadata=client.V1ObjectMeta(name="nope", namespace=namespace))
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod_eviction("nope", namespace, eviction)
    assert err.value.status == 404


def test_binding_sets_the_node_once(core: client.CoreV1Api, namespace: str) -> None:
    # pkg/registry/core/pod/storage BindingREST: a second binding is a Conflict.
    body = pod_body("bind", schedulerName="nobody")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    core.create_namespaced_pod(namespace, body)
    target = client.V1ObjectReference(kind="Node", name="ghost-node")
    body = client.V1Binding(metadata=client.V1ObjectMeta(name="bind"), target=target)
    # The real server answers a Success Status, which the client cannot read as V1Binding
    # (kubernetes-client/python#825), hence the raw response.
    resp = core.create_namespaced_pod_binding("bind", namespace, body, _preload_content=False)
    assert resp.status == 201
    assert json.loads(resp.data)["status"] == "Success"
    assert core.read_namespaced_pod("bind", namespace).spec.node_name == "ghost-node"
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod_binding("bind", namespace, body)
    assert err.value.status == 409
    release(core, namespace, "bind")
