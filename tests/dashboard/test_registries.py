"""The Registries page, the tag suggestions of the app form, and the polling settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from deployer.models import App, RegistryCredential
from tests.dashboard.test_app_form import VALID, errors_of, post
from tests.registrykit import push_image, registry_server
from tests.servers import Server, free_port

USERS = {"ci": "s3cret"}


@pytest.fixture(scope="module")
def locked_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with registry_server(tmp_path_factory.mktemp("registry-auth"), users=USERS) as server:
        push_image(server.extra["url"], "demo/hello", "1.2.3", auth=("ci", "s3cret"))
        push_image(server.extra["url"], "demo/hello", "1.10.0", auth=("ci", "s3cret"))
        push_image(server.extra["url"], "demo/hello", "1.9.1", auth=("ci", "s3cret"))
        yield server


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def test_the_registries_page_keeps_a_login_and_never_sends_the_password_back(
    admin_client: Client,
) -> None:
    saved = admin_client.post(
        "/registries/",
        {"host": "Registry.Example.com:5000", "username": "ci", "password": "hunter2-secret"},
    )
    assert saved.status_code == 302
    credential = RegistryCredential.objects.get()
    assert (credential.host, credential.username) == ("registry.example.com:5000", "ci")
    assert credential.password == "hunter2-secret"

    page = admin_client.get("/registries/")
    text = page.content.decode()
    assert 'href="/registries/"' in text  # the nav shows the page to whoever may open it
    assert "registry.example.com:5000" in text and "••••••••" in text
    assert "hunter2-secret" not in text

    # The same host again without a password keeps the saved one.
    admin_client.post("/registries/", {"host": "registry.example.com:5000", "username": "bot"})
    credential.refresh_from_db()
    assert (credential.username, credential.password) == ("bot", "hunter2-secret")

    bad = admin_client.post("/registries/", {"host": "https://x/y", "username": "u"})
    assert bad.status_code == 400 and "no scheme or path" in bad.content.decode()
    assert RegistryCredential.objects.count() == 1

    admin_client.post(f"/registries/{credential.pk}/delete/")
    assert not RegistryCredential.objects.exists()


def test_the_nav_offers_the_registries_page_to_admins_of_every_namespace_only(
    admin_client: Client, viewer: Any
) -> None:
    other = Client()
    other.force_login(viewer)
    assert 'href="/registries/"' not in other.get("/").content.decode()
    assert other.get("/registries/").status_code == 403
    assert 'href="/registries/"' in admin_client.get("/").content.decode()


def test_the_form_asks_for_tags_newest_first_with_the_kept_login(
    admin_client: Client, locked_registry: Server
) -> None:
    host = locked_registry.extra["host"]
    image = f"{host}/demo/hello:1.2.3"
    refused = admin_client.get("/registries/tags/", {"image": image}).json()
    assert refused["tags"] == [] and "requires a login" in refused["error"]

    admin_client.post("/registries/", {"host": host, "username": "ci", "password": "s3cret"})
    found = admin_client.get("/registries/tags/", {"image": image}).json()
    assert found == {
        "repository": f"{host}/demo/hello",
        "tags": ["1.10.0", "1.9.1", "1.2.3"],
        "error": "",
        "cached": False,
    }
    assert admin_client.get("/registries/tags/", {"image": image}).json()["cached"] is True

    form = admin_client.get("/apps/new/").content.decode()
    assert 'id="image-tags-status" data-url="/registries/tags/"' in form
    assert "js/registry_tags.js" in form


def test_a_registry_that_is_down_leaves_the_form_working_and_says_why(
    admin_client: Client,
) -> None:
    image = f"127.0.0.1:{free_port()}/demo/hello:1"
    answer = admin_client.get("/registries/tags/", {"image": image})
    assert answer.status_code == 200
    assert answer.json()["tags"] == [] and "cannot be reached" in answer.json()["error"]

    created = post(admin_client, image=image)
    assert created.status_code == 302 and App.objects.get(name="shop").image == image

    nonsense = admin_client.get("/registries/tags/", {"image": "Not An Image"})
    assert nonsense.status_code == 400 and "demo/hello:1" in nonsense.json()["error"]


def test_the_form_sets_a_policy_and_refuses_bad_ones(admin_client: Client) -> None:
    bad = post(admin_client, follow_policy="semver-newest", follow_interval_seconds="3")
    assert bad.status_code == 400
    assert "Unknown policy 'semver-newest'" in errors_of(bad, "follow_policy")[0]
    assert errors_of(bad, "follow_interval_seconds") == ["Poll every 10 to 86400 seconds."]
    assert not App.objects.exists()

    post(admin_client, follow_policy="release-*", follow_interval_seconds="300")
    app = App.objects.get(name="shop")
    assert (app.follow_policy, app.follow_interval_seconds) == ("release-*", 300)

    # A form that leaves the settings out keeps them.
    edit = {k: v for k, v in VALID.items() if k not in ("name", "namespace")}
    admin_client.post(f"/apps/{app.pk}/edit/", edit)
    app.refresh_from_db()
    assert (app.follow_policy, app.follow_interval_seconds) == ("release-*", 300)


def test_the_api_sets_a_policy_and_refuses_bad_ones(api: APIClient, app: App) -> None:
    bad = api.patch(f"/api/apps/{app.pk}/", {"follow_policy": "release-[1"}, format="json")
    assert bad.status_code == 400
    assert "is never closed" in str(bad.json()["follow_policy"])
    good = api.patch(
        f"/api/apps/{app.pk}/",
        {"follow_policy": "semver-minor", "follow_interval_seconds": 120},
        format="json",
    )
    assert good.status_code == 200, good.content
    assert good.json()["follow_policy"] == "semver-minor"
    assert good.json()["follow_interval_seconds"] == 120

    # What the poller keeps is read-only.
    kept = api.patch(f"/api/apps/{app.pk}/", {"follow_newest_tag": "9.9.9"}, format="json")
    assert kept.status_code == 200
    assert (kept.json()["follow_newest_tag"], kept.json()["follow_last_poll"]) == ("", None)


def test_the_app_page_shows_the_policy_last_poll_newest_tag_and_error(
    admin_client: Client, make_app: Callable[..., App]
) -> None:
    app = make_app(
        name="shop",
        follow_policy="semver-minor",
        follow_last_poll=timezone.now(),
        follow_newest_tag="2.0.0",
        follow_last_error="registry.example.com cannot be reached: connection refused.",
    )
    text: Any = admin_client.get(f"/apps/{app.pk}/").content.decode()
    assert 'id="registry-polling"' in text
    assert "semver-minor" in text and "2.0.0" in text
    assert "last error: registry.example.com cannot be reached" in text
