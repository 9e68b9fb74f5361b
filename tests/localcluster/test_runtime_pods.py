"""Pods on the runtime: restart policies, init containers, logs, scheduling rules, Recreate.

Sources: https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/ (phases,
restartPolicy), https://kubernetes.io/docs/concepts/workloads/pods/init-containers/,
https://kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration/,
pkg/controller/deployment/recreate.go.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from .conftest import KUBECTL, runtime_present
from .runtime_support import (
    condition,
    deployment,
    processes_with,
    running_and_ready,
    wait_processes,
    watch_until,
)

pytestmark = pytest.mark.skipif(
    not runtime_present(), reason="the localcluster runtime is not in this checkout"
)


def named(core: client.CoreV1Api, namespace: str, name: str) -> Callable[..., Any]:
    """A list function over one pod."""

    def list_pods(**kwargs: Any) -> Any:
        return core.list_namespaced_pod(namespace, field_selector=f"metadata.name={name}", **kwargs)

    return list_pods


def shell_pod(name: str, script: str, restart_policy: str = "Never", **spec: Any) -> dict[str, Any]:
    """A pod running ``sh -c script`` (a command overrides the demo image's entrypoint)."""
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart_policy,
            "containers": [
                {"name": "main", "image": "demo/hello:1", "command": ["sh", "-c", script]}
            ],
            **spec,
        },
    }


def phase_is(name: str, wanted: str) -> Callable[[dict[str, Any]], bool]:
    """Predicate: pod ``name`` has reached phase ``wanted``."""
    return lambda ps: (ps.get(name, {}).get("status") or {}).get("phase") == wanted


def test_it_runs_init_containers_first_and_completes_a_never_restarting_pod(
    core: client.CoreV1Api, namespace: str
) -> None:
    body = shell_pod(
        "job",
        "echo main ran after init",
        initContainers=[
            {"name": "prepare", "image": "demo/hello:1", "command": ["sh", "-c", "echo preparing"]}
        ],
    )
    core.create_namespaced_pod(namespace, body)
    pod = watch_until(named(core, namespace, "job"), phase_is("job", "Succeeded"))["job"]
    init = pod["status"]["initContainerStatuses"][0]
    assert init["state"]["terminated"]["reason"] == "Completed"
    main = pod["status"]["containerStatuses"][0]
    assert main["state"]["terminated"]["exitCode"] == 0 and main["ready"] is False
    assert condition(pod, "Initialized")["status"] == "True"
    assert condition(pod, "Ready")["reason"] == "PodCompleted"
    assert core.read_namespaced_pod_log("job", namespace, container="prepare") == "preparing\n"
    assert "main ran after" in core.read_namespaced_pod_log("job", namespace, container="main")


def test_it_fails_a_never_restarting_pod_whose_container_exits_non_zero(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, shell_pod("fail", "echo bad >&2; exit 3"))
    pod = watch_until(named(core, namespace, "fail"), phase_is("fail", "Failed"))["fail"]
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


