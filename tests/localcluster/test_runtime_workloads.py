"""Workloads on the runtime: Deployments roll out, pods run as processes on their own IPs.

Sources: pkg/controller/deployment (sync.go, rolling.go, progress.go), pkg/kubelet
(kubelet_pods.go getPhase, status/generate.go conditions, kuberuntime backoff),
https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/ and
https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#failed-deployment.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from .conftest import runtime_present, validate
from .runtime_support import (
    condition,
    deployment,
    http_json,
    is_ready,
    running_and_ready,
    waiting_reason,
    watch_until,
    wire,
)

pytestmark = pytest.mark.skipif(
    not runtime_present(), reason="the localcluster runtime is not in this checkout"
)


def pods_of(core: client.CoreV1Api, namespace: str, app: str) -> Callable[..., Any]:
    """A list function for watch_until over one app's pods."""

    def list_pods(**kwargs: Any) -> Any:
        return core.list_namespaced_pod(namespace, label_selector=f"app={app}", **kwargs)

    return list_pods


def one_deployment(apps: client.AppsV1Api, namespace: str, name: str) -> Callable[..., Any]:
    """A list function for watch_until over one Deployment."""

    def list_deployments(**kwargs: Any) -> Any:
        return apps.list_namespaced_deployment(
            namespace, field_selector=f"metadata.name={name}", **kwargs
        )

    return list_deployments


def test_it_rolls_out_a_hello_deployment_with_each_pod_on_its_own_ip(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str, kubectl: Callable[..., Any]
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("hello", replicas=3))
    watch_until(
        one_deployment(apps, namespace, "hello"),
        lambda ds: (
            bool(ds)
            and (condition(ds["hello"], "Available") or {}).get("status") == "True"
            and ds["hello"]["status"].get("availableReplicas") == 3
        ),
    )
    kubectl("rollout", "status", "deployment/hello", "-n", namespace, "--timeout=60s")
    pods = watch_until(pods_of(core, namespace, "hello"), running_and_ready(3))
    ips = {p["status"]["podIP"] for p in pods.values()}
    assert len(ips) == 3, "every pod has its own address"
    for pod in pods.values():
        validate(pod)
        ip = pod["status"]["podIP"]
        assert ip.startswith("127.") and pod["status"]["podIPs"] == [{"ip": ip}]
        assert [c["type"] for c in pod["status"]["conditions"]] == [
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        ]
        status = pod["status"]["containerStatuses"][0]
        assert status["ready"] is True and status["started"] is True and status["restartCount"] == 0
        assert status["containerID"].startswith("containerd://")
        assert status["image"] == "docker.io/demo/hello:1"
        assert pod["metadata"]["labels"]["pod-template-hash"]
        assert http_json(ip) == (
            200,
            {"version": "1", "message": "Hello from demo/hello", "healthy": True},
        )
        assert http_json(ip, path="/")[1]["version"] == "1"

    apps.patch_namespaced_deployment(
        "hello",
        namespace,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "image": "demo/hello:2"}]}}
            }
        },
    )
    kubectl("rollout", "status", "deployment/hello", "-n", namespace, "--timeout=60s")
    pods = watch_until(
        pods_of(core, namespace, "hello"),
        lambda ps: (
            running_and_ready(3)(ps)
            and all(p["spec"]["containers"][0]["image"] == "demo/hello:2" for p in ps.values())
        ),
    )
    assert {http_json(p["status"]["podIP"])[1]["version"] for p in pods.values()} == {"2"}
    d = wire(apps.read_namespaced_deployment("hello", namespace))
    validate(d)
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert d["status"]["updatedReplicas"] == d["status"]["availableReplicas"] == 3
    assert condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
    replicasets = apps.list_namespaced_replica_set(namespace, label_selector="app=hello").items
    assert sorted(
        (rs.metadata.annotations["deployment.kubernetes.io/revision"], rs.spec.replicas)
        for rs in replicasets
    ) == [
        ("1", 0),
        ("2", 3),
    ]
    events = core.list_namespaced_event(
        namespace, field_selector="involvedObject.kind=Deployment"
    ).items
    assert any(
        e.reason == "ScalingReplicaSet" and "Scaled up replica set" in e.message for e in events
    )


def test_it_puts_a_crashing_container_into_crash_loop_back_off(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(
        namespace, deployment("crash", image="demo/crash:1", readiness=False)
    )
    pods = watch_until(
        pods_of(core, namespace, "crash"),
        lambda ps: len(ps) == 1 and waiting_reason(next(iter(ps.values()))) == "CrashLoopBackOff",
    )
    pod = next(iter(pods.values()))
    validate(pod)
    status = pod["status"]["containerStatuses"][0]
    assert pod["status"]["phase"] == "Running"
    assert status["restartCount"] >= 1 and status["ready"] is False
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["lastState"]["terminated"]["reason"] == "Error"
    assert re.match(
        r"back-off \d+s restarting failed container=app ", status["state"]["waiting"]["message"]
    )
    name = pod["metadata"]["name"]
    log = core.read_namespaced_pod_log(name, namespace, container="app", previous=True)
    assert "this image always exits with status 1" in log
    events = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name}"
    ).items
    assert any(e.reason == "BackOff" and e.type == "Warning" for e in events)


