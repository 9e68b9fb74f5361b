"""Env values of an app: text, or a Kubernetes Secret's key rendered as valueFrom.secretKeyRef."""

from __future__ import annotations

from typing import Any

import pytest

from deployer.cluster import build_deployment
from deployer.envvars import MASK, masked, value_problem
from deployer.models import App

SECRET = {"secretKeyRef": {"name": "shop-secrets", "key": "api.token"}}


def descriptor(env: dict[str, Any]) -> dict[str, Any]:
    app = App(name="shop", image="demo/hello:1", frontend="shop.localhost", env=env)
    return app.snapshot()


def test_a_secret_key_becomes_value_from_in_the_deployment() -> None:
    deployment = build_deployment(descriptor({"PLAIN": "1", "TOKEN": SECRET}), 3)
    env = {item.name: item for item in deployment.spec.template.spec.containers[0].env}
    assert env["PLAIN"].value == "1" and env["PLAIN"].value_from is None
    ref = env["TOKEN"].value_from.secret_key_ref
    assert (ref.name, ref.key, env["TOKEN"].value) == ("shop-secrets", "api.token", None)
    assert env["APP_VERSION"].value == "3"


def test_the_rendered_env_is_what_the_kubernetes_api_expects() -> None:
    body = build_deployment(descriptor({"TOKEN": SECRET}), 1).to_dict()
    entry = body["spec"]["template"]["spec"]["containers"][0]["env"][0]
    assert entry["name"] == "TOKEN"
    assert entry["value_from"]["secret_key_ref"] == {
        "name": "shop-secrets",
        "key": "api.token",
        "optional": None,
    }


@pytest.mark.parametrize(
    "value",
    [
        "",
        "text with spaces",
        {"secretKeyRef": {"name": "a", "key": "b"}},
        {"secretKeyRef": {"name": "db.prod-1", "key": "PASS_word.txt"}},
        {"secretKeyRef": {"name": "a" * 253, "key": "k" * 253}},
    ],
)
def test_it_accepts_text_and_well_formed_secret_keys(value: Any) -> None:
    assert value_problem("X", value) is None


@pytest.mark.parametrize(
    "value",
    [
        None,
        3,
        ["a"],
        "x" * 40_000,
        "one\0two",
        {"secretKeyRef": "creds/key"},
        {"secretKeyRef": {"name": "-creds", "key": "k"}},
        {"secretKeyRef": {"name": "creds.", "key": "k"}},
        {"secretKeyRef": {"name": "UPPER", "key": "k"}},
        {"secretKeyRef": {"name": "a" * 254, "key": "k"}},
        {"secretKeyRef": {"name": "creds", "key": "a/b"}},
        {"secretKeyRef": {"name": "creds", "key": "."}},
        {"secretKeyRef": {"name": "creds", "key": "k" * 254}},
        {"secretKeyRef": {"name": "creds", "key": "k", "optional": True}},
        {"secretKeyRef": {"name": 1, "key": "k"}},
    ],
)
def test_it_refuses_anything_else_with_the_variable_named(value: Any) -> None:
    problem = value_problem("TOKEN", value)
    assert problem is not None and "TOKEN" in problem


def test_masked_env_keeps_the_names_only() -> None:
    assert masked({"A": "secret", "B": SECRET}) == {"A": MASK, "B": MASK}