def test_it_restarts_on_failure_only_under_on_failure(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, shell_pod("retry", "exit 2", restart_policy="OnFailure"))
    pod = watch_until(
        named(core, namespace, "retry"),
        lambda ps: (
            (ps.get("retry", {}).get("status", {}).get("containerStatuses") or [{}])[0].get(
                "restartCount", 0
            )
            >= 1
        ),
    )["retry"]
    assert pod["status"]["phase"] == "Running"
    assert pod["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 2


def test_it_follows_a_running_containers_log(
    cluster_kubeconfig: Any, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(
        namespace,
        shell_pod(
            "ticker", "for i in 1 2 3; do echo tick $i; sleep 0.3; done", restart_policy="Never"
        ),
    )
    watch_until(
        named(core, namespace, "ticker"),
        lambda ps: phase_is("ticker", "Running")(ps) or phase_is("ticker", "Succeeded")(ps),
    )
    followed = subprocess.run(
        [KUBECTL, "--kubeconfig", str(cluster_kubeconfig), "logs", "-f", "ticker", "-n", namespace],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert followed.stdout.splitlines() == ["tick 1", "tick 2", "tick 3"]


def test_it_schedules_only_onto_nodes_whose_taints_the_pod_tolerates(
    core: client.CoreV1Api, namespace: str
) -> None:
    nodes = [n.metadata.name for n in core.list_node().items]
    taint = {"key": f"test-{namespace}", "value": "x", "effect": "NoSchedule"}
    for node in nodes:
        current = core.read_node(node).spec.taints or []
        core.patch_node(node, {"spec": {"taints": [*(t.to_dict() for t in current), taint]}})
    try:
        core.create_namespaced_pod(namespace, shell_pod("blocked", "sleep 30"))
        tolerating = shell_pod("tolerant", "sleep 30")
        tolerating["spec"]["tolerations"] = [
            {"key": taint["key"], "operator": "Exists", "effect": "NoSchedule"}
        ]
        core.create_namespaced_pod(namespace, tolerating)
        watch_until(named(core, namespace, "tolerant"), phase_is("tolerant", "Running"))
        blocked = watch_until(
            named(core, namespace, "blocked"),
            lambda ps: (
                (condition(ps.get("blocked", {}), "PodScheduled") or {}).get("reason")
                == "Unschedulable"
            ),
        )["blocked"]
        assert (
            f"had untolerated taint {{{taint['key']}: x}}"
            in condition(blocked, "PodScheduled")["message"]
        )
    finally:
        for node in nodes:
            kept = [
                t.to_dict() for t in core.read_node(node).spec.taints or [] if t.key != taint["key"]
            ]
            core.patch_node(node, {"spec": {"taints": kept or None}})
    # Lifting the taint lets the waiting pod in.
    watch_until(named(core, namespace, "blocked"), phase_is("blocked", "Running"))


def test_it_recreates_all_pods_at_once_under_the_recreate_strategy(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str, kubectl: Callable[..., Any]
) -> None:
    apps.create_namespaced_deployment(
        namespace, deployment("rec", replicas=2, strategy={"type": "Recreate"})
    )
    kubectl("rollout", "status", "deployment/rec", "-n", namespace, "--timeout=60s")
    apps.patch_namespaced_deployment(
        "rec",
        namespace,
        {
            "spec": {
                "template": {"spec": {"containers": [{"name": "app", "image": "demo/hello:2"}]}}
            }
        },
    )
    kubectl("rollout", "status", "deployment/rec", "-n", namespace, "--timeout=60s")

    def pods(**kwargs: Any) -> Any:
        return core.list_namespaced_pod(namespace, label_selector="app=rec", **kwargs)

    watch_until(pods, running_and_ready(2))
    messages = [
        e.message
        for e in core.list_namespaced_event(
            namespace, field_selector="involvedObject.kind=Deployment"
        ).items
        if e.reason == "ScalingReplicaSet"
    ]
    assert any("Scaled down replica set" in m and "from 2 to 0" in m for m in messages)
    assert sum(1 for m in messages if "from 0 to 2" in m) == 2


def test_it_runs_post_start_and_pre_stop_hooks(
    core: client.CoreV1Api, namespace: str, tmp_path: Any
) -> None:
    started, stopping = tmp_path / "post-start", tmp_path / "pre-stop"
    body = {
        "metadata": {"name": "hooked", "labels": {"app": "hooked"}},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "app",
                    "image": "demo/hello:1",
                    "lifecycle": {
                        "postStart": {
                            "exec": {"command": ["sh", "-c", f"echo $HOSTNAME > {started}"]}
                        },
                        "preStop": {"exec": {"command": ["sh", "-c", f"echo bye > {stopping}"]}},
                    },
                }
            ],
        },
    }
    core.create_namespaced_pod(namespace, body)
    watch_until(named(core, namespace, "hooked"), phase_is("hooked", "Running"))
    core.delete_namespaced_pod("hooked", namespace)
    watch_until(named(core, namespace, "hooked"), lambda ps: not ps, timeout=20)
    assert started.read_text() == "hooked\n"
    assert stopping.read_text() == "bye\n"


def test_it_crash_loops_a_container_whose_command_cannot_start(
    core: client.CoreV1Api, namespace: str
) -> None:
    body = shell_pod("nocmd", "unused", restart_policy="Always")
    body["spec"]["containers"][0]["command"] = ["/nonexistent/binary"]
    core.create_namespaced_pod(namespace, body)
    pod = watch_until(
        named(core, namespace, "nocmd"),
        lambda ps: (
            (ps.get("nocmd", {}).get("status", {}).get("containerStatuses") or [{}])[0]
            .get("state", {})
            .get("waiting", {})
            .get("reason")
            == "CrashLoopBackOff"
        ),
    )["nocmd"]
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert (last["reason"], last["exitCode"]) == ("StartError", 128)
    assert "/nonexistent/binary" in last["message"]


