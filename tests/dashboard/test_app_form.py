"""Creating and editing apps through the form."""

from __future__ import annotations

from typing import Any

from django.test import Client

from deployer.models import App

VALID = {
    "name": "shop",
    "namespace": "default",
    "image": "demo/hello:1",
    "replicas": "3",
    "frontend": "shop.localhost",
    "container_port": "8080",
    "health_enabled": "on",
    "health_type": "http-json",
    "health_path": "/health",
    "health_port": "",
    "health_timeout": "2",
    "health_deadline": "120",
    "cpu_request": "100m",
    "cpu_limit": "500m",
    "memory_request": "64Mi",
    "memory_limit": "256Mi",
    "keep_old_seconds": "30",
    "stop_delay_seconds": "5",
    "max_unavailable": "1",
    "env-TOTAL_FORMS": "2",
    "env-INITIAL_FORMS": "0",
    "env-MIN_NUM_FORMS": "0",
    "env-MAX_NUM_FORMS": "1000",
    "env-0-key": "LOG_LEVEL",
    "env-0-value": "debug",
    "env-1-key": "",
    "env-1-value": "",
}


def post(client: Client, url: str = "/apps/new/", **changes: str) -> Any:
    return client.post(url, {**VALID, **changes})


def errors_of(response: Any, field: str) -> list[str]:
    return list(response.context["form"].errors.get(field, []))


def test_it_creates_an_app_with_env_and_lands_on_its_page(admin_client: Client, admin: Any) -> None:
    response = post(admin_client)
    app = App.objects.get(name="shop")
    assert response.status_code == 302
    assert response["Location"] == f"/apps/{app.pk}/"
    assert app.env == {"LOG_LEVEL": "debug"}
    assert app.replicas == 3
    assert app.keep_old_seconds == 30
    assert app.created_by == admin


def test_it_offers_images_used_before(admin_client: Client, app: Any) -> None:
    html = admin_client.get("/apps/new/").content.decode()
    assert '<datalist id="image-suggestions"><option value="demo/hello:1">' in html


def test_it_puts_each_bad_value_on_its_field(admin_client: Client) -> None:
    response = post(
        admin_client,
        name="Shop_1",
        image="http://x",
        replicas="1000",
        frontend="http://shop.localhost/path",
        container_port="70000",
        cpu_request="lots",
        memory_limit="12 parsecs",
        health_path="health",
    )
    assert response.status_code == 400
    for field in (
        "name",
        "image",
        "replicas",
        "frontend",
        "container_port",
        "cpu_request",
        "memory_limit",
        "health_path",
    ):
        assert errors_of(response, field), field
    assert "without 'http://'" in errors_of(response, "frontend")[0]
    assert not App.objects.exists()


def test_it_refuses_a_limit_below_the_request(admin_client: Client) -> None:
    response = post(admin_client, cpu_request="1", cpu_limit="500m")
    assert errors_of(response, "cpu_limit") == ["The limit must be at least the request."]


def test_it_refuses_a_frontend_another_app_uses(admin_client: Client, app: Any) -> None:
    response = post(admin_client, frontend="hello.localhost")
    assert "already the frontend of app default/hello" in errors_of(response, "frontend")[0]


def test_it_refuses_a_name_taken_in_the_namespace(admin_client: Client, app: Any) -> None:
    response = post(admin_client, name="hello")
    assert errors_of(response, "name") == [
        "An app named hello already exists in namespace default."
    ]


def test_it_marks_bad_and_duplicate_env_rows(admin_client: Client) -> None:
    response = post(
        admin_client,
        **{"env-0-key": "1BAD", "env-1-key": "", "env-1-value": "orphan"},
    )
    envs = response.context["envs"]
    assert "not starting with a digit" in envs.forms[0].errors["key"][0]
    assert "Give this value a name" in envs.forms[1].errors["key"][0]
    response = post(admin_client, **{"env-1-key": "LOG_LEVEL", "env-1-value": "x"})
    assert response.context["envs"].forms[1].errors["key"] == ["LOG_LEVEL is already set above."]
    assert not App.objects.exists()


