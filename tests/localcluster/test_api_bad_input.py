"""Bad input: malformed bodies, unknown resources, wrong kinds, oversized bodies, fuzzing.

Sources: staging/src/k8s.io/apiserver/pkg/endpoints/handlers/create.go
(decode errors, "the API version in the data ... does not match"),
staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go (limitedReadBody:
413 beyond 3 MiB), staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters
(Status bodies), https://kubernetes.io/docs/reference/using-api/api-concepts/#field-validation.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kubernetes import client

from .conftest import validate
from .test_api_crud import deployment_body, pod_body


def test_malformed_json_is_a_400_with_a_message(raw: Callable[..., Any], namespace: str) -> None:
    # create.go: a body that does not decode is a 400 BadRequest naming the parse error.
    r = raw(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        b'{"metadata": {',
        {"Content-Type": "application/json"},
    )
    assert r.status == 400
    body = r.json()
    validate(body)
    assert body["reason"] == "BadRequest"
    assert body["message"].startswith("couldn't get version/kind; json parse error:")


def test_an_unknown_resource_is_a_404_with_the_real_message(
    raw: Callable[..., Any], namespace: str
) -> None:
    # The not-found handler (apiserver/pkg/server/mux) answers a Status with this message.
    for path in (f"/api/v1/namespaces/{namespace}/widgets", "/apis/apps/v1/gizmos", "/api/v2/pods"):
        r = raw("GET", path)
        assert r.status == 404, path
        body = r.json()
        validate(body)
        assert body["message"] == "the server could not find the requested resource"
        assert body["reason"] == "NotFound"


def test_a_body_of_the_wrong_kind_is_a_400(raw: Callable[..., Any], namespace: str) -> None:
    # create.go transformDecodeError: "<Kind> in version <v> cannot be handled as a <Kind>".
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80}]},
    }
    r = raw("POST", f"/api/v1/namespaces/{namespace}/configmaps", service)
    assert r.status == 400
    body = r.json()
    validate(body)
    assert body["message"].startswith('Service in version "v1" cannot be handled as a ConfigMap')


def test_a_body_of_the_wrong_api_version_is_a_400(raw: Callable[..., Any], namespace: str) -> None:
    # create.go: the API version in the data must match the endpoint's.
    r = raw(
        "POST",
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        {"apiVersion": "apps/v1beta2", "kind": "Deployment", "metadata": {"name": "x"}},
    )
    assert r.status == 400
    assert (
        r.json()["message"]
        == "the API version in the data (apps/v1beta2) does not match the expected API version (apps/v1)"
    )


def test_a_body_over_three_mebibytes_is_a_413(raw: Callable[..., Any], namespace: str) -> None:
    # rest.go limitedReadBody: bodies over MaxRequestBodyBytes (3 MiB) are 413.
    big = json.dumps({"metadata": {"name": "big"}, "data": {"k": "x" * (3 * 1024 * 1024 + 10)}})
    r = raw(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        big,
        {"Content-Type": "application/json"},
    )
    assert r.status == 413
    body = r.json()
    validate(body)
    assert body["reason"] == "RequestEntityTooLarge"


def test_a_type_mismatch_is_a_decode_error(raw: Callable[..., Any], namespace: str) -> None:
    # The JSON decoder's "cannot unmarshal" error is a 400 (transformDecodeError).
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": "nope"},
    }
    r = raw("POST", f"/api/v1/namespaces/{namespace}/pods", body)
    assert r.status == 400
    assert r.json()["message"].startswith(
        'Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal string into Go struct field'
    )


def test_strict_field_validation_refuses_unknown_fields(
    raw: Callable[..., Any], namespace: str
) -> None:
    # api-concepts#field-validation: Strict rejects, Warn (default) drops with a Warning header.
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "strict"}, "bogus": 1}
    r = raw("POST", f"/api/v1/namespaces/{namespace}/configmaps?fieldValidation=Strict", body)
    assert r.status == 400
    assert r.json()["message"] == 'strict decoding error: unknown field "bogus"'
    # Default (Warn): dropped, with a Warning header.
    r = raw("POST", f"/api/v1/namespaces/{namespace}/configmaps", body)
    assert r.status == 201
    assert "bogus" not in r.json()
    assert "unknown field" in r.headers.get("Warning", "")


def test_a_post_without_content_type_is_read_as_json(
    raw: Callable[..., Any], namespace: str
) -> None:
    # The contract; kube-apiserver negotiates JSON for a missing Content-Type too.
    r = raw(
        "POST",
        f"/api/v1/namespaces/{namespace}/configmaps",
        json.dumps({"metadata": {"name": "noct"}}).encode(),
    )
    assert r.status == 201
    validate(r.json())


def test_a_protobuf_accept_header_falls_back_to_json(raw: Callable[..., Any]) -> None:
    # Content negotiation: application/json is acceptable, so the server may answer with it.
    r = raw(
        "GET",
        "/api/v1/namespaces/default",
        headers={"Accept": "application/vnd.kubernetes.protobuf, application/json"},
    )
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("application/json")
    validate(r.json())


def test_an_unsupported_verb_is_a_405(raw: Callable[..., Any], namespace: str) -> None:
    # responsewriters: MethodNotAllowed Status for a verb the resource does not serve.
    r = raw("POST", f"/api/v1/namespaces/{namespace}/configmaps/x")
    assert r.status == 405
    validate(r.json())


PATHS = st.one_of(
    st.sampled_from(
        [
            "/api/v1/namespaces/default/pods",
            "/api/v1/namespaces/default/pods/p",
            "/api/v1/namespaces/default/pods/p/status",
            "/api/v1/namespaces/default/pods/p/log",
            "/api/v1/namespaces/default/pods/p/eviction",
            "/api/v1/namespaces/default/configmaps",
            "/api/v1/namespaces/default/configmaps/fuzz",
            "/apis/apps/v1/namespaces/default/deployments/fuzz",
            "/api/v1/namespaces/default/pods/fuzz",
            "/api/v1/namespaces/default/pods/fuzz/status",
            "/api/v1/nodes/n",
            "/api/v1/namespaces/default",
            "/api/v1/namespaces/default/finalize",
            "/apis/apps/v1/namespaces/default/deployments",
            "/apis/apps/v1/namespaces/default/deployments/d/scale",
            "/apis/policy/v1/namespaces/default/poddisruptionbudgets",
            "/api/v1/watch/namespaces/default/pods",
            "/apis",
            "/openapi/v3/api/v1",
        ]
    ),
    st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~%", min_size=0, max_size=12),
        max_size=7,
    ).map(lambda parts: "/" + "/".join(parts)),
)
QUERIES = st.sampled_from(
    [
        "",
        "?watch=1&timeoutSeconds=1",
        "?labelSelector=a%20in%20(b",
        "?fieldSelector=spec.x%3Dy",
        "?limit=-3&continue=%%%",
        "?gracePeriodSeconds=abc",
        "?propagationPolicy=Orphan",
        "?tailLines=-1",
        "?resourceVersion=abc&watch=true&timeoutSeconds=1",
    ]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
OBJECTS = st.fixed_dictionaries(
    {},
    optional={
        "apiVersion": st.sampled_from(["v1", "apps/v1", "policy/v1", "x"]) | JSON_VALUES,
        "kind": st.sampled_from(["Pod", "ConfigMap", "Deployment", "Eviction", "Scale"])
        | JSON_VALUES,
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "name": st.sampled_from(["p", "d", "n", "Bad Name"]) | JSON_VALUES,
                "labels": JSON_VALUES,
            },
        ),
        "spec": JSON_VALUES,
        "status": JSON_VALUES,
        "data": JSON_VALUES,
    },
)
JSON_PATCHES = st.lists(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"])},
        optional={
            "path": st.sampled_from(
                [
                    "/spec",
                    "/spec/replicas",
                    "/metadata/labels/x",
                    "/data/k",
                    "/spec/containers/0/image",
                    "/spec/containers/-",
                    "",
                    "x",
                    "/~1/~0",
                ]
            )
            | JSON_VALUES,
            "from": st.sampled_from(["/metadata/labels", "/spec/template", "/nope"]) | JSON_VALUES,
            "value": JSON_VALUES,
        },
    ),
    max_size=4,
)
SMP_DIRECTIVES = st.fixed_dictionaries(
    {},
    optional={
        "$patch": st.sampled_from(["replace", "delete", "merge", "bogus"]) | JSON_VALUES,
        "$retainKeys": JSON_VALUES,
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "labels": JSON_VALUES,
                "finalizers": JSON_VALUES,
                "$deleteFromPrimitiveList/finalizers": JSON_VALUES,
            },
        ),
        "spec": st.fixed_dictionaries(
            {},
            optional={
                "containers": st.lists(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "name": JSON_VALUES,
                            "image": JSON_VALUES,
                            "$patch": st.sampled_from(["delete", "replace"]),
                        },
                    ),
                    max_size=3,
                )
                | JSON_VALUES,
                "$setElementOrder/containers": JSON_VALUES,
                "template": JSON_VALUES,
                "replicas": JSON_VALUES,
            },
        ),
        "data": JSON_VALUES,
    },
)
BODIES = st.one_of(
    st.none(),
    st.binary(max_size=64),
    OBJECTS.map(lambda o: json.dumps(o).encode()),
    JSON_PATCHES.map(lambda o: json.dumps(o).encode()),
    SMP_DIRECTIVES.map(lambda o: json.dumps(o).encode()),
    JSON_VALUES.map(lambda o: json.dumps(o).encode()),
)
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/yaml",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
        "application/vnd.kubernetes.protobuf",
        "text/csv",
    ]
)


@pytest.fixture(scope="module")
def fuzz_targets(core: client.CoreV1Api, apps: client.AppsV1Api) -> Iterator[None]:
    """Objects named "fuzz" in default, so random PUT/PATCH/DELETE reach real ones."""
    created = []
    for create, body in (
        (core.create_namespaced_config_map, {"metadata": {"name": "fuzz"}, "data": {"k": "v"}}),
        (core.create_namespaced_pod, pod_body("fuzz", schedulerName="nobody")),
        (apps.create_namespaced_deployment, deployment_body("fuzz", image="demo/none:1")),
    ):
        try:
            create("default", body)
            created.append(body)
        except client.ApiException as exc:
            assert exc.status == 409
    yield
    for delete in (
        core.delete_namespaced_config_map,
        core.delete_namespaced_pod,
        apps.delete_namespaced_deployment,
    ):
        with contextlib.suppress(client.ApiException):
            delete("fuzz", "default")


# GREENLIGHT_FUZZ_EXAMPLES raises the example count for a longer hunt than CI's.
@settings(
    max_examples=int(os.environ.get("GREENLIGHT_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    path=PATHS,
    query=QUERIES,
    body=BODIES,
    content_type=CONTENT_TYPES,
)
def test_random_requests_never_get_a_5xx(
    fuzz_targets: None,
    raw: Callable[..., Any],
    method: str,
    path: str,
    query: str,
    body: bytes | None,
    content_type: str | None,
) -> None:
    # The real server answers client mistakes with 4xx; a 5xx would be a crash here.
    headers = {"Content-Type": content_type} if content_type else {}
    # Watches (also ?watch on any path) stream until timeoutSeconds, as on a real server.
    url = path + query + ("&" if "?" in query else "?") + "timeoutSeconds=1"
    r = raw(method, url, body, headers, timeout=15)
    assert r.status < 500, (method, url, body, content_type, r.data[:300])
    if (
        method != "HEAD"
        and r.status >= 400
        and r.headers.get("Content-Type", "").startswith("application/json")
    ):
        status = json.loads(r.data)
        assert status["kind"] == "Status" and status["code"] == r.status
