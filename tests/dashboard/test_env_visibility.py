"""Env values are shown only to users who may change the app; the others see names and ••••."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from deployer.envvars import MASK

ENV = {"LOG_LEVEL": "debug", "TOKEN": {"secretKeyRef": {"name": "api", "key": "token"}}}


@pytest.fixture
def editor(role_user: Any, viewer: Any) -> Any:
    """A user who may see and change apps: admin on every namespace."""
    return role_user("editor", "admin")


def api_as(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_view_only_users_get_env_names_with_hidden_values_from_the_api(
    viewer: Any, make_app: Any
) -> None:
    app = make_app(env=ENV)
    client = api_as(viewer)
    listed = client.get("/api/apps/").json()["results"][0]
    one = client.get(f"/api/apps/{app.pk}/").json()
    for body in (listed, one):
        assert body["env"] == {"LOG_LEVEL": MASK, "TOKEN": MASK}
        assert "webhook_secret" not in body


def test_users_who_may_change_the_app_get_env_values_from_the_api(
    editor: Any, make_app: Any
) -> None:
    app = make_app(env=ENV)
    assert api_as(editor).get(f"/api/apps/{app.pk}/").json()["env"] == ENV


def test_the_app_page_shows_env_values_only_to_users_who_may_change_the_app(
    viewer: Any, editor: Any, make_app: Any
) -> None:
    app = make_app(env=ENV)
    client = Client()
    client.force_login(viewer)
    page = client.get(f"/apps/{app.pk}/").content.decode()
    assert "LOG_LEVEL" in page and "TOKEN" in page and MASK in page
    assert "debug" not in page and "api" not in page.split('id="environment"')[1]
    client.force_login(editor)
    page = client.get(f"/apps/{app.pk}/").content.decode()
    assert "debug" in page and "from Secret api, key token" in page
    assert MASK not in page


def test_it_accepts_an_env_value_from_a_secret_key_through_the_api(api: APIClient) -> None:
    body = {
        "name": "shop",
        "image": "demo/hello:1",
        "frontend": "shop.localhost",
        "env": {
            "PLAIN": "1",
            "TOKEN": {"secretKeyRef": {"name": "shop-secrets", "key": "api.token"}},
        },
    }
    response = api.post("/api/apps/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["env"] == body["env"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"secretKeyRef": {"name": "Bad_Name", "key": "k"}}, "is not a Secret name"),
        ({"secretKeyRef": {"name": "x" * 254, "key": "k"}}, "is not a Secret name"),
        ({"secretKeyRef": {"name": "creds", "key": "no/slash"}}, "is not a Secret key"),
        ({"secretKeyRef": {"name": "creds", "key": ".."}}, "is not a Secret key"),
        ({"secretKeyRef": {"name": "creds"}}, "exactly a name and a key"),
        ({"secretKeyRef": {"name": "c", "key": "k"}, "other": 1}, "must be text, or a Secret"),
        ({"configMapKeyRef": {"name": "c", "key": "k"}}, "Enter text, or a Secret's key"),
        (42, "Enter text, or a Secret's key"),
    ],
)
def test_it_refuses_a_malformed_secret_reference_on_the_env_field(
    api: APIClient, value: Any, message: str
) -> None:
    body = {"name": "shop", "image": "demo/hello:1", "frontend": "shop.localhost"}
    response = api.post("/api/apps/", {**body, "env": {"TOKEN": value}}, format="json")
    assert response.status_code == 400
    assert message in json.dumps(response.json()["env"])


def test_the_schema_describes_env_values_as_text_or_a_secret_key(api: APIClient) -> None:
    schema = api.get("/api/schema/?format=json").json()
    env = schema["components"]["schemas"]["App"]["properties"]["env"]
    variants = env["additionalProperties"]["oneOf"]
    assert {"type": "string"} in variants
    assert any("secretKeyRef" in variant.get("properties", {}) for variant in variants)
