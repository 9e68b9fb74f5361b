"""kubectl (the machine's v1.32) against the cluster: get, apply, patch, delete, get -w,
cordon, drain, rollout status, wait.

Sources: https://kubernetes.io/docs/reference/kubectl/ (command behaviour),
staging/src/k8s.io/kubectl/pkg/cmd/apply (client-side apply: last-applied
annotation + strategic merge patch), staging/src/k8s.io/kubectl/pkg/drain
(eviction through policy/v1, DaemonSet pods skipped, waits for deletion).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, watch

from tests.servers import LocalCluster

from .conftest import KUBECTL, controllers_running, validate
from .test_api_crud import deployment_body

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def test_kubectl_get_lists_and_reads_objects(
    kubectl: Kubectl, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "one", "labels": {"k": "v"}}, "data": {"a": "1"}}
    )
    out = kubectl("get", "configmaps", "-n", namespace, "-o", "json").stdout
    listing = json.loads(out)
    assert listing["kind"] == "List"
    names = [i["metadata"]["name"] for i in listing["items"]]
    assert "one" in names
    single = json.loads(kubectl("get", "configmap", "one", "-n", namespace, "-o", "json").stdout)
    validate(single)
    assert kubectl("get", "cm", "-n", namespace, "-l", "k=v", "-o", "name").stdout.split() == [
        "configmap/one"
    ]
    missing = kubectl("get", "configmap", "nope", "-n", namespace, check=False)
    assert missing.returncode == 1
    assert 'configmaps "nope" not found' in missing.stderr


def test_kubectl_apply_creates_then_patches_with_last_applied(
    kubectl: Kubectl, apps: client.AppsV1Api, namespace: str, tmp_path: Path
) -> None:
    manifest = deployment_body("applied", replicas=1)
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump(manifest))
    assert "created" in kubectl("apply", "-n", namespace, "-f", str(path)).stdout
    d = apps.read_namespaced_deployment("applied", namespace)
    assert "kubectl.kubernetes.io/last-applied-configuration" in d.metadata.annotations
    manifest["spec"]["replicas"] = 3
    manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "B", "value": "2"}]
    path.write_text(yaml.safe_dump(manifest))
    assert "configured" in kubectl("apply", "-n", namespace, "-f", str(path)).stdout
    d = apps.read_namespaced_deployment("applied", namespace)
    assert d.spec.replicas == 3
    assert [(e.name, e.value) for e in d.spec.template.spec.containers[0].env] == [("B", "2")]
    assert "unchanged" in kubectl("apply", "-n", namespace, "-f", str(path)).stdout


def test_kubectl_apply_refuses_unknown_fields(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    # kubectl sends fieldValidation=Strict; the server rejects the unknown field.
    path = tmp_path / "cm.yaml"
    path.write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad"}, "bogus": 1}
        )
    )
    proc = kubectl("apply", "-n", namespace, "-f", str(path), check=False)
    assert proc.returncode != 0
    assert 'unknown field "bogus"' in proc.stderr


def test_kubectl_patch_with_each_patch_type(
    kubectl: Kubectl, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "p"}, "data": {"a": "1"}})
    kubectl("patch", "configmap", "p", "-n", namespace, "-p", '{"data":{"b":"2"}}')
    kubectl("patch", "configmap", "p", "-n", namespace, "--type=merge", "-p", '{"data":{"c":"3"}}')
    kubectl(
        "patch",
        "configmap",
        "p",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op":"remove","path":"/data/a"}]',
    )
    assert core.read_namespaced_config_map("p", namespace).data == {"b": "2", "c": "3"}


def test_kubectl_delete_removes_objects(
    kubectl: Kubectl, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "d1", "labels": {"x": "y"}}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "d2", "labels": {"x": "y"}}})
    out = kubectl("delete", "configmap", "-n", namespace, "-l", "x=y").stdout
    assert 'configmap "d1" deleted' in out and 'configmap "d2" deleted' in out
    assert [
        c.metadata.name
        for c in core.list_namespaced_config_map(namespace, label_selector="x=y").items
    ] == []


def test_kubectl_get_watch_prints_changes(
    cluster_kubeconfig: Path, kubectl_cache: Path, core: client.CoreV1Api, namespace: str
) -> None:
    proc = subprocess.Popen(
        [
            KUBECTL,
            "--kubeconfig",
            str(cluster_kubeconfig),
            "--cache-dir",
            str(kubectl_cache),
            "get",
            "configmaps",
            "-n",
            namespace,
            "-w",
            "-o",
            "name",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen: list[str] = []
        # The watch is running once kubectl has printed the existing objects (none here);
        # create until it reports one, so the test does not depend on kubectl's start-up time.
        timer = threading.Timer(
            1.0,
            lambda: core.create_namespaced_config_map(namespace, {"metadata": {"name": "watched"}}),
        )
        timer.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line.strip())
            if line.strip() == "configmap/watched":
                break
        timer.join()
        assert "configmap/watched" in seen
    finally:
        proc.terminate()
        proc.wait(10)


def make_node(core: client.CoreV1Api, name: str) -> None:
    """Create a Node through the API (a runtime brings it up as a simulated node)."""
    core.create_node(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        }
    )


def test_kubectl_cordon_and_uncordon(kubectl: Kubectl, core: client.CoreV1Api) -> None:
    name = f"cordon-{uuid.uuid4().hex[:6]}"
    make_node(core, name)
    try:
        assert f"node/{name} cordoned" in kubectl("cordon", name).stdout
        assert core.read_node(name).spec.unschedulable is True
        assert f"node/{name} uncordoned" in kubectl("uncordon", name).stdout
        assert not core.read_node(name).spec.unschedulable
    finally:
        core.delete_node(name)


def complete_deletions(core: client.CoreV1Api, namespace: str, stop: threading.Event) -> None:
    """Stand in for a kubelet: finish graceful pod deletions (only when no runtime runs pods)."""
    w = watch.Watch()
    while not stop.is_set():
        for ev in w.stream(core.list_namespaced_pod, namespace, timeout_seconds=1):
            pod = ev["object"]
            if ev["type"] == "MODIFIED" and pod.metadata.deletion_timestamp is not None:
                with contextlib.suppress(client.ApiException):
                    core.delete_namespaced_pod(pod.metadata.name, namespace, grace_period_seconds=0)
            if stop.is_set():
                w.stop()


def test_kubectl_drain_evicts_pods_and_skips_daemonset_pods(
    kubectl: Kubectl,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    cluster: LocalCluster,
    namespace: str,
) -> None:
    node = f"drain-{uuid.uuid4().hex[:6]}"
    make_node(core, node)
    stop = threading.Event()
    helper = None
    try:
        for i in range(2):
            core.create_namespaced_pod(
                namespace,
                {
                    "metadata": {"name": f"bare{i}"},
                    "spec": {
                        "nodeName": node,
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{"name": "app", "image": "demo/hello:1"}],
                    },
                },
            )
        ds = apps.create_namespaced_daemon_set(
            namespace,
            {
                "metadata": {"name": "agent"},
                "spec": {
                    "selector": {"matchLabels": {"app": "agent"}},
                    "template": {
                        "metadata": {"labels": {"app": "agent"}},
                        "spec": {"containers": [{"name": "a", "image": "demo/hello:1"}]},
                    },
                },
            },
        )
        owner = {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "name": "agent",
            "uid": ds.metadata.uid,
            "controller": True,
        }
        core.create_namespaced_pod(
            namespace,
            {
                "metadata": {
                    "name": "agent-x",
                    "labels": {"app": "agent"},
                    "ownerReferences": [owner],
                },
                "spec": {"nodeName": node, "containers": [{"name": "a", "image": "demo/hello:1"}]},
            },
        )
        if not controllers_running(cluster):
            helper = threading.Thread(
                target=complete_deletions, args=(core, namespace, stop), daemon=True
            )
            helper.start()
        proc = kubectl("drain", node, "--ignore-daemonsets", "--force", "--timeout=60s", timeout=90)
        assert f"node/{node} cordoned" in proc.stdout
        assert f"node/{node} drained" in proc.stdout
        assert "evicting pod" in proc.stderr + proc.stdout
        left = {
            p.metadata.name
            for p in core.list_namespaced_pod(
                namespace, field_selector=f"spec.nodeName={node}"
            ).items
        }
        assert "bare0" not in left and "bare1" not in left
        assert "agent-x" in left
        assert core.read_node(node).spec.unschedulable is True
    finally:
        stop.set()
        if helper is not None:
            helper.join(5)
        core.delete_node(node)


@pytest.fixture
def with_controllers(cluster: LocalCluster) -> None:
    """Skip unless controllers run (rollout status and wait need a deployment controller)."""
    if not controllers_running(cluster):
        pytest.skip("needs the localcluster runtime (deployment controller)")


def test_kubectl_rollout_status_and_wait_for_available(
    kubectl: Kubectl, apps: client.AppsV1Api, namespace: str, with_controllers: None
) -> None:
    apps.create_namespaced_deployment(
        namespace, deployment_body("rolled", replicas=2, image="demo/hello:1")
    )
    out = kubectl(
        "rollout", "status", "-n", namespace, "deployment/rolled", "--timeout=60s", timeout=90
    ).stdout
    assert 'deployment "rolled" successfully rolled out' in out
    out = kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Available",
        "deployment/rolled",
        "--timeout=60s",
        timeout=90,
    ).stdout
    assert "deployment.apps/rolled condition met" in out
    kubectl("set", "image", "-n", namespace, "deployment/rolled", "app=demo/hello:2")
    out = kubectl(
        "rollout", "status", "-n", namespace, "deployment/rolled", "--timeout=60s", timeout=90
    ).stdout
    assert "successfully rolled out" in out


def test_kubectl_get_prints_server_side_columns(
    kubectl: Kubectl, core: client.CoreV1Api, namespace: str
) -> None:
    # Server-side printing (meta.k8s.io/v1 Table, pkg/printers/internalversion/printers.go).
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )
    out = kubectl("get", "services", "-n", namespace).stdout.splitlines()
    assert out[0].split() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]
    assert out[1].split()[:2] == ["web", "ClusterIP"]
    assert out[1].split()[4] == "80/TCP"


def test_it_answers_a_table_accept_header_with_a_table(
    raw: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    # kubectl get's Accept header; the answer is a meta.k8s.io/v1 Table (no schema in kubernetes-validate).
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "t"}, "data": {"a": "1"}})
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    body = raw(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps", headers={"Accept": accept}
    ).json()
    assert body["kind"] == "Table"
    assert [c["name"] for c in body["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert body["rows"][0]["cells"][:2] == ["t", 1]
    assert body["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


def test_kubectl_create_subcommands_send_protobuf_that_is_understood(
    kubectl: Kubectl, core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str
) -> None:
    # kubectl's typed clients send application/vnd.kubernetes.protobuf bodies.
    kubectl("create", "configmap", "cm", "-n", namespace, "--from-literal=a=b")
    kubectl("create", "secret", "generic", "s", "-n", namespace, "--from-literal=a=b")
    kubectl(
        "create",
        "deployment",
        "web",
        "-n",
        namespace,
        "--image=demo/hello:1",
        "--replicas=2",
        "--port=8080",
    )
    assert core.read_namespaced_config_map("cm", namespace).data == {"a": "b"}
    secret = core.read_namespaced_secret("s", namespace)
    assert secret.data == {"a": "Yg=="} and secret.type == "Opaque"
    d = apps.read_namespaced_deployment("web", namespace)
    validate(d)
    assert d.spec.replicas == 2
    assert d.spec.selector.match_labels == {"app": "web"}
    (c,) = d.spec.template.spec.containers
    assert (c.name, c.image, c.ports[0].container_port) == ("hello", "demo/hello:1", 8080)


def test_server_side_dry_run_and_diff_store_nothing(
    kubectl: Kubectl, core: client.CoreV1Api, namespace: str, tmp_path: Path
) -> None:
    # api-concepts#dry-run: dryRun=All runs admission and validation, persists nothing.
    path = tmp_path / "cm.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "dry"},
                "data": {"a": "1"},
            }
        )
    )
    out = kubectl("apply", "-n", namespace, "--dry-run=server", "-f", str(path)).stdout
    assert "created (server dry run)" in out
    assert [
        c.metadata.name
        for c in core.list_namespaced_config_map(namespace).items
        if c.metadata.name == "dry"
    ] == []
    kubectl("apply", "-n", namespace, "-f", str(path))
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "dry"},
                "data": {"a": "2"},
            }
        )
    )
    diff = kubectl("diff", "-n", namespace, "-f", str(path), check=False)
    assert diff.returncode == 1, diff.stderr
    assert '-  a: "1"' in diff.stdout and '+  a: "2"' in diff.stdout
    assert core.read_namespaced_config_map("dry", namespace).data == {"a": "1"}
