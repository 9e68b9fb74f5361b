"""API tokens: hashed storage, shown once, scopes per route, namespaces, expiry, revocation,
the older DRF tokens, the Tokens page and ``manage.py create_token``."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from dashboard.tokens.models import LAST_USED_EVERY, ApiToken
from deployer.models import App, Deployment
from tests.concurrent import at_once
from tests.dashboard import test_permission_matrix as matrix
from tests.dashboard.test_permission_matrix import world as world  # the matrix's objects

SCOPES = ["read", "deploy", "scale", "admin"]


def bearer(secret: str) -> APIClient:
    """A REST client that sends ``Authorization: Bearer <secret>``."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def issue(user: Any, scopes: list[str], **fields: Any) -> tuple[ApiToken, str]:
    return ApiToken.issue(user, fields.pop("name", "ci"), scopes, **fields)


def test_it_shows_the_secret_once_and_stores_only_its_hash(api: APIClient, admin: Any) -> None:
    created = api.post("/api/tokens/", {"name": "ci", "scopes": ["deploy"]}, format="json")
    assert created.status_code == 201
    secret = created.json()["token"]
    assert secret.startswith("glt_")
    token = ApiToken.objects.get(pk=created.json()["id"])
    assert token.scopes == ["deploy"] and token.user == admin
    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    assert secret.split("_", 2)[2] not in dump.getvalue()
    again = [api.get("/api/tokens/").content, api.get(f"/api/tokens/{token.pk}/").content]
    assert all(secret.split("_", 2)[2].encode() not in body for body in again)
    assert "token" not in api.get(f"/api/tokens/{token.pk}/").json()


def test_it_authenticates_a_bearer_token_as_its_owner(admin: Any, app: App) -> None:
    token, secret = issue(admin, ["read"])
    response = bearer(secret).get("/api/apps/")
    assert response.status_code == 200
    assert [row["name"] for row in response.json()["results"]] == ["hello"]
    token.refresh_from_db()
    assert token.last_used_at is not None
    # The older header form takes the new tokens too.
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {secret}")
    assert client.get("/api/apps/").status_code == 200


def test_it_answers_401_that_says_the_token_is_unknown(admin: Any) -> None:
    token, secret = issue(admin, ["read"])
    wrong = secret[:-4] + ("aaaa" if not secret.endswith("aaaa") else "bbbb")
    for value in (wrong, "glt_nothing", "not-a-token"):
        response = bearer(value).get("/api/apps/")
        assert response.status_code == 401, value
        assert response.json() == {"detail": "Invalid token: no token has this value."}
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="api"')


def test_it_refuses_an_expired_token_with_401_and_when_it_expired(admin: Any) -> None:
    token, secret = issue(admin, ["read"])
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
    token.refresh_from_db()
    response = bearer(secret).get("/api/apps/")
    assert response.status_code == 401
    assert response.json()["detail"].startswith(
        f"Token expired at {token.expires_at:%Y-%m-%d %H:%M:%S} UTC"
    )


def test_it_refuses_a_revoked_token_at_once(admin: Any, app: App) -> None:
    token, secret = issue(admin, ["read", "admin"])
    client = bearer(secret)
    assert client.get("/api/apps/").status_code == 200
    # A token may revoke itself; the next request is refused.
    assert client.delete(f"/api/tokens/{token.pk}/").status_code == 204
    response = client.get("/api/apps/")
    assert response.status_code == 401
    assert response.json()["detail"].startswith("Token revoked at ")
    token.refresh_from_db()
    assert token.revoked_by == admin
    assert client.delete(f"/api/tokens/{token.pk}/").status_code == 401


def test_the_older_drf_token_keeps_its_users_full_rights(admin: Any, app: App) -> None:
    key = Token.objects.create(user=admin).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/apps/").status_code == 200
    patched = client.patch(f"/api/apps/{app.pk}/", {"replicas": 3}, format="json")
    assert patched.status_code == 200
    created = client.post("/api/tokens/", {"name": "ci", "scopes": SCOPES}, format="json")
    assert created.status_code == 201


