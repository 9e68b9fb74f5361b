"""Bad input gives a clear, field-keyed validation error and creates nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from deployer.models import App, Deployment
from deployer.validation import parse_quantity


def _app(**fields: Any) -> App:
    defaults: dict[str, Any] = {
        "name": "hello",
        "image": "demo/hello:1",
        "replicas": 2,
        "frontend": "hello.localhost",
    }
    return App(**{**defaults, **fields})


@pytest.mark.parametrize(
    ("fields", "field", "fragment"),
    [
        ({"name": "Hello"}, "name", "lowercase"),
        ({"name": "1hello"}, "name", "starting with a letter"),
        ({"name": "hello-"}, "name", "ending with a letter or digit"),
        ({"name": "a" * 54}, "name", "at most 53"),
        ({"image": "Demo/Hello"}, "image", "image reference"),
        ({"image": "http://demo/hello"}, "image", "image reference"),
        ({"image": "demo/hello:"}, "image", "image reference"),
        ({"image": "demo hello"}, "image", "image reference"),
        ({"container_port": 0}, "container_port", "between 1 and 65535"),
        ({"container_port": 70000}, "container_port", "between 1 and 65535"),
        ({"health_port": 70000}, "health_port", "between 1 and 65535"),
        ({"replicas": 0}, "replicas", "between 1 and 100"),
        ({"replicas": 101}, "replicas", "between 1 and 100"),
        ({"cpu_request": "lots"}, "cpu_request", "quantity"),
        ({"cpu_limit": "-1"}, "cpu_limit", "quantity"),
        ({"memory_request": "64MB"}, "memory_request", "quantity"),
        ({"memory_limit": "0"}, "memory_limit", "above zero"),
        ({"memory_request": "1Gi", "memory_limit": "512Mi"}, "memory_limit", "at least"),
        ({"frontend": "http://hello.example.com"}, "frontend", "without 'http://'"),
        ({"frontend": "hello.example.com/app"}, "frontend", "without 'http://' or a path"),
        ({"frontend": "hello.example.com:8080"}, "frontend", "without a port"),
        ({"frontend": "Hello_World"}, "frontend", "lowercase hostname"),
        ({"health_path": "health"}, "health_path", "starting with '/'"),
        ({"env": {"1X": "a"}}, "env", "not a valid variable name"),
        ({"env": {"APP_VERSION": "9"}}, "env", "set by Greenlight"),
        ({"extra_pod_spec": {"containers": []}}, "extra_pod_spec", "Not allowed"),
    ],
)
def test_it_rejects_bad_input_with_a_message_on_the_field(
    db: None, fields: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _app(**fields).full_clean()

    assert fragment in " ".join(caught.value.message_dict[field])
    assert App.objects.count() == 0


def test_it_accepts_a_well_formed_app(db: None) -> None:
    _app(
        image="registry.example.com:5000/team/app:1.2@sha256:" + "a" * 64,
        cpu_request="250m",
        cpu_limit="1",
        memory_request="64Mi",
        memory_limit="1Gi",
        env={"MESSAGE": "hi"},
        extra_pod_spec={"nodeSelector": {"disk": "ssd"}},
    ).full_clean()


def test_it_rejects_a_frontend_that_another_app_uses(make_app: Callable[..., App]) -> None:
    other = make_app(frontend="taken.localhost")

    with pytest.raises(ValidationError) as caught:
        _app(name="second", frontend="Taken.localhost".lower()).full_clean()

    assert f"already the frontend of app {other}" in caught.value.message_dict["frontend"][0]
    assert Deployment.objects.count() == 0


def test_it_honours_the_configured_replica_cap(db: None, settings: Any) -> None:
    settings.MAX_REPLICAS = 5
    with pytest.raises(ValidationError) as caught:
        _app(replicas=6).full_clean()
    assert "between 1 and 5" in caught.value.message_dict["replicas"][0]


@pytest.mark.parametrize(
    ("text", "value"),
    [("250m", "0.25"), ("1", "1"), ("64Mi", str(64 * 2**20)), ("1e3", "1000"), ("1k", "1000")],
)
def test_it_parses_kubernetes_quantities(text: str, value: str) -> None:
    assert parse_quantity(text) == parse_quantity(value)
