"""Create, read, update and patch through the official client.

Sources: https://kubernetes.io/docs/reference/using-api/api-concepts/,
staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go (Create,
Update, optimistic concurrency), staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go
(messages), pkg/apis/apps/validation/validation.go.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from .conftest import validate, wait_for


def pod_body(
    name: str | None = None, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    """A minimal Pod manifest."""
    meta: dict[str, Any] = {"labels": labels or {"app": "demo"}}
    if name:
        meta["name"] = name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "demo/none:1"}], **spec},
    }


def deployment_body(
    name: str, app: str | None = None, replicas: int = 1, image: str = "demo/none:1"
) -> dict[str, Any]:
    """A minimal Deployment manifest."""
    app = app or name
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": {
                "metadata": {"labels": {"app": app}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": image, "env": [{"name": "A", "value": "1"}]}
                    ]
                },
            },
        },
    }


def status_of(exc: client.ApiException) -> dict[str, Any]:
    """The Status body of an API error, validated."""
    body = json.loads(exc.body)
    validate(body)
    return body


def test_it_creates_a_pod_with_server_fields(core: client.CoreV1Api, namespace: str) -> None:
    # store.go BeforeCreate: uid, creationTimestamp, resourceVersion are set by the server.
    pod = core.create_namespaced_pod(namespace, pod_body("p1"))
    validate(pod)
    assert pod.metadata.uid
    assert pod.metadata.creation_timestamp is not None
    assert int(pod.metadata.resource_version) > 0
    assert pod.status.phase == "Pending"
    assert pod.spec.restart_policy == "Always"


def test_it_generates_names_from_generate_name(core: client.CoreV1Api, namespace: str) -> None:
    # names.SimpleNameGenerator: prefix plus 5 random characters.
    body = pod_body()
    body["metadata"]["generateName"] = "web-"
    pod = core.create_namespaced_pod(namespace, body)
    assert pod.metadata.name.startswith("web-")
    assert len(pod.metadata.name) == len("web-") + 5


def test_it_refuses_a_duplicate_name_with_already_exists(
    core: client.CoreV1Api, namespace: str
) -> None:
    # errors.NewAlreadyExists: 409, reason AlreadyExists.
    core.create_namespaced_pod(namespace, pod_body("dup"))
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod(namespace, pod_body("dup"))
    assert err.value.status == 409
    body = status_of(err.value)
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'pods "dup" already exists'
    assert body["details"] == {"name": "dup", "kind": "pods"}


def test_it_answers_not_found_for_a_missing_object(apps: client.AppsV1Api, namespace: str) -> None:
    # errors.NewNotFound with the group-qualified resource.
    with pytest.raises(client.ApiException) as err:
        apps.read_namespaced_deployment("missing", namespace)
    assert err.value.status == 404
    body = status_of(err.value)
    assert body["message"] == 'deployments.apps "missing" not found'
    assert body["details"] == {"name": "missing", "group": "apps", "kind": "deployments"}


def test_it_refuses_a_stale_resource_version_with_conflict(
    core: client.CoreV1Api, namespace: str
) -> None:
    # store.go GuaranteedUpdate: a PUT with an old resourceVersion is a Conflict.
    cm = core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "c"}, "data": {"a": "1"}}
    )
    cm.data = {"a": "2"}
    core.replace_namespaced_config_map("c", namespace, cm)
    cm.data = {"a": "3"}
    with pytest.raises(client.ApiException) as err:
        core.replace_namespaced_config_map("c", namespace, cm)
    assert err.value.status == 409
    body = status_of(err.value)
    assert body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on configmaps "c": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


def test_it_bumps_generation_on_spec_changes_only(apps: client.AppsV1Api, namespace: str) -> None:
    # pkg/registry/apps/deployment/strategy.go PrepareForUpdate: generation+1 when spec changes.
    d = apps.create_namespaced_deployment(namespace, deployment_body("gen"))
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("gen", namespace, {"metadata": {"labels": {"x": "y"}}})
    assert d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("gen", namespace, {"spec": {"replicas": 3}})
    assert d.metadata.generation == 2
    validate(d)


def test_it_keeps_status_on_main_resource_updates(core: client.CoreV1Api, namespace: str) -> None:
    # pkg/registry/core/service/strategy.go: PUT on the resource keeps status;
    # PUT on /status changes only status. (A Service: no controller writes its status.)
    core.create_namespaced_service(
        namespace, {"metadata": {"name": "st"}, "spec": {"ports": [{"port": 80}]}}
    )
    s = core.read_namespaced_service("st", namespace)
    s.status = client.V1ServiceStatus(load_balancer={"ingress": [{"ip": "192.0.2.1"}]})
    s = core.replace_namespaced_service_status("st", namespace, s)
    assert s.status.load_balancer.ingress[0].ip == "192.0.2.1"
    s.status = client.V1ServiceStatus(load_balancer={})
    s.spec.ports[0].port = 81
    s = core.replace_namespaced_service("st", namespace, s)
    assert s.status.load_balancer.ingress[0].ip == "192.0.2.1"
    assert s.spec.ports[0].port == 81
    s.spec.ports[0].port = 82
    s = core.replace_namespaced_service_status("st", namespace, s)
    assert s.spec.ports[0].port == 81
    validate(s)


def test_it_merges_containers_by_name_in_a_strategic_merge_patch(
    apps: client.AppsV1Api, namespace: str
) -> None:
    # k8s.io/api/core/v1 types.go: containers patchMergeKey "name", env patchMergeKey "name".
    apps.create_namespaced_deployment(namespace, deployment_body("smp"))
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "demo/none:2",
                            "env": [{"name": "B", "value": "2"}],
                        }
                    ]
                }
            }
        }
    }
    d = apps.patch_namespaced_deployment("smp", namespace, patch)
    (c,) = d.spec.template.spec.containers
    assert c.image == "demo/none:2"
    assert [(e.name, e.value) for e in c.env] == [("A", "1"), ("B", "2")]
    validate(d)


def test_it_applies_json_merge_and_json_patches(
    raw: Callable[..., Any], apps: client.AppsV1Api, namespace: str
) -> None:
    # RFC 7386 replaces lists; RFC 6902 edits by pointer (patch.go, PatchType handling).
    apps.create_namespaced_deployment(namespace, deployment_body("mp"))
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/mp"
    merge = {"spec": {"template": {"spec": {"containers": [{"name": "other", "image": "x:1"}]}}}}
    r = raw("PATCH", path, json.dumps(merge), {"Content-Type": "application/merge-patch+json"})
    assert r.status == 200
    assert [c["name"] for c in r.json()["spec"]["template"]["spec"]["containers"]] == ["other"]
    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 4},
        {"op": "add", "path": "/metadata/labels/tier", "value": "web"},
    ]
    r = raw("PATCH", path, json.dumps(ops), {"Content-Type": "application/json-patch+json"})
    assert r.status == 200
    assert r.json()["spec"]["replicas"] == 4
    assert r.json()["metadata"]["labels"]["tier"] == "web"
    validate(r.json())


def test_it_refuses_unknown_patch_types_with_415(
    raw: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    # patch.go: an unsupported Content-Type is 415 UnsupportedMediaType.
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "c415"}})
    r = raw(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/configmaps/c415",
        "{}",
        {"Content-Type": "text/csv"},
    )
    assert r.status == 415
    assert r.json()["reason"] == "UnsupportedMediaType"
    validate(r.json())


def test_it_rejects_invalid_names_with_causes(core: client.CoreV1Api, namespace: str) -> None:
    # apimachinery/pkg/util/validation: IsDNS1123Subdomain; 422 with a cause per field.
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod(namespace, pod_body("Bad_Name"))
    assert err.value.status == 422
    body = status_of(err.value)
    assert body["reason"] == "Invalid"
    assert body["details"]["kind"] == "Pod"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert body["message"].startswith(
        'Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain'
    )


def test_it_requires_a_selector_that_matches_the_template(
    apps: client.AppsV1Api, namespace: str
) -> None:
    # apps/validation: ValidateDeploymentSpec "`selector` does not match template `labels`".
    body = deployment_body("sel")
    body["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(client.ApiException) as err:
        apps.create_namespaced_deployment(namespace, body)
    assert err.value.status == 422
    causes = status_of(err.value)["details"]["causes"]
    assert {
        "reason": "FieldValueInvalid",
        "field": "spec.template.metadata.labels",
    }.items() <= causes[0].items()
    assert "`selector` does not match template `labels`" in causes[0]["message"]


def test_it_reports_missing_required_fields(core: client.CoreV1Api, namespace: str) -> None:
    # core/validation: containers and image are required.
    body = pod_body("noimage")
    body["spec"]["containers"] = [{"name": "app"}]
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_pod(namespace, body)
    assert err.value.status == 422
    causes = status_of(err.value)["details"]["causes"]
    assert causes == [
        {
            "reason": "FieldValueRequired",
            "message": "Required value",
            "field": "spec.containers[0].image",
        }
    ]


def test_it_reads_and_writes_the_scale_subresource(apps: client.AppsV1Api, namespace: str) -> None:
    # pkg/registry/apps/deployment/storage ScaleREST: autoscaling/v1 Scale.
    apps.create_namespaced_deployment(namespace, deployment_body("sc", replicas=2))
    scale = apps.read_namespaced_deployment_scale("sc", namespace)
    validate(scale)
    assert scale.spec.replicas == 2
    assert scale.status.selector == "app=sc"
    apps.patch_namespaced_deployment_scale("sc", namespace, {"spec": {"replicas": 5}})
    assert apps.read_namespaced_deployment("sc", namespace).spec.replicas == 5


def test_it_allocates_cluster_ips_and_defaults_service_ports(
    core: client.CoreV1Api, namespace: str
) -> None:
    # pkg/registry/core/service: ClusterIP allocation, targetPort defaults to port.
    svc = core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        },
    )
    validate(svc)
    assert svc.spec.cluster_ip.count(".") == 3
    assert svc.spec.ports[0].target_port == 80
    assert svc.spec.type == "ClusterIP"


def test_it_stores_every_served_kind(
    core: client.CoreV1Api, api_client: client.ApiClient, namespace: str
) -> None:
    # Each kind round-trips and validates against its schema.
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "s"}, "stringData": {"a": "b"}, "data": {"x": "eA=="}}
    )
    core.create_namespaced_endpoints(namespace, {"metadata": {"name": "e"}, "subsets": []})
    core.create_namespaced_event(
        namespace,
        {
            "metadata": {"name": "ev1"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": namespace},
            "reason": "Test",
            "message": "m",
        },
    )
    client.DiscoveryV1Api(api_client).create_namespaced_endpoint_slice(
        namespace, {"metadata": {"name": "es"}, "addressType": "IPv4", "endpoints": []}
    )
    client.PolicyV1Api(api_client).create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": "pdb"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}},
        },
    )
    client.AppsV1Api(api_client).create_namespaced_daemon_set(
        namespace,
        {
            "metadata": {"name": "ds"},
            "spec": {
                "selector": {"matchLabels": {"app": "ds"}},
                "template": {
                    "metadata": {"labels": {"app": "ds"}},
                    "spec": {"containers": [{"name": "c", "image": "demo/none:1"}]},
                },
            },
        },
    )
    for obj in (
        core.read_namespaced_secret("s", namespace),
        core.read_namespaced_endpoints("e", namespace),
        core.read_namespaced_event("ev1", namespace),
        client.DiscoveryV1Api(api_client).read_namespaced_endpoint_slice("es", namespace),
        client.PolicyV1Api(api_client).read_namespaced_pod_disruption_budget("pdb", namespace),
        client.AppsV1Api(api_client).read_namespaced_daemon_set("ds", namespace),
    ):
        validate(obj)


def test_pod_spec_updates_are_limited_to_images_and_a_few_fields(
    core: client.CoreV1Api, namespace: str
) -> None:
    # core/validation ValidatePodUpdate: only images, activeDeadlineSeconds, added tolerations...
    body = pod_body("imm", schedulerName="nobody")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    core.create_namespaced_pod(namespace, body)
    core.patch_namespaced_pod(
        "imm", namespace, {"spec": {"containers": [{"name": "app", "image": "demo/none:2"}]}}
    )
    assert core.read_namespaced_pod("imm", namespace).spec.containers[0].image == "demo/none:2"
    with pytest.raises(client.ApiException) as err:
        core.patch_namespaced_pod("imm", namespace, {"spec": {"restartPolicy": "Never"}})
    assert err.value.status == 422
    status = status_of(err.value)
    assert status["details"]["causes"][0]["reason"] == "FieldValueForbidden"
    assert "pod updates may not change fields other than" in status["message"]
    pod = core.read_namespaced_pod("imm", namespace)
    pod.metadata.labels = {"changed": "yes"}
    assert core.replace_namespaced_pod("imm", namespace, pod).metadata.labels == {"changed": "yes"}
    core.patch_namespaced_pod("imm", namespace, {"metadata": {"finalizers": None}})


def test_every_namespace_gets_a_default_service_account(
    core: client.CoreV1Api, namespace: str
) -> None:
    # pkg/controller/serviceaccount (tokens_controller/serviceaccounts_controller): "default" per namespace.
    sa = wait_for(
        core.list_namespaced_service_account,
        namespace,
        name="default",
        check=lambda found: found.metadata.namespace == namespace,
    )
    validate(sa)
    assert (sa.metadata.name, sa.metadata.namespace) == ("default", namespace)
    assert sa.metadata.uid and sa.metadata.creation_timestamp is not None
    assert (
        core.read_namespaced_service_account("default", namespace).metadata.uid == sa.metadata.uid
    )
    # The namespace is fresh: the controller's account is the only one in it.
    listed = core.list_namespaced_service_account(namespace).items
    assert [found.metadata.name for found in listed] == ["default"]