def test_it_never_readies_a_broken_app_and_reports_progress_deadline_exceeded(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str, kubectl: Callable[..., Any]
) -> None:
    apps.create_namespaced_deployment(
        namespace, deployment("broken", image="demo/broken:1", progressDeadlineSeconds=3)
    )
    ds = watch_until(
        one_deployment(apps, namespace, "broken"),
        lambda ds: (
            (condition(ds.get("broken", {}), "Progressing") or {}).get("reason")
            == "ProgressDeadlineExceeded"
        ),
        timeout=30,
    )
    progressing = condition(ds["broken"], "Progressing")
    assert progressing["status"] == "False"
    assert progressing["message"].endswith("has timed out progressing.")
    assert condition(ds["broken"], "Available")["status"] == "False"
    pod = next(
        iter(wire(core.list_namespaced_pod(namespace, label_selector="app=broken")).get("items"))
    )
    assert pod["status"]["phase"] == "Running" and not is_ready(pod)
    assert http_json(pod["status"]["podIP"]) == (
        503,
        {"version": "1", "message": "Hello from demo/broken", "healthy": False},
    )
    result = kubectl(
        "rollout", "status", "deployment/broken", "-n", namespace, "--timeout=10s", check=False
    )
    assert result.returncode != 0 and "exceeded its progress deadline" in result.stderr
    events = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={pod['metadata']['name']}"
    ).items
    assert any(e.reason == "Unhealthy" and "Readiness probe failed" in e.message for e in events)


def test_it_reports_err_image_pull_then_image_pull_back_off_for_an_unknown_image(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("nope", image="demo/does-not-exist:1"))
    seen: set[str] = set()

    def back_off(ps: dict[str, Any]) -> bool:
        for pod in ps.values():
            reason = waiting_reason(pod)
            if reason:
                seen.add(reason)
        return "ImagePullBackOff" in seen

    # ErrImagePull shows for a second before the backoff; the events keep it for sure.
    pods = watch_until(pods_of(core, namespace, "nope"), back_off)
    pod = next(iter(pods.values()))
    assert pod["status"]["phase"] == "Pending"
    assert (
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        == 'Back-off pulling image "demo/does-not-exist:1"'
    )
    events = core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={pod['metadata']['name']}"
    ).items
    assert any(e.reason == "Failed" and e.message == "Error: ErrImagePull" for e in events)


def test_it_keeps_a_pod_that_fits_nowhere_pending_and_says_why(
    core: client.CoreV1Api, namespace: str
) -> None:
    body = {
        "metadata": {"name": "huge", "labels": {"app": "huge"}},
        "spec": {
            "containers": [
                {"name": "app", "image": "demo/hello:1", "resources": {"requests": {"cpu": "500"}}}
            ]
        },
    }
    core.create_namespaced_pod(namespace, body)
    pods = watch_until(
        pods_of(core, namespace, "huge"),
        lambda ps: (
            (condition(ps.get("huge", {}), "PodScheduled") or {}).get("reason") == "Unschedulable"
        ),
    )
    cond = condition(pods["huge"], "PodScheduled")
    assert cond["status"] == "False"
    assert "Insufficient cpu" in cond["message"] and "nodes are available" in cond["message"]
    assert "nodeName" not in pods["huge"]["spec"]
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=huge").items
    assert any(e.reason == "FailedScheduling" and "Insufficient cpu" in e.message for e in events)


def test_it_lists_ready_and_unready_pods_in_endpoints_and_endpoint_slices(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    # Both Deployments' pods carry tier=web, which the Service selects.
    for body in (deployment("web", replicas=2), deployment("sick", image="demo/broken:1")):
        body["spec"]["template"]["metadata"]["labels"]["tier"] = "web"
        apps.create_namespaced_deployment(namespace, body)
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"tier": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
    )

    def endpoints(**kwargs: Any) -> Any:
        return core.list_namespaced_endpoints(
            namespace, field_selector="metadata.name=web", **kwargs
        )

    eps = watch_until(
        endpoints,
        lambda es: (
            "web" in es
            and len((es["web"].get("subsets") or [{}])[0].get("addresses") or []) == 2
            and len((es["web"].get("subsets") or [{}])[0].get("notReadyAddresses") or []) == 1
        ),
    )
    subset = eps["web"]["subsets"][0]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    web_ips = {
        p.status.pod_ip for p in core.list_namespaced_pod(namespace, label_selector="app=web").items
    }
    assert {a["ip"] for a in subset["addresses"]} == web_ips
    assert all(a["targetRef"]["kind"] == "Pod" and a["nodeName"] for a in subset["addresses"])
    slices = client.DiscoveryV1Api(core.api_client).list_namespaced_endpoint_slice(
        namespace, label_selector="kubernetes.io/service-name=web"
    )
    assert len(slices.items) == 1
    eps_slice = wire(slices.items[0])
    validate(eps_slice)
    assert eps_slice["addressType"] == "IPv4"
    ready = {e["addresses"][0]: e["conditions"] for e in eps_slice["endpoints"]}
    assert (
        sum(
            1 for c in ready.values() if c == {"ready": True, "serving": True, "terminating": False}
        )
        == 2
    )
    assert (
        sum(
            1
            for c in ready.values()
            if c == {"ready": False, "serving": False, "terminating": False}
        )
        == 1
    )


