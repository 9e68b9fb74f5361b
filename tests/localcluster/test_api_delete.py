"""Deletion: response bodies, graceful pod deletion, finalizers, propagation, namespaces.

Sources: staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go
(Delete, finalizeDelete: the object when ReturnDeletedObject, else a Success
Status), staging/src/k8s.io/apiserver/pkg/registry/rest/delete.go (graceful
deletion), pkg/registry/core/pod/strategy.go (CheckGracefulDelete),
https://kubernetes.io/docs/concepts/architecture/garbage-collection/,
pkg/controller/namespace, plugin/pkg/admission/namespace/lifecycle.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from .conftest import validate, wait_deleted
from .test_api_crud import deployment_body, pod_body


def owned_configmap(name: str, owner: client.V1ConfigMap, block: bool = False) -> dict[str, Any]:
    """A ConfigMap whose ownerReference points at ``owner``."""
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
    }
    if block:
        ref["blockOwnerDeletion"] = True
    return {"metadata": {"name": name, "ownerReferences": [ref]}}


def test_deleting_a_configmap_answers_a_success_status(
    raw: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    # finalizeDelete: kinds without ReturnDeletedObject answer Status{Success, details}.
    cm = core.create_namespaced_config_map(namespace, {"metadata": {"name": "gone"}})
    r = raw("DELETE", f"/api/v1/namespaces/{namespace}/configmaps/gone")
    assert r.status == 200
    body = r.json()
    validate(body)
    assert body["status"] == "Success"
    assert body["details"] == {"name": "gone", "kind": "configmaps", "uid": cm.metadata.uid}


def test_deleting_a_deployment_answers_a_status_with_its_group(
    raw: Callable[..., Any], apps: client.AppsV1Api, namespace: str
) -> None:
    # Deployment storage has no ReturnDeletedObject.
    d = apps.create_namespaced_deployment(namespace, deployment_body("del"))
    body = raw("DELETE", f"/apis/apps/v1/namespaces/{namespace}/deployments/del").json()
    validate(body)
    assert body["details"] == {
        "name": "del",
        "group": "apps",
        "kind": "deployments",
        "uid": d.metadata.uid,
    }


def test_deleting_a_service_returns_the_service(
    raw: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    # pkg/registry/core/service/storage/storage.go: ReturnDeletedObject: true.
    core.create_namespaced_service(
        namespace, {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}}
    )
    body = raw("DELETE", f"/api/v1/namespaces/{namespace}/services/svc").json()
    validate(body)
    assert body["kind"] == "Service"


def test_deleting_an_unscheduled_pod_removes_it_at_once(
    core: client.CoreV1Api, namespace: str
) -> None:
    # CheckGracefulDelete: a pod without spec.nodeName is deleted with grace 0; the pod is returned.
    core.create_namespaced_pod(namespace, pod_body("unbound", schedulerName="nobody"))
    deleted = core.delete_namespaced_pod("unbound", namespace)
    validate(deleted)
    assert deleted.kind == "Pod"
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_pod("unbound", namespace)
    assert err.value.status == 404


def test_deleting_a_bound_pod_waits_for_the_kubelet(core: client.CoreV1Api, namespace: str) -> None:
    # CheckGracefulDelete: a bound pod gets deletionTimestamp and deletionGracePeriodSeconds
    # (its terminationGracePeriodSeconds) and stays until a delete with grace 0. A finalizer
    # keeps the object observable even if a kubelet completes the deletion meanwhile.
    nodes = [n.metadata.name for n in core.list_node().items]
    # A real node if there is one: a runtime fails pods bound to unknown nodes (grace 0 then).
    body = pod_body(
        "bound", nodeName=nodes[0] if nodes else "ghost-node", terminationGracePeriodSeconds=45
    )
    body["metadata"]["finalizers"] = ["example.com/hold"]
    core.create_namespaced_pod(namespace, body)
    deleted = core.delete_namespaced_pod("bound", namespace)
    validate(deleted)
    assert deleted.metadata.deletion_timestamp is not None
    assert deleted.metadata.deletion_grace_period_seconds == 45
    shorter = core.delete_namespaced_pod("bound", namespace, grace_period_seconds=5)
    assert shorter.metadata.deletion_grace_period_seconds <= 5
    core.delete_namespaced_pod("bound", namespace, grace_period_seconds=0)
    assert core.read_namespaced_pod("bound", namespace).metadata.deletion_grace_period_seconds == 0
    core.patch_namespaced_pod("bound", namespace, {"metadata": {"finalizers": None}})
    wait_deleted(core.list_namespaced_pod, namespace, name="bound")


def test_a_finalizer_holds_deletion_until_removed(core: client.CoreV1Api, namespace: str) -> None:
    # store.go: with finalizers, Delete only sets deletionTimestamp; the last finalizer's removal deletes.
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}
    )
    # The client types this call as V1Status; a held object comes back as the object (a dict).
    deleted = core.delete_namespaced_config_map("held", namespace)
    assert deleted["metadata"]["deletionTimestamp"]
    held = core.read_namespaced_config_map("held", namespace)
    assert held.metadata.deletion_timestamp is not None
    assert held.metadata.finalizers == ["example.com/hold"]
    core.patch_namespaced_config_map("held", namespace, {"metadata": {"finalizers": None}})
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_config_map("held", namespace)
    assert err.value.status == 404


def test_background_propagation_deletes_dependents(core: client.CoreV1Api, namespace: str) -> None:
    # garbage-collection docs: Background deletes the owner now, dependents after.
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(namespace, owned_configmap("dep1", owner))
    core.create_namespaced_config_map(namespace, owned_configmap("dep2", owner))
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")
    wait_deleted(core.list_namespaced_config_map, namespace, name="dep1")
    wait_deleted(core.list_namespaced_config_map, namespace, name="dep2")


def test_orphan_propagation_keeps_dependents_without_owner_references(
    core: client.CoreV1Api, namespace: str
) -> None:
    # Orphan: the "orphan" finalizer; GC strips ownerReferences, then the owner goes.
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(namespace, owned_configmap("kept", owner))
    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Orphan")
    wait_deleted(core.list_namespaced_config_map, namespace, name="owner")
    kept = core.read_namespaced_config_map("kept", namespace)
    assert not kept.metadata.owner_references


def test_foreground_propagation_returns_the_owner_then_deletes_dependents_first(
    raw: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    # Foreground: the owner is returned with deletionTimestamp and the foregroundDeletion finalizer.
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(namespace, owned_configmap("child", owner, block=True))
    r = raw(
        "DELETE",
        f"/api/v1/namespaces/{namespace}/configmaps/owner",
        {"propagationPolicy": "Foreground"},
    )
    assert r.status == 200
    body = r.json()
    validate(body)
    assert body["kind"] == "ConfigMap"
    assert body["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert body["metadata"]["deletionTimestamp"]
    wait_deleted(core.list_namespaced_config_map, namespace, name="owner")
    with pytest.raises(client.ApiException):
        core.read_namespaced_config_map("child", namespace)


def test_delete_deployment_with_each_propagation_policy(
    apps: client.AppsV1Api, namespace: str
) -> None:
    # The client's delete_namespaced_deployment(propagation_policy=...) for each policy.
    for policy in ("Background", "Foreground", "Orphan"):
        name = f"d-{policy.lower()}"
        apps.create_namespaced_deployment(namespace, deployment_body(name))
        apps.delete_namespaced_deployment(name, namespace, propagation_policy=policy)
        wait_deleted(apps.list_namespaced_deployment, namespace, name=name)


def test_deletecollection_deletes_matching_objects(core: client.CoreV1Api, namespace: str) -> None:
    # DeleteCollection honours label selectors.
    for name, tier in (("a", "x"), ("b", "x"), ("c", "y")):
        core.create_namespaced_config_map(
            namespace, {"metadata": {"name": name, "labels": {"tier": tier}}}
        )
    core.delete_collection_namespaced_config_map(namespace, label_selector="tier=x")
    names = [c.metadata.name for c in core.list_namespaced_config_map(namespace).items]
    assert "a" not in names and "b" not in names and "c" in names


def test_an_invalid_propagation_policy_is_refused(
    raw: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    # metav1 validation: propagationPolicy must be Foreground, Background or Orphan.
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "p"}})
    r = raw("DELETE", f"/api/v1/namespaces/{namespace}/configmaps/p?propagationPolicy=Sometimes")
    assert r.status == 400
    validate(r.json())


def test_a_terminating_namespace_refuses_new_content(core: client.CoreV1Api) -> None:
    # NamespaceLifecycle admission: 403 Forbidden while Terminating; the namespace goes once empty.
    ns = "term-" + __import__("uuid").uuid4().hex[:8]
    core.create_namespace({"metadata": {"name": ns}})
    core.create_namespaced_config_map(
        ns, {"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}
    )
    deleted = core.delete_namespace(ns)
    validate(deleted)
    assert deleted["status"]["phase"] == "Terminating"
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "new"}})
    assert err.value.status == 403
    body = json.loads(err.value.body)
    validate(body)
    assert body["message"] == (
        f'configmaps "new" is forbidden: unable to create new content in namespace {ns} because it is being terminated'
    )
    core.patch_namespaced_config_map("held", ns, {"metadata": {"finalizers": None}})
    wait_deleted(core.list_namespace, name=ns)


def test_creating_in_a_missing_namespace_is_not_found(core: client.CoreV1Api) -> None:
    # NamespaceLifecycle admission: namespaces "<ns>" not found.
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_config_map("no-such-ns", {"metadata": {"name": "x"}})
    assert err.value.status == 404
    assert json.loads(err.value.body)["message"] == 'namespaces "no-such-ns" not found'


def test_dependents_of_an_unserved_owner_kind_are_left_alone(
    core: client.CoreV1Api, namespace: str
) -> None:
    # garbagecollector: an owner whose kind cannot be resolved is not treated as deleted.
    ref = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "name": "w",
        "uid": "00000000-0000-0000-0000-000000000001",
    }
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "owned", "ownerReferences": [ref]}}
    )
    other = core.create_namespaced_config_map(namespace, {"metadata": {"name": "trigger"}})
    core.delete_namespaced_config_map("trigger", namespace)
    wait_deleted(core.list_namespaced_config_map, namespace, name=other.metadata.name)
    assert (
        core.read_namespaced_config_map("owned", namespace).metadata.owner_references[0].kind
        == "Widget"
    )


def test_the_default_namespace_may_not_be_deleted(core: client.CoreV1Api) -> None:
    # NamespaceLifecycle admission: default, kube-system and kube-public are immortal.
    with pytest.raises(client.ApiException) as err:
        core.delete_namespace("default")
    assert err.value.status == 403
    body = json.loads(err.value.body)
    validate(body)
    assert body["message"] == 'namespaces "default" is forbidden: this namespace may not be deleted'