# Scopes per route: every API route of the permission matrix, as the superuser with a token.


def expected_scope(route: str, method: str) -> str:
    """The scope a route needs, written out apart from dashboard.tokens.scopes' table."""
    if method == "GET":
        return "read"
    action = route.split(":")[1]
    if action in {
        "app-deploy",
        "app-swap-back",
        "app-undeploy",
        "deployment-abort",
        "deployment-promote",
        "deployment-reject",
    }:
        return "deploy"
    if action == "app-scale" or route.startswith("scaling-api:"):
        return "scale"
    return "admin"


API_CASES = [case for case in matrix.API if ":" in case.route]


@pytest.mark.parametrize("case", API_CASES, ids=lambda case: case.id)
def test_each_route_needs_its_scope(case: Any, world: Any, django_user_model: Any) -> None:
    superuser = django_user_model.objects.create_superuser("super", password="pw-super-user")
    url = reverse(case.route, kwargs=case.kwargs(world))
    body = json.dumps(case.data(world) if case.data is not None else {}).encode()
    needed = expected_scope(case.route, case.method)
    others = [scope for scope in SCOPES if scope != needed]
    _, narrow = issue(superuser, others, name="narrow")
    refused = Client().generic(
        case.method,
        url,
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {narrow}"},
    )
    assert refused.status_code == 403, refused.content
    assert f"needs the {needed} scope" in refused.json()["detail"]
    # With read besides, as a real token has: some views read before they write.
    _, enough = issue(superuser, ["read", needed], name="enough")
    allowed = Client().generic(
        case.method,
        url,
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {enough}"},
    )
    assert allowed.status_code == case.expected[matrix.SUPERUSER], allowed.content


def test_a_token_never_does_more_than_its_owner(viewer: Any, app: App) -> None:
    _, secret = issue(viewer, SCOPES)
    client = bearer(secret)
    assert client.get("/api/apps/").status_code == 200
    assert client.post(f"/api/apps/{app.pk}/deploy/", {}, format="json").status_code == 403
    assert client.patch(f"/api/apps/{app.pk}/", {"replicas": 3}, format="json").status_code == 403


# Namespaces.


@pytest.fixture
def team_apps(make_app: Any, make_deployment: Any) -> tuple[App, App]:
    ours = make_app(name="shop", namespace="team-a", frontend="shop.localhost")
    theirs = make_app(name="hello", namespace="default", frontend="hello.localhost")
    make_deployment(ours)
    make_deployment(theirs)
    return ours, theirs


def test_a_namespace_limited_token_sees_and_changes_only_its_namespaces(
    admin: Any, team_apps: tuple[App, App]
) -> None:
    ours, theirs = team_apps
    _, secret = issue(admin, SCOPES, namespaces=["team-a"])
    client = bearer(secret)
    assert [row["name"] for row in client.get("/api/apps/").json()["results"]] == ["shop"]
    deployments = client.get("/api/deployments/").json()["results"]
    assert {row["app"] for row in deployments} == {ours.pk}
    assert client.get(f"/api/apps/{theirs.pk}/").status_code == 404
    assert client.get(f"/api/apps/{ours.pk}/").status_code == 200
    refused = client.post(f"/api/apps/{theirs.pk}/deploy/", {}, format="json")
    assert refused.status_code == 403
    assert refused.json()["detail"].endswith("limited to the namespaces team-a, not default.")
    theirs_deploy = Deployment.objects.get(app=theirs)
    assert client.post(f"/api/deployments/{theirs_deploy.pk}/abort/").status_code == 403
    moved = client.patch(f"/api/apps/{ours.pk}/", {"namespace": "default"}, format="json")
    assert moved.status_code == 403
    elsewhere = {"name": "cart", "image": "demo/hello:1", "namespace": "default"}
    assert client.post("/api/apps/", elsewhere, format="json").status_code == 403
    # Cluster-wide writes are out of a namespace-limited token's reach.
    node = client.post("/api/scaling/nodes/node-1/cordon/", {}, format="json")
    assert node.status_code == 403
    assert ours.namespace == "team-a" and not App.objects.filter(name="cart").exists()


