"""Bad input at the API and form edge: a 400 naming the field or the problem, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from rest_framework.exceptions import ParseError
from rest_framework.test import APIClient

from dashboard.api import parsers
from deployer.models import App, Deployment
from scaling.models import NodeGroup, ScalingRun
from tests.dashboard.test_app_form import VALID

NEW_APP = {"name": "shop", "image": "demo/hello:1", "replicas": 2, "frontend": "shop.localhost"}
FORM = {**VALID, "stop_delay_seconds": "5", "max_unavailable": "1"}
DEEP = "[" * 100_000


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_the_form_data_of_these_tests_is_valid(admin_client: Client) -> None:
    assert admin_client.post("/apps/new/", FORM).status_code == 302


def test_a_huge_cpu_request_is_a_400_on_its_field_through_the_api(api: APIClient) -> None:
    response = api.post("/api/apps/", {**NEW_APP, "cpu_request": "1e9999999"}, format="json")
    assert response.status_code == 400
    assert response.json()["cpu_request"] == ["Enter at most 1024 cores."]
    assert not App.objects.exists()


def test_a_nul_in_an_env_value_is_a_400_on_its_field(api: APIClient) -> None:
    # PostgreSQL cannot store it in JSON, and no process could read it from its environment.
    response = api.post("/api/apps/", {**NEW_APP, "env": {"TOKEN": "a\0b"}}, format="json")
    assert response.status_code == 400
    assert response.json()["env"] == ["The value of 'TOKEN' contains a NUL character; remove it."]
    assert not App.objects.exists()


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"nodeSelector": {"zone": "a\0"}}, "extra_pod_spec.nodeSelector.zone"),
        ({"nodeSelector": {"zo\0ne": "a"}}, "a key of extra_pod_spec.nodeSelector"),
        ({"tolerations": [{"key": "k", "value": "\0"}]}, "extra_pod_spec.tolerations[0].value"),
    ],
)
def test_a_nul_anywhere_in_the_pod_spec_is_a_400_that_says_where(
    api: APIClient, spec: dict[str, Any], where: str
) -> None:
    response = api.post("/api/apps/", {**NEW_APP, "extra_pod_spec": spec}, format="json")
    assert response.status_code == 400
    assert response.json()["extra_pod_spec"] == [f"{where} contains a NUL character; remove it."]
    assert not App.objects.exists()


def test_a_huge_cpu_request_is_a_400_on_its_field_through_the_form(admin_client: Client) -> None:
    response = admin_client.post("/apps/new/", {**FORM, "cpu_request": "1e9999999"})
    assert response.status_code == 400
    assert response.context["form"].errors == {"cpu_request": ["Enter at most 1024 cores."]}
    assert not App.objects.exists()


@pytest.mark.parametrize("path", ["/health'", "/hé", "/a b"])
def test_a_health_path_haproxy_cannot_carry_is_a_400_on_its_field(
    api: APIClient, admin_client: Client, path: str
) -> None:
    response = api.post("/api/apps/", {**NEW_APP, "health_path": path}, format="json")
    assert response.status_code == 400 and "health_path" in response.json()
    response = admin_client.post("/apps/new/", {**FORM, "health_path": path})
    assert response.status_code == 400 and list(response.context["form"].errors) == ["health_path"]
    assert not App.objects.exists()


def test_a_namespace_outside_the_allow_list_is_a_400_naming_the_allowed_ones(
    api: APIClient, admin_client: Client
) -> None:
    response = api.post("/api/apps/", {**NEW_APP, "namespace": "kube-system"}, format="json")
    assert response.status_code == 400
    assert "Allowed: default" in response.json()["namespace"][0]
    response = admin_client.post("/apps/new/", {**FORM, "namespace": "kube-system"})
    assert response.status_code == 400 and list(response.context["form"].errors) == ["namespace"]
    assert not App.objects.exists()


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ({"securityContext": {"runAsUser": 0}}, "runs as root"),
        ({"serviceAccountName": "cluster-admin"}, "'cluster-admin' is not allowed"),
        ({"tolerations": [{"operator": "Exists"}]}, "tolerates every taint"),
        ({"hostNetwork": True}, "hostNetwork"),
        ({"tolerations": [{"key": 5}]}, "tolerations[0].key: 5 is not of type"),
    ],
)
def test_an_unsafe_or_malformed_pod_spec_is_a_400_on_extra_pod_spec(
    api: APIClient, make_app: Any, spec: dict[str, Any], fragment: str
) -> None:
    response = api.post("/api/apps/", {**NEW_APP, "extra_pod_spec": spec}, format="json")
    assert response.status_code == 400
    assert fragment in " ".join(response.json()["extra_pod_spec"])
    app = make_app()
    response = api.patch(f"/api/apps/{app.pk}/", {"extra_pod_spec": spec}, format="json")
    assert response.status_code == 400 and "extra_pod_spec" in response.json()
    app.refresh_from_db()
    assert app.extra_pod_spec == {}


def test_a_body_of_a_hundred_thousand_brackets_is_a_400_on_every_json_endpoint(
    api: APIClient, make_app: Any
) -> None:
    app = make_app()
    group = NodeGroup.objects.create(name="workers", min_size=0, max_size=3, desired=1)
    for method, path in (
        ("post", "/api/apps/"),
        ("patch", f"/api/apps/{app.pk}/"),
        ("post", f"/api/apps/{app.pk}/deploy/"),
        ("post", f"/api/apps/{app.pk}/scale/"),
        ("post", f"/api/scaling/apps/{app.pk}/scale/"),
        ("post", f"/api/scaling/node-groups/{group.pk}/capacity/"),
        ("post", "/api/scaling/nodes/node-1/drain/"),
    ):
        response = getattr(api, method)(path, DEEP, content_type="application/json")
        assert response.status_code == 400, (path, response.status_code)
        assert "deeper than 64 levels" in response.json()["detail"], path
    # Webhook bodies are capped lower (64 KiB), so the hook gets a shorter tower of brackets.
    response = Client().post(
        f"/api/hooks/dockerhub/{app.webhook_secret}/",
        "[" * 50_000,
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "deeper than 64 levels" in response.json()["detail"]
    assert not Deployment.objects.exists() and not ScalingRun.objects.exists()


def test_nesting_of_64_levels_is_read_and_65_is_refused(api: APIClient, make_app: Any) -> None:
    app = make_app()
    path = f"/api/apps/{app.pk}/scale/"
    # 64 levels parse, then fail validation as a body that is not an object.
    response = api.post(path, nested(64), content_type="application/json")
    assert response.status_code == 400 and "deeper" not in json.dumps(response.json())
    response = api.post(path, nested(65), content_type="application/json")
    assert response.status_code == 400
    assert response.json() == {
        "detail": "JSON parse error - arrays and objects nest deeper than 64 levels."
    }


@pytest.mark.parametrize(
    ("body", "deep"),
    [
        (nested(64), False),
        (nested(65), True),
        ('{"a":' * 65 + "1" + "}" * 65, True),
        ('["' + "[" * 1000 + '"]', False),  # brackets in a string do not nest
        ('["\\"' + "[" * 1000 + '"]', False),  # nor after an escaped quote
        ('"\\"' * 10_000, False),  # an unterminated string ends the scan, quickly
        ("]" * 1000 + "[" * 65, True),
    ],
)
def test_the_nesting_check_counts_only_brackets_outside_strings(body: str, deep: bool) -> None:
    assert parsers.nests_deeper_than(body, parsers.MAX_NESTING) is deep


def test_the_raw_body_reader_refuses_deep_bodies_bad_utf8_and_nan() -> None:
    for body in (DEEP.encode(), b'{"tag": "\xff"}', b'{"tag": NaN}', b"{"):
        with pytest.raises(ParseError):
            parsers.loads(body)
    assert parsers.loads(b'{"tag": "2"}') == {"tag": "2"}


def test_a_body_in_an_unknown_charset_is_a_400(api: APIClient, make_app: Any) -> None:
    app = make_app()
    response = api.post(
        f"/api/apps/{app.pk}/scale/",
        b'{"replicas": 1}',
        content_type="application/json; charset=bz2_codec",
    )
    assert response.status_code == 400
