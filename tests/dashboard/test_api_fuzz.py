"""Random bodies to every write endpoint of the REST API: a 4xx with a message, never a 5xx.

A refused request changes nothing: the counts of apps, deployments, scaling runs and
log lines, and the app's own fields, are the same after it as before.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from deployer.models import App, Deployment, DeploymentLog
from scaling.models import NodeGroup, ScalingRun, Schedule

pytestmark = pytest.mark.django_db

# GREENLIGHT_FUZZ_EXAMPLES asks for a longer hunt (see tests/conftest.py).
HUNT = os.environ.get("GREENLIGHT_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(HUNT or 60),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**15), max_value=10**15)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    # Values a user might plausibly send, so that validation goes past the type checks.
    | st.sampled_from(
        ["demo/hello:2", "hello", "Bad_Name", "x" * 300, "100m", "64Mi", "-1", "1e9", "*/5 * * * *",
         "Europe/Amsterdam", "Mars/Olympus", "http://x.localhost/", "a.localhost", "07:00", "", " "]
    )
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


def bodies(keys: list[str]) -> st.SearchStrategy[Any]:
    """Objects with some of ``keys`` (and maybe others), or any JSON value at all."""
    known = st.dictionaries(st.sampled_from(keys), json_values, max_size=len(keys))
    return known | json_values


APP_KEYS = [*App.DESCRIPTOR_FIELDS, "live_version", "webhook_secret", "id"]


def state(app: App) -> tuple[Any, ...]:
    """Everything a refused request must leave as it was."""
    app.refresh_from_db()
    fields = tuple(getattr(app, name) for name in App.DESCRIPTOR_FIELDS)
    return (
        App.objects.count(),
        Deployment.objects.count(),
        DeploymentLog.objects.count(),
        ScalingRun.objects.count(),
        Schedule.objects.count(),
        NodeGroup.objects.count(),
        fields,
    )


def send(api: APIClient, method: str, path: str, body: Any) -> Any:
    response = getattr(api, method)(path, json.dumps(body), content_type="application/json")
    assert response.status_code < 500, (method, path, body, response.content[:500])
    if response.status_code >= 400:
        # DRF's error shapes: {"detail": ...} or {field: [messages]}; either way not empty.
        assert response.json(), (method, path, body)
    return response


@pytest.fixture
def fuzz_app(make_app: Any) -> App:
    """An app that is not live, so that no request reaches a cluster."""
    return make_app(name="fuzz", frontend="fuzz.localhost")


@FUZZ
@given(body=bodies(APP_KEYS))
def test_creating_and_editing_apps(api: APIClient, fuzz_app: App, body: Any) -> None:
    for method, path in (("post", "/api/apps/"), ("patch", f"/api/apps/{fuzz_app.pk}/")):
        before = state(fuzz_app)
        response = send(api, method, path, body)
        if response.status_code >= 400:
            assert state(fuzz_app) == before, (method, body)
        elif method == "post":
            App.objects.filter(pk=response.json()["id"]).delete()


@FUZZ
@given(body=bodies(["image", "replicas"]))
def test_deploy_and_scale(api: APIClient, fuzz_app: App, body: Any) -> None:
    for path in (f"/api/apps/{fuzz_app.pk}/deploy/", f"/api/apps/{fuzz_app.pk}/scale/"):
        before = state(fuzz_app)
        if send(api, "post", path, body).status_code >= 400:
            assert state(fuzz_app) == before, (path, body)
    Deployment.objects.all().delete()


@FUZZ
@given(body=bodies(["push_data", "repository", "tag", "image"]), signature=st.text(max_size=80))
def test_registry_webhooks(fuzz_app: App, body: Any, signature: str) -> None:
    hook = APIClient()
    before = state(fuzz_app)
    send(hook, "post", f"/api/hooks/dockerhub/{fuzz_app.webhook_secret}/", body)
    response = hook.post(
        f"/api/hooks/generic/{fuzz_app.pk}/",
        json.dumps(body),
        content_type="application/json",
        HTTP_X_GREENLIGHT_SIGNATURE=signature,
    )
    assert response.status_code in (400, 401, 403), response.content[:300]
    assert state(fuzz_app)[1] <= before[1] + 1  # at most the one valid Docker Hub push
    Deployment.objects.all().delete()


@FUZZ
@given(body=bodies(["replicas", "baseline", "desired", "force", "deadline"]))
def test_scaling_actions(api: APIClient, fuzz_app: App, body: Any) -> None:
    group = NodeGroup.objects.get_or_create(
        name="fuzz", defaults={"provider": "local", "min_size": 1, "max_size": 5, "desired": 2}
    )[0]
    for path in (
        f"/api/scaling/apps/{fuzz_app.pk}/scale/",
        f"/api/scaling/node-groups/{group.pk}/capacity/",
        "/api/scaling/nodes/local-node-1/drain/",
        "/api/scaling/nodes/local-node-1/cordon/",
    ):
        before = state(fuzz_app)
        if send(api, "post", path, body).status_code >= 400:
            assert state(fuzz_app) == before, (path, body)
    ScalingRun.objects.all().delete()