# Token management.


def test_a_token_needs_admin_to_make_tokens_and_never_a_broader_one(admin: Any) -> None:
    _, deploy_only = issue(admin, ["read", "deploy"], name="deployer")
    made = bearer(deploy_only).post(
        "/api/tokens/", {"name": "x", "scopes": ["read"]}, format="json"
    )
    assert made.status_code == 403
    soon = timezone.now() + timedelta(days=1)
    _, limited = issue(admin, ["read", "admin"], namespaces=["team-a"], expires_at=soon)
    broader = bearer(limited).post(
        "/api/tokens/",
        {"name": "y", "scopes": ["read", "deploy"], "namespaces": ["team-b"]},
        format="json",
    )
    assert broader.status_code == 400
    assert set(broader.json()) == {"scopes", "namespaces", "expires_at"}
    assert not ApiToken.objects.filter(name__in=["x", "y"]).exists()


def test_it_names_each_bad_field_and_creates_nothing(api: APIClient) -> None:
    response = api.post(
        "/api/tokens/",
        {
            "name": " ",
            "scopes": ["read", "root"],
            "namespaces": ["Team_A"],
            "expires_at": "2020-01-01T00:00:00Z",
        },
        format="json",
    )
    assert response.status_code == 400
    errors = response.json()
    assert errors["name"] == ["Give the token a name, for example the CI job that uses it."]
    assert errors["scopes"] == ["Unknown scope 'root'; choose from read, deploy, scale, admin."]
    assert errors["namespaces"][0].startswith("'Team_A': a namespace is a DNS label")
    assert "is in the past" in errors["expires_at"][0]
    assert not ApiToken.objects.exists()


def test_users_see_their_own_tokens_and_an_admin_everyones(
    admin: Any, viewer: Any, stranger: Any
) -> None:
    mine, _ = issue(viewer, ["read"], name="viewer-ci")
    theirs, _ = issue(stranger, ["read"], name="stranger-ci")
    client = APIClient()
    client.force_authenticate(viewer)
    assert [row["name"] for row in client.get("/api/tokens/").json()["results"]] == ["viewer-ci"]
    assert client.delete(f"/api/tokens/{theirs.pk}/").status_code == 404
    root = APIClient()
    root.force_authenticate(admin)
    names = {row["name"] for row in root.get("/api/tokens/").json()["results"]}
    assert names == {"viewer-ci", "stranger-ci"}
    only = root.get("/api/tokens/", {"user": "stranger"}).json()["results"]
    assert [row["name"] for row in only] == ["stranger-ci"]
    assert root.delete(f"/api/tokens/{theirs.pk}/").status_code == 204
    theirs.refresh_from_db()
    mine.refresh_from_db()
    assert theirs.revoked_at is not None and mine.revoked_at is None


# Concurrency: last use and revocation.