def test_it_stops_a_container_that_ignores_sigterm_after_the_grace_period(
    core: client.CoreV1Api, namespace: str
) -> None:
    marker = f"graceful-{uuid.uuid4().hex[:8]}"
    body = {
        "metadata": {"name": "stubborn", "labels": {"app": "stubborn"}},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [
                {
                    "name": "app",
                    "image": "demo/hello:1",
                    "command": [
                        "sh",
                        "-c",
                        f"trap 'echo got TERM' TERM; echo {marker}; while true; do sleep 0.2; done",
                    ],
                    "readinessProbe": {
                        "exec": {"command": ["sh", "-c", 'test -n "$HOSTNAME"']},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, body)
    watch_until(pods_of(core, namespace, "stubborn"), running_and_ready(1))
    assert marker in core.read_namespaced_pod_log("stubborn", namespace)
    deleted = wire(core.delete_namespaced_pod("stubborn", namespace))
    assert deleted["metadata"]["deletionGracePeriodSeconds"] == 2
    # Still there while the grace period runs, then removed by the kubelet.
    watch_until(pods_of(core, namespace, "stubborn"), lambda ps: not ps, timeout=15)


def test_it_restarts_a_container_whose_liveness_probe_fails(
    core: client.CoreV1Api, namespace: str
) -> None:
    body = {
        "metadata": {"name": "dead", "labels": {"app": "dead"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "app",
                    "image": "demo/hello:1",
                    "livenessProbe": {
                        "tcpSocket": {"port": 9999},
                        "periodSeconds": 1,
                        "failureThreshold": 1,
                    },
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, body)
    pods = watch_until(
        pods_of(core, namespace, "dead"),
        lambda ps: (
            bool(ps)
            and (ps["dead"]["status"].get("containerStatuses") or [{}])[0].get("restartCount", 0)
            >= 1
        ),
    )
    assert pods["dead"]["status"]["containerStatuses"][0]["lastState"]["terminated"][
        "exitCode"
    ] in (0, 137, 143)
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=dead").items
    assert any(e.reason == "Killing" and "failed liveness probe" in e.message for e in events)
    assert any(
        e.reason == "Unhealthy" and e.message.startswith("Liveness probe failed: dial tcp")
        for e in events
    )


def test_it_marks_a_terminating_pod_as_serving_but_not_ready_in_its_endpoint_slice(
    core: client.CoreV1Api, namespace: str
) -> None:
    body = {
        "metadata": {"name": "leaving", "labels": {"app": "leaving"}},
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "containers": [
                {
                    "name": "app",
                    "image": "demo/hello:1",
                    # A preStop pause keeps the pod terminating (and serving) for a while.
                    "lifecycle": {"preStop": {"sleep": {"seconds": 3}}},
                    "readinessProbe": {
                        "httpGet": {"path": "/health", "port": 8080},
                        "periodSeconds": 1,
                    },
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, body)
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "leaving"},
            "spec": {"selector": {"app": "leaving"}, "ports": [{"port": 8080}]},
        },
    )
    discovery = client.DiscoveryV1Api(core.api_client)

    def slices(**kwargs: Any) -> Any:
        return discovery.list_namespaced_endpoint_slice(
            namespace, label_selector="kubernetes.io/service-name=leaving", **kwargs
        )

    def conditions(found: dict[str, Any]) -> list[dict[str, Any]]:
        return [e["conditions"] for s in found.values() for e in s.get("endpoints") or []]

    watch_until(
        slices, lambda s: conditions(s) == [{"ready": True, "serving": True, "terminating": False}]
    )
    core.delete_namespaced_pod("leaving", namespace)
    watch_until(
        slices, lambda s: conditions(s) == [{"ready": False, "serving": True, "terminating": True}]
    )
    endpoints = wire(core.read_namespaced_endpoints("leaving", namespace))
    assert not endpoints.get("subsets"), "a terminating pod leaves the v1 Endpoints at once"
    watch_until(slices, lambda s: conditions(s) == [], timeout=20)
