"""The guard after the switch in the dashboard: app page, deployment page, socket, REST API."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from rest_framework.test import APIClient

from deployer import logsink
from deployer.models import App, Deployment
from tests.dashboard.test_consumer import deliver, socket

READING = {
    "state": "baking",
    "bake_seconds": 60,
    "elapsed": 12.0,
    "thresholds": {"max_error_percent": 5.0, "min_requests": 20, "max_response_ms": None},
    "counted": True,
    "reason": "",
    "new": {"version": 3, "requests": 52, "errors": 41, "error_percent": 78.8},
    "previous": {"version": 2, "requests": 0, "errors": 0, "error_percent": 0.0},
}
NEW_APP = {"name": "shop", "image": "demo/hello:1", "replicas": 2, "frontend": "shop.localhost"}


def test_the_app_page_says_how_the_app_is_guarded(admin_client: Client, app: App) -> None:
    App.objects.filter(pk=app.pk).update(guard_bake_seconds=90, guard_max_response_ms=300)

    html = admin_client.get(f"/apps/{app.pk}/").content.decode()

    assert (
        "guarded for 90 s after the switch: swaps back above 5% 5xx of 20+ requests or 300 ms"
        in html
    )


def test_the_deployment_page_carries_the_stored_reading(
    admin_client: Client, app: App, make_deployment: Callable[..., Deployment]
) -> None:
    deployment = make_deployment(app, guard=READING)

    html = admin_client.get(f"/deployments/{deployment.pk}/").content.decode()

    assert 'id="guard-card" hidden' not in html
    stored = html.split('<script id="guard-data" type="application/json">', 1)[1]
    assert json.loads(stored.split("</script>", 1)[0]) == READING


def test_the_api_shows_the_reading_on_a_deployment_but_not_in_lists(
    api: APIClient, app: App, make_deployment: Callable[..., Deployment]
) -> None:
    deployment = make_deployment(app, guard=READING)

    assert api.get(f"/api/deployments/{deployment.pk}/").json()["guard"] == READING
    assert "guard" not in api.get("/api/deployments/").json()["results"][0]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("guard_bake_seconds", 4000, "between 0 (no guard) and 3600 seconds"),
        ("guard_max_error_percent", 250, "between 0 and 100"),
        ("guard_min_requests", 0, "at least 1"),
        ("guard_max_response_ms", 0, "between 1 and 600000 ms"),
        ("guard_promql", "rate(x[1m]", "opens a '('"),
    ],
)
def test_the_api_refuses_bad_guard_settings_naming_the_field(
    api: APIClient, field: str, value: Any, message: str
) -> None:
    response = api.post("/api/apps/", {**NEW_APP, field: value}, format="json")

    assert response.status_code == 400
    assert any(message in text for text in response.json()[field]), response.json()
    assert not App.objects.filter(name="shop").exists()


def test_the_api_takes_guard_settings(api: APIClient, settings: Any) -> None:
    settings.GREENLIGHT_PROMETHEUS_URL = "http://127.0.0.1:9090"
    body = {
        **NEW_APP,
        "guard_bake_seconds": 30,
        "guard_max_error_percent": 1.5,
        "guard_min_requests": 100,
        "guard_max_response_ms": 250,
        "guard_promql": 'sum(rate(errors_total{app="shop"}[1m])) > 0',
    }

    response = api.post("/api/apps/", body, format="json")

    assert response.status_code == 201, response.json()
    app = App.objects.get(name="shop")
    assert app.snapshot()["guard"] == {
        "bake_seconds": 30,
        "max_error_percent": 1.5,
        "min_requests": 100,
        "max_response_ms": 250,
        "promql": 'sum(rate(errors_total{app="shop"}[1m])) > 0',
    }


@pytest.fixture
def captured(monkeypatch: Any) -> list[tuple[str, dict[str, Any]]]:
    """What logsink would publish, for the test to deliver on its own event loop."""
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(logsink, "publish", lambda group, message: sent.append((group, message)))
    return sent


@pytest.mark.django_db(transaction=True)
async def test_the_socket_forwards_each_reading_of_the_guard(
    viewer: Any, app: Any, make_deployment: Callable[..., Any], captured: list[Any]
) -> None:
    deployment = await database_sync_to_async(make_deployment)(
        app, lines=1, status=Deployment.Status.RUNNING, finished_at=None
    )
    communicator = await socket(f"/ws/deployments/{deployment.pk}/", viewer)
    assert (await communicator.connect())[0]
    assert (await communicator.receive_json_from())["type"] == "lines"
    assert (await communicator.receive_json_from())["type"] == "status"

    captured.append((f"deployment-{deployment.pk}", {"type": "deployment.guard", "guard": READING}))
    await deliver(captured)

    assert await communicator.receive_json_from() == {"type": "guard", "guard": READING}
    await communicator.disconnect()


def test_the_app_forms_rollout_section_has_the_guards_settings(
    admin_client: Client, app: App
) -> None:
    html = admin_client.get(f"/apps/{app.pk}/edit/").content.decode()

    assert "Guard after the switch" in html
    for field in (
        "guard_bake_seconds",
        "guard_max_error_percent",
        "guard_min_requests",
        "guard_max_response_ms",
        "guard_promql",
    ):
        assert f'id="id_{field}"' in html
