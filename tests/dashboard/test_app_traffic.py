"""The app's traffic mode: haproxy (the default) or service, through the form, the page and the API."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from rest_framework.test import APIClient

from deployer.models import App

from .test_app_form import VALID, errors_of, post

NEW_APP = {"name": "shop", "image": "demo/hello:1", "replicas": 2, "frontend": "shop.localhost"}


def test_a_new_app_switches_through_haproxy_unless_told_otherwise(api: APIClient) -> None:
    response = api.post("/api/apps/", NEW_APP, format="json")

    assert response.status_code == 201
    assert response.json()["traffic"] == "haproxy"
    assert App.objects.get(name="shop").snapshot()["traffic"] == "haproxy"


def test_the_api_creates_and_patches_a_service_mode_app(api: APIClient) -> None:
    created = api.post("/api/apps/", {**NEW_APP, "traffic": "service"}, format="json")
    assert created.status_code == 201
    assert created.json()["traffic"] == "service"

    patched = api.patch(f"/api/apps/{created.json()['id']}/", {"traffic": "haproxy"}, format="json")

    assert patched.status_code == 200
    assert App.objects.get(name="shop").traffic == "haproxy"


def test_the_api_names_the_modes_for_a_bad_one_and_changes_nothing(
    api: APIClient, app: App
) -> None:
    response = api.patch(f"/api/apps/{app.pk}/", {"traffic": "ingress"}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "traffic": [
            'Unknown traffic mode "ingress": choose haproxy (HAProxy routes to the pods); '
            "service (the stable Service's selector moves)."
        ]
    }
    app.refresh_from_db()
    assert app.traffic == "haproxy"
    assert api.post("/api/apps/", {**NEW_APP, "traffic": ""}, format="json").status_code == 400
    assert not App.objects.filter(name="shop").exists()


def test_the_form_saves_service_mode_and_the_page_says_so(admin_client: Client) -> None:
    response = post(admin_client, traffic="service")
    assert response.status_code == 302
    app = App.objects.get(name="shop")
    assert app.traffic == "service"

    page = admin_client.get(f"/apps/{app.pk}/").content.decode()

    assert "traffic through Service" in page
    form = admin_client.get(f"/apps/{app.pk}/edit/").content.decode()
    assert 'name="traffic"' in form
    assert '<option value="service" selected>' in form


def test_the_form_refuses_an_unknown_mode_on_its_field(admin_client: Client) -> None:
    response = post(admin_client, traffic="ingress")

    assert response.status_code == 400
    assert errors_of(response, "traffic") == [
        "Unknown traffic mode ingress: choose haproxy (HAProxy routes to the pods); "
        "service (the stable Service's selector moves)."
    ]
    assert not App.objects.filter(name="shop").exists()


def test_a_form_without_the_field_keeps_the_apps_mode(admin_client: Client) -> None:
    post(admin_client, traffic="service")
    app = App.objects.get(name="shop")
    fields = {k: v for k, v in VALID.items() if k not in ("name", "namespace")}

    response = admin_client.post(f"/apps/{app.pk}/edit/", {**fields, "replicas": "4"})

    assert response.status_code == 302
    app.refresh_from_db()
    assert (app.replicas, app.traffic) == (4, "service")


def test_model_validation_refuses_an_unknown_mode(db: Any) -> None:
    app = App(name="shop", image="demo/hello:1", frontend="shop.localhost", traffic="mesh")

    with pytest.raises(ValidationError) as caught:
        app.full_clean()

    assert caught.value.message_dict["traffic"][-1].startswith("Unknown traffic mode 'mesh'")
