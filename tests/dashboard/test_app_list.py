"""The apps list at /."""

from __future__ import annotations

from typing import Any

from django.test import Client

from deployer.models import Deployment


def test_it_redirects_anonymous_users_to_sign_in(client: Client, db: Any) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_it_lists_apps_with_last_deployment_status_and_frontend(
    admin_client: Client, app: Any, make_deployment: Any
) -> None:
    make_deployment(app, version=3, status=Deployment.Status.FAILED)
    app.live_version = 2
    app.save()
    response = admin_client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-app="hello"' in html
    assert "v2" in html
    assert "demo/hello:1" in html
    assert 'href="http://hello.localhost:8080/"' in html
    assert 'class="badge failed"' in html


def test_it_says_when_the_cluster_does_not_answer(admin_client: Client, app: Any) -> None:
    app.live_version = 1
    app.save()
    html = admin_client.get("/").content.decode()
    assert "? / 2" in html


def test_it_filters_by_namespace(admin_client: Client, make_app: Any) -> None:
    make_app(name="shop", namespace="team-a")
    make_app(name="blog", namespace="team-b")
    html = admin_client.get("/?namespace=team-a").content.decode()
    assert 'data-app="shop"' in html
    assert 'data-app="blog"' not in html
    assert '<option value="team-b"' in html


def test_it_shows_an_empty_state_with_a_create_button(admin_client: Client) -> None:
    html = admin_client.get("/").content.decode()
    assert "No apps" in html
    assert 'href="/apps/new/"' in html


def test_it_refuses_users_without_view_permission(client: Client, stranger: Any) -> None:
    client.force_login(stranger)
    assert client.get("/").status_code == 403


def test_it_hides_new_app_from_viewers(client: Client, viewer: Any, app: Any) -> None:
    client.force_login(viewer)
    html = client.get("/").content.decode()
    assert 'data-app="hello"' in html
    assert "New app" not in html
