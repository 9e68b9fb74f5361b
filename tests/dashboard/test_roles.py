"""Roles per namespace: lists show only visible namespaces, tokens cap roles, the upgrade rule."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import pytest
from django.apps import apps as registry
from django.contrib.auth.models import Group, Permission
from django.test import Client
from rest_framework.test import APIClient

from dashboard.tokens.models import ApiToken
from deployer import roles
from deployer.models import App, RoleBinding

pytestmark = pytest.mark.both_databases


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_lists_show_only_the_namespaces_a_user_may_see(
    role_user: Callable[..., Any], make_app: Callable[..., App], settings: Any
) -> None:
    settings.ALLOWED_NAMESPACES = ["shop", "pay"]
    make_app(name="cart", namespace="shop")
    make_app(name="ledger", namespace="pay")
    shop = role_user("ann", "deployer", namespace="shop")
    page = _client(shop).get("/").content.decode()
    assert "cart" in page and "ledger" not in page
    api = APIClient()
    api.force_authenticate(shop)
    names = [row["name"] for row in api.get("/api/apps/").json()["results"]]
    assert names == ["cart"]
    ledger = App.objects.get(name="ledger")
    assert api.get(f"/api/apps/{ledger.pk}/").status_code == 404
    assert _client(shop).get(f"/apps/{ledger.pk}/").status_code == 404


def test_a_group_binding_and_a_binding_on_every_namespace(
    role_user: Callable[..., Any],
) -> None:
    user = role_user("bob")
    team = Group.objects.create(name="team-a")
    user.groups.add(team)
    RoleBinding.objects.create(role="operator", group=team, namespace="team-a")
    assert roles.allows(user, "deploy", "team-a")
    assert not roles.allows(user, "view", "team-b")
    assert not roles.allows(user, "node", "*")
    assert roles.visible_namespaces(user) == frozenset({"team-a"})
    RoleBinding.objects.create(role="viewer", user=user, namespace="*")
    roles.forget(user)
    assert roles.visible_namespaces(user) is None
    assert roles.allows(user, "view", "team-b") and not roles.allows(user, "deploy", "team-b")


def test_a_token_never_does_more_than_its_owners_roles(role_user: Callable[..., Any]) -> None:
    user = role_user("ci", "admin", namespace="shop")
    token, _ = ApiToken.issue(user, "ci", ["read", "deploy"], ["shop", "pay"])
    user.greenlight_token = token
    assert roles.allows(user, "deploy", "shop")
    assert not roles.allows(user, "app", "shop")  # no admin scope
    assert not roles.allows(user, "deploy", "pay")  # the owner has no role there
    assert roles.visible_namespaces(user, "deploy") == frozenset({"shop"})


def test_bad_bindings_are_refused_by_field_and_bind_nothing(
    role_user: Callable[..., Any],
) -> None:
    admin = role_user("root-a", "admin", namespace="team-a")
    role_user("carol")
    api = APIClient()
    api.force_authenticate(admin)
    cases = [
        ({"role": "king", "user": "carol", "namespace": "team-a"}, "role"),
        ({"role": "viewer", "user": "carol", "group": "x", "namespace": "team-a"}, "group"),
        ({"role": "viewer", "namespace": "team-a"}, "user"),
        ({"role": "viewer", "user": "carol", "namespace": "Team_A"}, "namespace"),
        ({"role": "viewer", "user": "nobody", "namespace": "team-a"}, "user"),
    ]
    for body, field in cases:
        answer = api.post("/api/role-bindings/", body, format="json")
        assert answer.status_code == 400, answer.content
        assert field in answer.json(), answer.json()
    for namespace in ("team-b", "*"):
        body = {"role": "viewer", "user": "carol", "namespace": namespace}
        answer = api.post("/api/role-bindings/", body, format="json")
        assert answer.status_code == 403, answer.content
    assert not RoleBinding.objects.filter(user__username="carol").exists()
    answer = api.post(
        "/api/role-bindings/",
        {"role": "deployer", "user": "carol", "namespace": "team-a"},
        format="json",
    )
    assert answer.status_code == 201
    assert answer.json()["role"] == "deployer" and answer.json()["user"] == "carol"


def _grant(who: Any, *perms: str) -> None:
    for perm in perms:
        label, codename = perm.split(".")
        found = Permission.objects.get(content_type__app_label=label, codename=codename)
        (who.permissions if isinstance(who, Group) else who.user_permissions).add(found)


def test_the_upgrade_binds_holders_of_model_permissions_to_the_matching_role(
    django_user_model: Any,
) -> None:
    migration = importlib.import_module("deployer.migrations.0007_role_bindings")
    made = django_user_model.objects.create_user
    viewer, deployer, operator, editor, nobody = (made(name) for name in ("v", "d", "o", "e", "n"))
    django_user_model.objects.create_superuser("s", password="pw-s")
    _grant(viewer, "deployer.view_app")
    _grant(deployer, "deployer.view_app", "deployer.add_deployment")
    _grant(operator, "scaling.view_schedule", "scaling.change_schedule")
    _grant(editor, "deployer.view_app", "deployer.change_app")
    team = Group.objects.create(name="watchers")
    _grant(team, "deployer.view_app")
    migration.bind_existing(registry, None)
    bound = {
        (b.user.username if b.user else b.group.name, b.role, b.namespace)
        for b in RoleBinding.objects.select_related("user", "group")
    }
    assert bound == {
        ("v", "viewer", "*"),
        ("d", "deployer", "*"),
        ("o", "operator", "*"),
        ("e", "admin", "*"),
        ("watchers", "viewer", "*"),
    }
    assert not roles.allows(nobody, "view", "default")