@pytest.mark.both_databases
@pytest.mark.django_db(transaction=True)
def test_concurrent_uses_write_last_used_once_a_minute(django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user("ci-owner")
    token, _ = issue(owner, ["read"])
    now = timezone.now()
    copies = [ApiToken.objects.get(pk=token.pk) for _ in range(6)]
    wrote = at_once([lambda copy=copy: copy.mark_used(now) for copy in copies])
    assert wrote.count(True) == 1, wrote
    later = now + LAST_USED_EVERY / 2
    assert not ApiToken.objects.get(pk=token.pk).mark_used(later)
    assert ApiToken.objects.get(pk=token.pk).mark_used(now + LAST_USED_EVERY)
    token.refresh_from_db()
    assert token.last_used_at == now + LAST_USED_EVERY


@pytest.mark.both_databases
@pytest.mark.django_db(transaction=True)
def test_concurrent_revocations_revoke_once(django_user_model: Any) -> None:
    owner = django_user_model.objects.create_user("ci-owner")
    token, secret = issue(owner, ["read"])
    copies = [ApiToken.objects.get(pk=token.pk) for _ in range(4)]
    revoked = at_once([lambda copy=copy: copy.revoke(by=owner) for copy in copies])
    assert revoked.count(True) == 1, revoked
    assert bearer(secret).get("/api/tokens/").status_code == 401


# The Tokens page.


def test_the_page_creates_a_token_and_shows_its_secret_once(viewer: Any) -> None:
    client = Client()
    client.force_login(viewer)
    page = client.post(
        reverse("tokens"), {"name": "ci", "scopes": ["read", "deploy"], "namespaces": "a, b"}
    )
    assert page.status_code == 201
    token = ApiToken.objects.get(user=viewer)
    assert token.scopes == ["read", "deploy"] and token.namespaces == ["a", "b"]
    secret = page.context["secret"]
    assert secret.startswith(f"glt_{token.prefix}_") and secret in page.content.decode()
    assert "no-store" in page.headers["Cache-Control"]
    listing = client.get(reverse("tokens")).content.decode()
    assert secret not in listing and token.masked in listing and "API tokens" in listing


def test_the_form_says_what_to_fix_and_creates_nothing(viewer: Any) -> None:
    client = Client()
    client.force_login(viewer)
    past = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    page = client.post(
        reverse("tokens"),
        {"name": "", "scopes": ["read"], "namespaces": "ok, -bad", "expires_at": past},
    )
    assert page.status_code == 400
    errors = page.context["form"].errors
    assert errors["name"] == ["Give the token a name, for example the CI job that uses it."]
    assert errors["namespaces"][0].startswith("'-bad': a namespace is a DNS label")
    assert "is in the past" in errors["expires_at"][0]
    unknown = client.post(reverse("tokens"), {"name": "x", "scopes": ["root"]})
    assert unknown.context["form"].errors["scopes"] == [
        "Unknown scope root; choose from read, deploy, scale, admin."
    ]
    assert not ApiToken.objects.exists()


def test_only_the_owner_or_an_admin_revokes_on_the_page(
    viewer: Any, stranger: Any, admin: Any
) -> None:
    token, _ = issue(viewer, ["read"])
    other = Client()
    other.force_login(stranger)
    assert other.post(reverse("token-revoke", args=[token.pk])).status_code == 403
    token.refresh_from_db()
    assert token.revoked_at is None
    owner = Client()
    owner.force_login(viewer)
    assert owner.post(reverse("token-revoke", args=[token.pk])).status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None and token.revoked_by == viewer


# manage.py create_token.


def test_the_command_prints_a_working_token(admin: Any, app: App) -> None:
    out = io.StringIO()
    call_command(
        "create_token",
        "--user=root",
        "--name=ci",
        "--scopes=deploy,read",
        "--namespaces=default",
        "--expires-in=30d",
        stdout=out,
    )
    secret = out.getvalue().strip()
    token = ApiToken.objects.get(name="ci")
    assert token.scopes == ["read", "deploy"] and token.namespaces == ["default"]
    assert token.expires_at is not None
    remaining = token.expires_at - timezone.now()
    assert timedelta(days=29) < remaining <= timedelta(days=30)
    assert bearer(secret).get("/api/apps/").status_code == 200


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--user=nobody"], "No user named 'nobody'."),
        (["--scopes=root"], "--scopes: Unknown scope 'root'"),
        (["--expires-in=soon"], "--expires-in: 'soon' is not a duration"),
        (["--namespaces=A"], "--namespaces: 'A': a namespace is a DNS label"),
    ],
)
def test_the_command_says_what_to_fix(admin: Any, options: list[str], message: str) -> None:
    defaults = {"--user": "--user=root", "--scopes": "--scopes=read"}
    for option in options:
        defaults[option.split("=")[0]] = option
    with pytest.raises(CommandError, match="^" + message.replace("(", r"\(")):
        call_command("create_token", "--name=ci", *defaults.values())
    assert not ApiToken.objects.exists()
