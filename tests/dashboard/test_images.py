"""Image references: repository, Docker Hub normalisation, tags; and the page filters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from dashboard.images import repository, same_repository, with_tag
from dashboard.templatetags.greenlight import ago, duration


@pytest.mark.parametrize(
    ("image", "repo"),
    [
        ("demo/hello:1", "demo/hello"),
        ("demo/hello", "demo/hello"),
        ("registry:5000/team/app:1.2", "registry:5000/team/app"),
        ("registry:5000/team/app", "registry:5000/team/app"),
        ("nginx@sha256:" + "a" * 64, "nginx"),
    ],
)
def test_it_strips_tag_and_digest_but_not_a_registry_port(image: str, repo: str) -> None:
    assert repository(image) == repo


def test_it_treats_docker_hub_spellings_as_one_repository() -> None:
    assert same_repository("library/nginx", "nginx:1.25")
    assert same_repository("docker.io/demo/hello:2", "demo/hello:1")
    assert not same_repository("evil/hello", "demo/hello:1")
    assert not same_repository("registry.example.com/demo/hello", "demo/hello")


def test_it_puts_a_tag_on_the_apps_repository() -> None:
    assert with_tag("registry:5000/team/app:1", "2") == "registry:5000/team/app:2"


def test_it_formats_durations_and_ages() -> None:
    assert duration(None) == ""
    assert duration(0.004) == "4 ms"
    assert duration(1.25) == "1.2 s"
    assert duration(42.4) == "42 s"
    assert duration(185) == "3 min 5 s"
    assert ago(timezone.now() - timedelta(minutes=5)) == "5 min ago"
    assert ago(timezone.now() - timedelta(days=3)) == "3 d ago"
