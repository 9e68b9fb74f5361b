"""Discovery, health and version endpoints.

Sources: https://kubernetes.io/docs/reference/using-api/api-concepts/ (discovery),
staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/types.go (APIResourceList),
staging/src/k8s.io/apiserver/pkg/server/healthz (readyz/livez).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from .conftest import validate


def test_it_answers_readyz_and_livez(raw: Callable[..., Any]) -> None:
    # healthz.go: a healthy server answers 200 "ok".
    for path in ("/readyz", "/livez"):
        r = raw("GET", path)
        assert r.status == 200
        assert r.data == b"ok"


def test_it_reports_its_version(api_client: client.ApiClient) -> None:
    # staging/src/k8s.io/apimachinery/pkg/version/types.go: Info.
    info = client.VersionApi(api_client).get_code()
    assert info.major == "1"
    assert info.git_version.startswith("v1.")


def test_it_lists_the_core_group_versions(raw: Callable[..., Any]) -> None:
    # types.go APIVersions: /api lists "v1" and server addresses.
    body = raw("GET", "/api").json()
    validate(body)
    assert body["versions"] == ["v1"]


def test_it_lists_the_named_groups(raw: Callable[..., Any]) -> None:
    # types.go APIGroupList: every group served, with its preferred version.
    body = raw("GET", "/apis").json()
    validate(body)
    groups = {g["name"]: g for g in body["groups"]}
    for name in ("apps", "policy", "discovery.k8s.io"):
        assert groups[name]["preferredVersion"]["groupVersion"] == f"{name}/v1"


def test_it_lists_pod_subresources_with_eviction_as_policy_v1(raw: Callable[..., Any]) -> None:
    # kubectl drain looks for pods/eviction in /api/v1 and uses its group/version
    # (staging/src/k8s.io/kubectl/pkg/drain/drain.go CheckEvictionSupport).
    body = raw("GET", "/api/v1").json()
    validate(body)
    by_name = {r["name"]: r for r in body["resources"]}
    assert by_name["pods"]["namespaced"] is True
    assert set(by_name["pods"]["verbs"]) >= {
        "create",
        "delete",
        "get",
        "list",
        "patch",
        "update",
        "watch",
        "deletecollection",
    }
    assert by_name["pods/eviction"]["group"] == "policy"
    assert by_name["pods/eviction"]["version"] == "v1"
    assert by_name["pods/eviction"]["kind"] == "Eviction"
    for sub in ("pods/status", "pods/log", "nodes/status", "namespaces/status"):
        assert sub in by_name
    for plural in (
        "namespaces",
        "services",
        "endpoints",
        "nodes",
        "events",
        "configmaps",
        "secrets",
    ):
        assert plural in by_name


def test_it_lists_apps_resources_with_scale(raw: Callable[..., Any]) -> None:
    # The scale subresource is autoscaling/v1 Scale (pkg/registry/apps/deployment/storage).
    body = raw("GET", "/apis/apps/v1").json()
    validate(body)
    by_name = {r["name"]: r for r in body["resources"]}
    assert {
        "deployments",
        "replicasets",
        "daemonsets",
        "deployments/status",
        "deployments/scale",
    } <= set(by_name)
    assert by_name["deployments/scale"]["group"] == "autoscaling"
    assert by_name["deployments"]["shortNames"] == ["deploy"]


def test_it_serves_policy_and_discovery_groups(raw: Callable[..., Any]) -> None:
    # policy/v1 PodDisruptionBudget, discovery.k8s.io/v1 EndpointSlice.
    assert "poddisruptionbudgets" in {
        r["name"] for r in raw("GET", "/apis/policy/v1").json()["resources"]
    }
    assert "endpointslices" in {
        r["name"] for r in raw("GET", "/apis/discovery.k8s.io/v1").json()["resources"]
    }


def test_it_answers_unknown_group_versions_with_not_found(raw: Callable[..., Any]) -> None:
    # The real server's not-found handler answers a Status with this message.
    r = raw("GET", "/apis/nonexistent.example.com/v1")
    assert r.status == 404
    body = r.json()
    validate(body)
    assert body["message"] == "the server could not find the requested resource"


def test_kubectl_finds_every_resource(kubectl: Callable[..., Any]) -> None:
    # kubectl api-resources reads the same discovery documents.
    out = kubectl("api-resources", "-o", "name").stdout.split()
    for name in (
        "pods",
        "deployments.apps",
        "poddisruptionbudgets.policy",
        "endpointslices.discovery.k8s.io",
    ):
        assert name in out
