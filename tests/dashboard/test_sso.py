"""Single sign-on against a real OpenID Connect provider process, and local sign-in's switch."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.messages import get_messages
from django.test import Client

from dashboard.sso import discovery
from dashboard.sso.models import Identity
from tests.dashboard.oidckit import (
    CLIENT_ID,
    CLIENT_SECRET,
    Provider,
    oidc_provider,
    path_and_query,
    query,
)
from tests.servers import free_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.both_databases]

BACKENDS = ["django.contrib.auth.backends.ModelBackend", "dashboard.sso.backend.OidcBackend"]


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """One provider process for the module's tests."""
    with oidc_provider(tmp_path_factory.mktemp("oidc")) as running:
        yield running


def use_provider(settings: Any, issuer: str, *, local_login: bool = True) -> None:
    """Turn single sign-on on for ``issuer``, as GREENLIGHT_OIDC_* would."""
    settings.OIDC_ISSUER = issuer
    settings.OIDC_ENABLED = True
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_PROVIDER_NAME = "Example ID"
    settings.AUTHENTICATION_BACKENDS = BACKENDS
    settings.LOCAL_LOGIN = local_login


@pytest.fixture
def sso(settings: Any, provider: Provider, db: None) -> Provider:
    """Single sign-on on, through the module's provider."""
    use_provider(settings, provider.issuer)
    return provider


def sign_in(client: Client, provider: Provider, sub: str | None, next_url: str = "/") -> Any:
    """The whole code flow as a browser runs it; the response to the callback."""
    start = client.get("/oidc/authenticate/", {"next": next_url})
    assert start.status_code == 302, start.content[:300]
    authorization_url = start["Location"]
    assert authorization_url.startswith(provider.issuer + "/oauth2/authorize?")
    back = provider.authorize(authorization_url, sub)
    assert back.startswith("http://testserver/oidc/callback/?"), back
    return client.get(path_and_query(back))


def shown(response: Any) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_it_creates_the_user_on_first_sign_in_with_the_groups_of_the_claim(sso: Provider) -> None:
    sso.set_user(
        "sub-alice",
        preferred_username="alice",
        email="alice@example.com",
        given_name="Alice",
        groups=["team-a", "ops"],
    )
    client = Client()
    response = sign_in(client, sso, "sub-alice", next_url="/deployments/")
    assert response.status_code == 302 and response["Location"] == "/deployments/"
    user = User.objects.get(username="alice")
    assert (user.email, user.first_name, user.has_usable_password()) == (
        "alice@example.com",
        "Alice",
        False,
    )
    assert sorted(user.groups.values_list("name", flat=True)) == ["sso:ops", "sso:team-a"]
    assert Identity.objects.get(user=user).subject == "sub-alice"
    assert int(client.session["_auth_user_id"]) == user.pk


def test_a_renamed_user_stays_the_same_account(sso: Provider) -> None:
    sso.set_user("sub-bob", preferred_username="bob", email="bob@example.com")
    sign_in(Client(), sso, "sub-bob")
    first = User.objects.get(username="bob")
    sso.set_user("sub-bob", preferred_username="robert", email="robert@example.com")
    sign_in(Client(), sso, "sub-bob")
    first.refresh_from_db()
    assert (first.username, first.email) == ("robert", "robert@example.com")
    assert User.objects.filter(username__in=["bob", "robert"]).count() == 1


def test_groups_follow_the_claim_at_every_sign_in_and_local_groups_are_kept(
    sso: Provider,
) -> None:
    sso.set_user("sub-carol", preferred_username="carol", groups=["team-a", "team-b"])
    sign_in(Client(), sso, "sub-carol")
    carol = User.objects.get(username="carol")
    local = Group.objects.create(name="release-managers")
    carol.groups.add(local)
    Group.objects.create(name="team-c")  # a local group named as a provider group is not joined

    sso.set_user("sub-carol", preferred_username="carol", groups=["team-b", "team-c"])
    sign_in(Client(), sso, "sub-carol")
    assert sorted(carol.groups.values_list("name", flat=True)) == [
        "release-managers",
        "sso:team-b",
        "sso:team-c",
    ]
    sso.set_user("sub-carol", preferred_username="carol")  # no group claim: no provider groups
    sign_in(Client(), sso, "sub-carol")
    assert list(carol.groups.values_list("name", flat=True)) == ["release-managers"]
    assert Group.objects.filter(name="sso:team-a").exists(), "groups themselves are kept"