def test_it_holds_a_container_whose_config_map_is_missing_until_it_appears(
    core: client.CoreV1Api, namespace: str
) -> None:
    body = shell_pod("cfg", "echo value=$GREETING; sleep 30", restart_policy="Always")
    body["spec"]["containers"][0]["env"] = [
        {
            "name": "GREETING",
            "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "greeting"}},
        }
    ]
    core.create_namespaced_pod(namespace, body)

    def reason(ps: dict[str, Any]) -> str | None:
        statuses = ps.get("cfg", {}).get("status", {}).get("containerStatuses") or [{}]
        return statuses[0].get("state", {}).get("waiting", {}).get("reason")

    pod = watch_until(
        named(core, namespace, "cfg"), lambda ps: reason(ps) == "CreateContainerConfigError"
    )["cfg"]
    assert (
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
        == 'configmap "settings" not found'
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"greeting": "hi"}}
    )
    watch_until(named(core, namespace, "cfg"), phase_is("cfg", "Running"), timeout=30)
    assert "value=hi" in core.read_namespaced_pod_log("cfg", namespace)


def test_it_kills_at_once_when_a_graceful_deletion_is_forced(
    core: client.CoreV1Api, namespace: str
) -> None:
    marker = f"forced-{namespace}"
    body = shell_pod(
        "slowpoke", "trap '' TERM; while true; do sleep 0.2; done", restart_policy="Always"
    )
    body["spec"]["terminationGracePeriodSeconds"] = 60
    body["spec"]["containers"][0]["env"] = [{"name": "MARK", "value": marker}]
    core.create_namespaced_pod(namespace, body)
    watch_until(named(core, namespace, "slowpoke"), phase_is("slowpoke", "Running"))
    core.delete_namespaced_pod("slowpoke", namespace)
    assert len(processes_with(marker)) >= 1, (
        "SIGTERM is ignored: the pod waits out its grace period"
    )
    core.delete_namespaced_pod("slowpoke", namespace, grace_period_seconds=0)
    assert wait_processes(marker, timeout=10) == []


def test_it_restarts_a_container_whose_image_is_changed(
    core: client.CoreV1Api, namespace: str
) -> None:
    body = {
        "metadata": {"name": "swap", "labels": {"app": "swap"}},
        "spec": {"containers": [{"name": "app", "image": "demo/missing:1"}]},
    }
    core.create_namespaced_pod(namespace, body)
    watch_until(
        named(core, namespace, "swap"),
        lambda ps: (
            (ps.get("swap", {}).get("status", {}).get("containerStatuses") or [{}])[0]
            .get("state", {})
            .get("waiting", {})
            .get("reason")
            in ("ErrImagePull", "ImagePullBackOff")
        ),
    )
    # Fixing the image does not wait out the pull backoff.
    core.patch_namespaced_pod(
        "swap", namespace, {"spec": {"containers": [{"name": "app", "image": "demo/hello:1"}]}}
    )
    pod = watch_until(named(core, namespace, "swap"), running_and_ready(1), timeout=8)["swap"]
    assert pod["status"]["containerStatuses"][0]["image"] == "docker.io/demo/hello:1"
    core.patch_namespaced_pod(
        "swap", namespace, {"spec": {"containers": [{"name": "app", "image": "demo/hello:2"}]}}
    )
    pod = watch_until(
        named(core, namespace, "swap"),
        lambda ps: (
            running_and_ready(1)(ps)
            and ps["swap"]["status"]["containerStatuses"][0]["image"] == "docker.io/demo/hello:2"
        ),
    )["swap"]
    status = pod["status"]["containerStatuses"][0]
    # 143 when SIGTERM lands before the app has installed its handler.
    assert status["restartCount"] == 1 and status["lastState"]["terminated"]["exitCode"] in (0, 143)
    events = core.list_namespaced_event(namespace, field_selector="involvedObject.name=swap").items
    assert any(e.reason == "Killing" and "definition changed" in e.message for e in events)
