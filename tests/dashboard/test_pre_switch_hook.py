"""The pre-switch hook setting: the REST API, the form's Rollout section, the app page, the
Job it becomes, and a deploy's planned steps."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from deployer.deploy import DeployWorkflow
from deployer.hooks import build_job
from deployer.models import App

from .test_app_form import errors_of, post

NEW_APP = {"name": "shop", "image": "demo/hello:1", "replicas": 2, "frontend": "shop.localhost"}


def test_the_api_sets_a_hook_and_refuses_bad_ones_with_nothing_changed(api: APIClient) -> None:
    created = api.post(
        "/api/apps/", {**NEW_APP, "pre_switch_hook": "migrate --noinput"}, format="json"
    )
    assert created.status_code == 201, created.json()
    assert created.json()["pre_switch_hook_timeout_seconds"] == 300
    assert App.objects.get(name="shop").snapshot()["pre_switch_hook"] == {
        "command": "migrate --noinput",
        "timeout": 300,
    }
    url = f"/api/apps/{created.json()['id']}/"
    refusals = {
        "migrate 'unclosed": "The command does not split into words: No closing quotation.",
        '["migrate"]': "Write the command as shell words, such as: migrate --noinput "
        "(a JSON list is not accepted).",
        "migrate\nrm": "Write the command on one line, without control characters.",
        "x" * 1025: "1024 characters",
    }
    for hook, message in refusals.items():
        refused = api.patch(url, {"pre_switch_hook": hook}, format="json")
        assert refused.status_code == 400
        assert message in refused.json()["pre_switch_hook"][0]
    for timeout in (0, 86401):
        refused = api.patch(url, {"pre_switch_hook_timeout_seconds": timeout}, format="json")
        assert refused.status_code == 400
        assert refused.json()["pre_switch_hook_timeout_seconds"] == [
            "Enter a timeout between 1 and 86400 seconds."
        ]
    app = App.objects.get(name="shop")
    assert (app.pre_switch_hook, app.pre_switch_hook_timeout_seconds) == ("migrate --noinput", 300)


def test_the_form_sets_a_hook_in_the_rollout_section_and_the_page_shows_it(
    admin_client: Client,
) -> None:
    form = admin_client.get("/apps/new/").content.decode()
    rollout = form[form.index("<h2>Rollout</h2>") :]
    assert 'name="pre_switch_hook"' in rollout
    assert 'name="pre_switch_hook_timeout_seconds"' in rollout

    refused = post(admin_client, pre_switch_hook="migrate 'x", pre_switch_hook_timeout_seconds="0")
    assert refused.status_code == 400
    assert errors_of(refused, "pre_switch_hook") == [
        "The command does not split into words: No closing quotation."
    ]
    assert not App.objects.filter(name="shop").exists()

    response = post(admin_client, pre_switch_hook="migrate", pre_switch_hook_timeout_seconds="60")
    assert response.status_code == 302
    app = App.objects.get(name="shop")
    assert (app.pre_switch_hook, app.pre_switch_hook_timeout_seconds) == ("migrate", 60)
    page = admin_client.get(f"/apps/{app.pk}/").content.decode()
    assert "pre-switch hook <code>migrate</code>" in page


@pytest.mark.django_db
def test_the_hook_becomes_a_job_of_the_versions_image_and_a_step_only_when_set() -> None:
    app = App(
        name="shop",
        image="demo/hello:7",
        frontend="shop.localhost",
        env={"DATABASE_URL": "postgres://db/shop"},
        pre_switch_hook="manage.py migrate --database 'main db'",
        pre_switch_hook_timeout_seconds=90,
    )
    descriptor = app.snapshot()
    job = build_job(descriptor, 4, 12, "http://shop--v4.localhost/", ["127.0.0.9"])
    spec = job["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 90)
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["image"] == "demo/hello:7"
    assert container["args"] == ["manage.py", "migrate", "--database", "main db"]
    assert "readinessProbe" not in container and "ports" not in container
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DATABASE_URL"] == "postgres://db/shop"
    assert env["GREENLIGHT_PREVIEW_URL"] == "http://shop--v4.localhost/"
    assert (env["GREENLIGHT_VERSION"], env["GREENLIGHT_POD_IPS"]) == ("4", "127.0.0.9")
    labels = spec["template"]["metadata"]["labels"]
    assert labels == {
        "app": "shop",
        "greenlight/version": "4",
        "greenlight/deployment": "12",
        "greenlight/hook": "pre-switch",
    }
    # Neither the version's Service ({app, version}) nor the stable one selects a hook pod.
    assert "version" not in labels and "app.kubernetes.io/managed-by" not in labels

    steps = [name for name, _ in DeployWorkflow.planned_steps(descriptor)]
    assert steps.index("health") < steps.index("hook") < steps.index("switch")
    app.pre_switch_hook = ""
    assert "hook" not in [name for name, _ in DeployWorkflow.planned_steps(app.snapshot())]