def test_a_provider_user_never_takes_over_a_local_account_of_the_same_name(
    sso: Provider,
) -> None:
    local = User.objects.create_superuser("admin", password="local-password")
    sso.set_user("sub-mallory", preferred_username="admin", email="admin@example.com")
    client = Client()
    sign_in(client, sso, "sub-mallory")
    created = Identity.objects.get(subject="sub-mallory").user
    assert created.pk != local.pk and created.username == "admin-2"
    assert not created.is_superuser
    assert client.get("/admin/").status_code == 302  # not staff


def test_a_user_without_preferred_username_is_named_by_email(sso: Provider) -> None:
    sso.set_user("sub-dave", email="dave@example.com")
    sign_in(Client(), sso, "sub-dave")
    assert Identity.objects.get(subject="sub-dave").user.username == "dave@example.com"


def test_a_malformed_group_claim_refuses_the_sign_in_and_keeps_the_groups(
    sso: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    sso.set_user("sub-erin", preferred_username="erin", groups=["team-a"])
    sign_in(Client(), sso, "sub-erin")
    sso.set_user("sub-erin", preferred_username="erin", groups={"team": "b"})
    client = Client()
    with caplog.at_level(logging.WARNING, logger="dashboard.sso"):
        response = sign_in(client, sso, "sub-erin")
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert "'groups' claim must be a list of group names" in " ".join(shown(response))
    assert "failed single sign-on" in caplog.text
    erin = User.objects.get(username="erin")
    assert list(erin.groups.values_list("name", flat=True)) == ["sso:team-a"]
    assert client.get("/").status_code == 302


def test_a_denied_sign_in_is_logged_and_shown_in_words(
    sso: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client()
    with caplog.at_level(logging.WARNING, logger="dashboard.sso"):
        response = sign_in(client, sso, None)
    assert response.status_code == 302 and response["Location"] == "/login/"
    assert shown(response)[0].startswith(
        "Signing in with Example ID failed: you or the provider declined the sign-in"
    )
    assert "failed single sign-on from 127.0.0.1" in caplog.text
    assert "declined" in caplog.text
    assert client.get("/").status_code == 302


def test_an_answer_for_a_sign_in_not_started_here_is_refused(sso: Provider) -> None:
    started = Client()
    start = started.get("/oidc/authenticate/")
    back = sso.authorize(start["Location"], "sub-frank")
    other = Client()
    other.get("/login/")
    response = other.get(path_and_query(back))
    assert response["Location"] == "/login/"
    assert "had expired or was started elsewhere" in shown(response)[0]
    # The right browser with a forged state is refused as well.
    forged = {**query(back), "state": "forged"}
    response = started.get("/oidc/callback/", forged)
    assert "does not match a sign-in started here" in shown(response)[0]
    assert not User.objects.filter(username="sub-frank").exists()


def test_a_code_the_provider_refuses_to_exchange_is_reported(
    sso: Provider, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A code issued to another client fails at the token endpoint."""
    sso.set_user("sub-gina", preferred_username="gina")
    settings.OIDC_RP_CLIENT_ID = "other-client"
    client = Client()
    start = client.get("/oidc/authenticate/")
    back = sso.authorize(start["Location"], "sub-gina")
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID  # the token request now names another client
    with caplog.at_level(logging.WARNING):
        response = client.get(path_and_query(back))
    assert response["Location"] == "/login/"
    assert "the provider's token or user endpoint failed" in shown(response)[0]
    assert not User.objects.filter(username="gina").exists()


def test_the_sign_in_page_offers_the_provider_and_the_local_form(sso: Provider) -> None:
    page = Client().get("/login/?next=/deployments/").content.decode()
    assert "Sign in with Example ID" in page
    assert 'href="/oidc/authenticate/?next=%2Fdeployments%2F"' in page
    assert 'id="id_password"' in page


def test_with_local_login_off_the_form_is_gone_and_a_post_is_refused(
    sso: Provider, settings: Any, django_user_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.LOCAL_LOGIN = False
    django_user_model.objects.create_superuser("admin", password="local-password")
    client = Client()
    page = client.get("/login/").content.decode()
    assert "Sign in with Example ID" in page and 'id="id_password"' not in page
    with caplog.at_level(logging.WARNING, logger="dashboard.sso"):
        response = client.post("/login/", {"username": "admin", "password": "local-password"})
    assert response.status_code == 403
    assert "Signing in with a username and password is turned off here" in response.content.decode()
    assert "refused a username and password sign-in for 'admin'" in caplog.text
    assert client.get("/").status_code == 302, "not signed in"
    # The admin site's own sign-in follows the same switch.
    admin_page = client.get("/admin/login/?next=/admin/")
    assert admin_page.status_code == 302
    assert admin_page["Location"] == "/login/?next=%2Fadmin%2F"
    response = client.post("/admin/login/", {"username": "admin", "password": "local-password"})
    assert response.status_code == 403
    assert client.get("/admin/").status_code == 302


def test_with_local_login_on_the_admin_sign_in_is_django_s(
    settings: Any, django_user_model: Any
) -> None:
    django_user_model.objects.create_superuser("admin", password="local-password")
    client = Client()
    assert client.get("/admin/login/").status_code == 200
    response = client.post(
        "/admin/login/?next=/admin/", {"username": "admin", "password": "local-password"}
    )
    assert response.status_code == 302 and response["Location"] == "/admin/"


def test_a_wrong_password_is_logged_and_shown(
    db: None, django_user_model: Any, caplog: pytest.LogCaptureFixture
) -> None:
    django_user_model.objects.create_user("ivan", password="right-password")
    with caplog.at_level(logging.WARNING, logger="dashboard.sso"):
        response = Client().post("/login/", {"username": "ivan", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "failed sign-in for 'ivan' from 127.0.0.1" in caplog.text


def test_without_an_issuer_single_sign_on_is_off(db: None) -> None:
    client = Client()
    assert "Sign in with" not in client.get("/login/").content.decode()
    assert client.get("/oidc/authenticate/").status_code == 404
    assert client.get("/oidc/callback/?code=x&state=y").status_code == 404


def test_an_unreadable_issuer_is_logged_at_startup_and_shown_on_sign_in(
    settings: Any, db: None, caplog: pytest.LogCaptureFixture
) -> None:
    use_provider(settings, f"http://127.0.0.1:{free_port()}")
    with caplog.at_level(logging.ERROR, logger="dashboard.sso"):
        discovery.check_at_startup()
    assert "Single sign-on is unavailable until the provider answers" in caplog.text
    assert "/.well-known/openid-configuration could not be read" in caplog.text
    client = Client()
    response = client.get("/oidc/authenticate/")
    assert response["Location"] == "/login/"
    assert shown(response)[0].startswith("Signing in with Example ID is unavailable: ")


def test_the_discovery_document_is_read_once_and_checked(
    settings: Any, provider: Provider, db: None
) -> None:
    settings.OIDC_ISSUER = provider.issuer
    first = discovery.provider()
    assert first.jwks_uri == provider.issuer + "/jwks"
    assert discovery.provider() is first
    with pytest.raises(discovery.DiscoveryError, match="answered HTTP 404"):
        discovery.fetch(provider.issuer + "/nowhere", timeout=5)


class _Document(BaseHTTPRequestHandler):
    """Serves the class's ``document`` at any path."""

    document: dict[str, Any] = {}

    def do_GET(self) -> None:
        body = json.dumps(self.document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def document_server() -> Iterator[tuple[str, type[_Document]]]:
    """An HTTP server on loopback answering a discovery document the test writes."""
    handler = type("Handler", (_Document,), {"document": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"issuer": "https://elsewhere.example.com"}, "names the issuer"),
        ({"jwks_uri": None}, "lacks jwks_uri"),
        (
            {"id_token_signing_alg_values_supported": ["HS256"]},
            "does not sign ID tokens with RS256",
        ),
    ],
)
def test_a_discovery_document_that_cannot_serve_is_refused_with_the_reason(
    document_server: tuple[str, type[_Document]], change: dict[str, Any], message: str
) -> None:
    issuer, handler = document_server
    handler.document = {
        "issuer": issuer,
        "authorization_endpoint": issuer + "/authorize",
        "token_endpoint": issuer + "/token",
        "userinfo_endpoint": issuer + "/userinfo",
        "jwks_uri": issuer + "/jwks",
        "id_token_signing_alg_values_supported": ["RS256"],
    }
    assert discovery.fetch(issuer, timeout=5).token_endpoint == issuer + "/token"
    handler.document = {k: v for k, v in {**handler.document, **change}.items() if v is not None}
    with pytest.raises(discovery.DiscoveryError, match=message):
        discovery.fetch(issuer, timeout=5)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GREENLIGHT_OIDC_ISSUER": "idp.example.com"}, "must be an http:// or https:// URL"),
        (
            {"GREENLIGHT_OIDC_CLIENT_SECRET": ""},
            "set GREENLIGHT_OIDC_CLIENT_ID and GREENLIGHT_OIDC_CLIENT_SECRET too",
        ),
        ({"GREENLIGHT_OIDC_SCOPES": "email profile"}, "GREENLIGHT_OIDC_SCOPES must include openid"),
        ({"GREENLIGHT_OIDC_GROUP_PREFIX": ""}, "GREENLIGHT_OIDC_GROUP_PREFIX must not be empty"),
        (
            {"GREENLIGHT_OIDC_ISSUER": "", "GREENLIGHT_LOCAL_LOGIN": "0"},
            "GREENLIGHT_LOCAL_LOGIN=0 leaves no way to sign in",
        ),
    ],
)
def test_settings_refuse_an_unusable_single_sign_on_configuration(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    complete = {
        "GREENLIGHT_OIDC_ISSUER": "https://idp.example.com",
        "GREENLIGHT_OIDC_CLIENT_ID": "greenlight",
        "GREENLIGHT_OIDC_CLIENT_SECRET": "secret",
    }
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GREENLIGHT_OIDC", "GREENLIGHT_LOCAL_LOGIN", "DJANGO_"))
    }
    environment.update(SECRET_KEY="x" * 50, GREENLIGHT_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", "import dashboard.settings"],
        cwd=Path(__file__).resolve().parents[2],
        env={**environment, **complete},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    result = subprocess.run(
        [sys.executable, "-c", "import dashboard.settings"],
        cwd=Path(__file__).resolve().parents[2],
        env={**environment, **complete, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]


def test_the_provider_s_error_text_is_logged_but_not_shown(
    sso: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    client = Client()
    start = client.get("/oidc/authenticate/")
    state = query(start["Location"])["state"]
    with caplog.at_level(logging.WARNING, logger="dashboard.sso"):
        response = client.get(
            "/oidc/callback/",
            {"error": "server_error", "error_description": "Call +1 555 0100", "state": state},
        )
    assert shown(response) == ["Signing in with Example ID failed: the provider refused it."]
    assert "server_error: 'Call +1 555 0100'" in caplog.text


def test_a_deactivated_user_is_refused(sso: Provider) -> None:
    sso.set_user("sub-hank", preferred_username="hank")
    sign_in(Client(), sso, "sub-hank")
    User.objects.filter(username="hank").update(is_active=False)
    client = Client()
    response = sign_in(client, sso, "sub-hank")
    assert shown(response) == [
        "Signing in with Example ID failed: the account hank is deactivated."
    ]
    assert "_auth_user_id" not in client.session
