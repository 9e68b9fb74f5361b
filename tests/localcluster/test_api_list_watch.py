"""List and watch: selectors, pagination, resourceVersion semantics, event framing.

Sources: https://kubernetes.io/docs/reference/using-api/api-concepts/ (efficient
detection of changes, resource versions, retrieving large results in chunks,
watch bookmarks), staging/src/k8s.io/apiserver/pkg/storage/cacher (410 Expired),
pkg/registry/core/pod/strategy.go (pod field selectors).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch

from tests.servers import LocalCluster

from .conftest import controllers_running, validate, wait_for
from .test_api_crud import deployment_body, pod_body


def make_pods(
    core: client.CoreV1Api, namespace: str, count: int, **labels: str
) -> list[client.V1Pod]:
    """Create ``count`` pods named p0..pN-1 with alternating tier labels."""
    out = []
    for i in range(count):
        lab = {"app": "demo", "tier": "web" if i % 2 == 0 else "db", **labels}
        out.append(core.create_namespaced_pod(namespace, pod_body(f"p{i}", lab)))
    return out


def test_it_returns_lists_with_kind_and_resource_version(
    raw: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    # api-concepts: a list carries metadata.resourceVersion; items carry kind/apiVersion too? No:
    # items in a typed list omit nothing the object has, so each item validates as a Pod.
    make_pods(core, namespace, 2)
    body = raw("GET", f"/api/v1/namespaces/{namespace}/pods").json()
    validate(body)
    assert body["kind"] == "PodList"
    assert int(body["metadata"]["resourceVersion"]) > 0
    assert [p["metadata"]["name"] for p in body["items"]] == ["p0", "p1"]


def test_it_filters_by_equality_and_set_based_label_selectors(
    core: client.CoreV1Api, namespace: str
) -> None:
    # labels/selector.go: =, ==, !=, in, notin, exists, !exists.
    make_pods(core, namespace, 4)

    def names(sel: str) -> list[str]:
        return [
            p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector=sel).items
        ]

    assert names("tier=web") == ["p0", "p2"]
    assert names("tier==db") == ["p1", "p3"]
    assert names("tier!=web") == ["p1", "p3"]
    assert names("tier in (web,db)") == ["p0", "p1", "p2", "p3"]
    assert names("tier notin (web)") == ["p1", "p3"]
    assert names("tier,app=demo") == ["p0", "p1", "p2", "p3"]
    assert names("!tier") == []


def test_it_filters_pods_by_supported_field_selectors(
    core: client.CoreV1Api, namespace: str
) -> None:
    # pod strategy GetAttrs: metadata.name, spec.nodeName, status.phase...
    make_pods(core, namespace, 3)
    assert [
        p.metadata.name
        for p in core.list_namespaced_pod(namespace, field_selector="metadata.name=p1").items
    ] == ["p1"]
    assert len(core.list_namespaced_pod(namespace, field_selector="metadata.name!=p1").items) == 2
    assert core.list_namespaced_pod(namespace, field_selector="spec.nodeName=nowhere").items == []


def test_it_refuses_unsupported_field_selectors(core: client.CoreV1Api, namespace: str) -> None:
    # fields: "field label not supported" is a 400 BadRequest.
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_pod(namespace, field_selector="spec.unknown=x")
    assert err.value.status == 400
    body = json.loads(err.value.body)
    validate(body)
    assert body["message"] == "field label not supported: spec.unknown"


def test_it_filters_events_by_involved_object(core: client.CoreV1Api, namespace: str) -> None:
    # pkg/registry/core/event/strategy.go: involvedObject.* field selectors.
    for i, target in enumerate(["a", "b"]):
        core.create_namespaced_event(
            namespace,
            {
                "metadata": {"name": f"e{i}"},
                "involvedObject": {"kind": "Pod", "name": target, "namespace": namespace},
                "reason": "R",
            },
        )
    events = core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=b,involvedObject.kind=Pod"
    ).items
    assert [e.metadata.name for e in events] == ["e1"]


def test_it_paginates_with_limit_and_continue(core: client.CoreV1Api, namespace: str) -> None:
    # api-concepts "Retrieving large results sets in chunks".
    make_pods(core, namespace, 5)
    first = core.list_namespaced_pod(namespace, limit=2)
    validate(first)
    assert [p.metadata.name for p in first.items] == ["p0", "p1"]
    assert first.metadata._continue
    assert first.metadata.remaining_item_count == 3
    second = core.list_namespaced_pod(namespace, limit=2, _continue=first.metadata._continue)
    assert [p.metadata.name for p in second.items] == ["p2", "p3"]
    third = core.list_namespaced_pod(namespace, limit=2, _continue=second.metadata._continue)
    assert [p.metadata.name for p in third.items] == ["p4"]
    assert not third.metadata._continue


def test_it_lists_across_namespaces(core: client.CoreV1Api, namespace: str) -> None:
    # /api/v1/pods lists every namespace.
    make_pods(core, namespace, 1)
    names = {
        (p.metadata.namespace, p.metadata.name) for p in core.list_pod_for_all_namespaces().items
    }
    assert (namespace, "p0") in names


def read_events(
    raw: Callable[..., Any], path: str, count: int, timeout: float = 10
) -> list[dict[str, Any]]:
    """Read ``count`` newline-delimited watch events from ``path``."""
    resp = raw("GET", path, preload=False, timeout=timeout)
    assert resp.status == 200
    events: list[dict[str, Any]] = []
    buf = b""
    try:
        for chunk in resp.read_chunked(decode_content=False):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                events.append(json.loads(line))
                if len(events) >= count:
                    return events
    finally:
        # An unfinished stream must not go back to the pool.
        resp.close()
    return events


def test_it_streams_added_modified_deleted_from_a_resource_version(
    raw: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    # api-concepts "Efficient detection of changes": events after the listed resourceVersion.
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "w"}, "data": {"a": "1"}})
    core.patch_namespaced_config_map("w", namespace, {"data": {"a": "2"}})
    core.delete_namespaced_config_map("w", namespace)
    events = read_events(
        raw, f"/api/v1/namespaces/{namespace}/configmaps?watch=true&resourceVersion={rv}", 3
    )
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    for e in events:
        validate(e["object"])
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(rv)


def test_it_sends_synthetic_added_events_without_a_resource_version(
    raw: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    # api-concepts: resourceVersion unset or "0" starts with the current state as ADDED.
    make_pods(core, namespace, 2)
    for suffix in ("", "&resourceVersion=0"):
        events = read_events(raw, f"/api/v1/namespaces/{namespace}/pods?watch=1{suffix}", 2)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
            ("ADDED", "p0"),
            ("ADDED", "p1"),
        ]


def test_it_answers_a_too_old_resource_version_with_410_expired(
    raw: Callable[..., Any], namespace: str
) -> None:
    # cacher.go / etcd3 watcher: an ERROR event whose Status has code 410 and reason Expired.
    events = read_events(raw, f"/api/v1/namespaces/{namespace}/pods?watch=1&resourceVersion=1", 1)
    assert events[0]["type"] == "ERROR"
    status = events[0]["object"]
    validate(status)
    assert status["code"] == 410
    assert status["reason"] == "Expired"
    assert status["message"].startswith("too old resource version: 1 (")


def test_it_sends_bookmarks_when_asked(raw: Callable[..., Any], namespace: str) -> None:
    # api-concepts "Watch bookmarks"; sendInitialEvents ends the initial list with an
    # annotated BOOKMARK (KEP-3157 streaming lists).
    path = f"/api/v1/namespaces/{namespace}/pods?watch=1&allowWatchBookmarks=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
    (event,) = read_events(raw, path, 1)
    assert event["type"] == "BOOKMARK"
    assert event["object"]["kind"] == "Pod"
    assert event["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert int(event["object"]["metadata"]["resourceVersion"]) > 0


def test_it_ends_a_watch_after_timeout_seconds(raw: Callable[..., Any], namespace: str) -> None:
    # timeoutSeconds bounds the watch; the server closes the stream cleanly.
    resp = raw(
        "GET", f"/api/v1/namespaces/{namespace}/pods?watch=1&timeoutSeconds=1", preload=False
    )
    assert resp.status == 200
    assert resp.read() == b""


def test_it_reports_an_object_leaving_the_selector_as_deleted(
    raw: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    # cacher watch filtering: old matched, new does not -> DELETED on this watch.
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "sel", "labels": {"keep": "yes"}}}
    )
    rv = core.read_namespaced_config_map("sel", namespace).metadata.resource_version
    core.patch_namespaced_config_map("sel", namespace, {"metadata": {"labels": {"keep": "no"}}})
    core.patch_namespaced_config_map("sel", namespace, {"metadata": {"labels": {"keep": "yes"}}})
    path = f"/api/v1/namespaces/{namespace}/configmaps?watch=1&labelSelector=keep%3Dyes&resourceVersion={rv}"
    events = read_events(raw, path, 2)
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]


def test_the_official_watch_helper_sees_changes(core: client.CoreV1Api, namespace: str) -> None:
    # kubernetes.watch.Watch().stream over list_namespaced_config_map.
    w = watch.Watch()
    seen: list[tuple[str, str]] = []
    ready = threading.Event()

    def consume() -> None:
        for ev in w.stream(core.list_namespaced_config_map, namespace, timeout_seconds=10):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["object"].metadata.name == "start":
                ready.set()
            if ev["type"] == "DELETED":
                w.stop()

    core.create_namespaced_config_map(namespace, {"metadata": {"name": "start"}})
    t = threading.Thread(target=consume)
    t.start()
    assert ready.wait(10)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "x"}})
    core.delete_namespaced_config_map("x", namespace)
    t.join(15)
    assert seen == [("ADDED", "start"), ("ADDED", "x"), ("DELETED", "x")]


def test_it_watches_a_single_object_by_field_selector(
    raw: Callable[..., Any], core: client.CoreV1Api, namespace: str
) -> None:
    # kubectl rollout status / wait watch one object with metadata.name=<name>.
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "one"}})
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "two"}})
    events = read_events(
        raw,
        f"/api/v1/namespaces/{namespace}/configmaps?watch=1&fieldSelector=metadata.name%3Dtwo",
        1,
    )
    assert events[0]["object"]["metadata"]["name"] == "two"


def test_every_served_list_validates_against_the_schema(
    raw: Callable[..., Any], apps: client.AppsV1Api, cluster: LocalCluster, namespace: str
) -> None:
    # Everything the cluster stores (controllers' writes included) must be valid
    # v1.37 objects: kubernetes-validate strict schemas, list by list.
    apps.create_namespaced_deployment(
        namespace, deployment_body("everything", replicas=1, image="demo/hello:1")
    )
    if controllers_running(cluster):
        wait_for(
            apps.list_namespaced_deployment,
            namespace,
            name="everything",
            check=lambda d: (d.status.available_replicas or 0) >= 1,
        )
    for path in (
        "/api/v1/namespaces",
        "/api/v1/nodes",
        "/api/v1/pods",
        "/api/v1/services",
        "/api/v1/endpoints",
        "/api/v1/events",
        "/api/v1/configmaps",
        "/api/v1/serviceaccounts",
        "/apis/apps/v1/deployments",
        "/apis/apps/v1/replicasets",
        "/apis/apps/v1/daemonsets",
        "/apis/discovery.k8s.io/v1/endpointslices",
        "/apis/policy/v1/poddisruptionbudgets",
    ):
        body = raw("GET", path).json()
        validate(body)


def test_a_streaming_list_without_bookmarks_is_invalid(
    raw: Callable[..., Any], namespace: str
) -> None:
    # meta/internalversion/validation ValidateListOptions: sendInitialEvents needs
    # allowWatchBookmarks=true and resourceVersionMatch=NotOlderThan.
    r = raw("GET", f"/api/v1/namespaces/{namespace}/pods?watch=1&sendInitialEvents=true")
    assert r.status == 422
    body = r.json()
    validate(body)
    assert {c["field"] for c in body["details"]["causes"]} == {
        "resourceVersionMatch",
        "allowWatchBookmarks",
    }