def test_it_refuses_reserved_env_names_on_their_row(admin_client: Client) -> None:
    response = post(admin_client, **{"env-0-key": "APP_VERSION"})
    assert "set by Greenlight" in response.context["envs"].forms[0].errors["key"][0]
    assert "set by Greenlight" in response.content.decode()
    assert not App.objects.exists()


def test_it_edits_an_app_but_keeps_its_name(admin_client: Client, app: Any) -> None:
    response = post(
        admin_client, f"/apps/{app.pk}/edit/", name="renamed", frontend="hello.localhost"
    )
    assert response.status_code == 302
    app.refresh_from_db()
    assert app.name == "hello"
    assert app.replicas == 3
    assert app.env == {"LOG_LEVEL": "debug"}


def test_it_fills_the_edit_form_with_the_env_rows(admin_client: Client, make_app: Any) -> None:
    app = make_app(env={"A": "1", "B": "2"})
    html = admin_client.get(f"/apps/{app.pk}/edit/").content.decode()
    assert 'value="A"' in html and 'value="B"' in html
    assert 'name="env-TOTAL_FORMS" value="3"' in html


def test_it_requires_the_csrf_token(admin: Any, db: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    assert client.post("/apps/new/", VALID).status_code == 403


def test_it_answers_404_for_a_missing_app(admin_client: Client) -> None:
    assert admin_client.get("/apps/999/edit/").status_code == 404


def test_it_refuses_viewers(client: Client, viewer: Any, app: Any) -> None:
    client.force_login(viewer)
    assert client.get("/apps/new/").status_code == 403
    assert client.post(f"/apps/{app.pk}/edit/", VALID).status_code == 403


def test_it_says_edits_of_a_live_app_take_effect_at_the_next_deploy(
    admin_client: Client, app: Any
) -> None:
    assert 'id="live-note"' not in admin_client.get(f"/apps/{app.pk}/edit/").content.decode()
    app.live_version = 3
    app.save()
    html = admin_client.get(f"/apps/{app.pk}/edit/").content.decode()
    assert (
        "v3 is live and keeps running as it is: changes here take effect at the next deploy" in html
    )


def test_it_saves_a_row_whose_value_comes_from_a_secret(admin_client: Client) -> None:
    response = post(
        admin_client,
        **{"env-1-key": "DB_PASSWORD", "env-1-source": "secret", "env-1-value": "db.creds/pass_1"},
    )
    assert response.status_code == 302
    assert App.objects.get(name="shop").env == {
        "LOG_LEVEL": "debug",
        "DB_PASSWORD": {"secretKeyRef": {"name": "db.creds", "key": "pass_1"}},
    }


def test_it_puts_a_bad_secret_reference_on_its_row(admin_client: Client) -> None:
    cases = {
        "no-slash": "as <secret>/<key>",
        "Bad_Name/key": "is not a Secret name",
        "creds/bad key": "is not a Secret key",
        "creds/": "Give the key",
    }
    for text, message in cases.items():
        response = post(
            admin_client, **{"env-1-key": "TOKEN", "env-1-source": "secret", "env-1-value": text}
        )
        assert response.status_code == 400
        assert message in response.context["envs"].forms[1].errors["value"][0], text
    assert not App.objects.exists()


def test_it_fills_the_edit_form_with_a_secret_row(admin_client: Client, make_app: Any) -> None:
    app = make_app(env={"TOKEN": {"secretKeyRef": {"name": "api", "key": "token"}}})
    response = admin_client.get(f"/apps/{app.pk}/edit/")
    row = response.context["envs"].forms[0]
    assert (row["key"].value(), row["source"].value(), row["value"].value()) == (
        "TOKEN",
        "secret",
        "api/token",
    )
    assert '<option value="secret" selected>' in response.content.decode()
