"""Random values in every form of the dashboard, and random query strings on its lists.

The field names come from the pages themselves, so a new field is fuzzed as soon as it
is rendered. A refused post answers with the form again (never a 5xx) and changes
nothing; a list with a nonsensical filter or page number still renders.
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployer.models import App, Deployment, DeploymentLog
from scaling.models import AppAction, NodeGroup, ScalingRun, Schedule

pytestmark = pytest.mark.django_db

# GREENLIGHT_FUZZ_EXAMPLES asks for a longer hunt (see tests/conftest.py).
HUNT = os.environ.get("GREENLIGHT_FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(HUNT or 40),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

values = st.text(max_size=40) | st.sampled_from(
    ["0", "1", "2", "-1", "999999999999999999999", "1.5", "on", "off", "true", "hello",
     "demo/hello:2", "x.localhost", "100m", "64Mi", "*/5 * * * *", "61 25 * * *", "Europe/Amsterdam",
     "Nowhere/Else", "07:00", "25:61", "cron", "weekly", "absolute", "percent", "local", "aws",
     "1000", "\x00", "💥"]
)  # fmt: skip


def names_in(html: str) -> list[str]:
    """The field names a page renders, CSRF token left out."""
    found = set(re.findall(r'name="([^"]+)"', html)) - {"csrfmiddlewaretoken"}
    return sorted(found)


def posts(names: list[str]) -> st.SearchStrategy[dict[str, str]]:
    """Form bodies: some of ``names`` with random values, maybe a stray key."""
    return st.dictionaries(st.sampled_from(names) | st.text(max_size=6), values, max_size=12)


def state() -> tuple[Any, ...]:
    """Counts and fields that a refused post must leave as they were."""
    apps = tuple(App.objects.order_by("pk").values_list(*App.DESCRIPTOR_FIELDS))
    return (
        apps,
        Deployment.objects.count(),
        DeploymentLog.objects.count(),
        tuple(Schedule.objects.order_by("pk").values_list("name", "cron", "timezone", "kind")),
        AppAction.objects.count(),
        tuple(NodeGroup.objects.order_by("pk").values_list("name", "min_size", "max_size")),
        ScalingRun.objects.count(),
    )


@pytest.fixture
def fuzz_app(make_app: Any) -> App:
    """An app that is not live, so that no request reaches a cluster."""
    return make_app(name="fuzz", frontend="fuzz.localhost")


@pytest.fixture
def group(db: None) -> NodeGroup:
    return NodeGroup.objects.create(
        name="fuzz", provider="local", min_size=1, max_size=5, desired=2
    )


@pytest.fixture
def targets(admin_client: Client, fuzz_app: App, group: NodeGroup) -> list[tuple[str, list[str]]]:
    """(URL to post to, the field names of its form) for every form."""
    app_page = admin_client.get(f"/apps/{fuzz_app.pk}/").content.decode()
    schedule_page = admin_client.get("/scaling/schedules/new/").content.decode()
    group_page = admin_client.get(f"/scaling/node-groups/{group.pk}/").content.decode()
    found = [
        ("/apps/new/", names_in(admin_client.get("/apps/new/").content.decode())),
        (f"/apps/{fuzz_app.pk}/edit/", names_in(admin_client.get(f"/apps/{fuzz_app.pk}/edit/").content.decode())),
        (f"/apps/{fuzz_app.pk}/deploy/", names_in(app_page)),
        (f"/apps/{fuzz_app.pk}/scale/", names_in(app_page)),
        (f"/apps/{fuzz_app.pk}/undeploy/", names_in(admin_client.get(f"/apps/{fuzz_app.pk}/undeploy/").content.decode())),
        ("/scaling/schedules/new/", names_in(schedule_page)),
        ("/scaling/node-groups/new/", names_in(group_page)),
        (f"/scaling/node-groups/{group.pk}/", names_in(group_page)),
        (f"/scaling/node-groups/{group.pk}/capacity/", ["desired"]),
        (f"/scaling/apps/{fuzz_app.pk}/scale/", ["replicas", "baseline"]),
        ("/scaling/nodes/local-node-1/drain/", ["force", "deadline"]),
    ]  # fmt: skip
    assert all(names for _, names in found)
    assert "env-TOTAL_FORMS" in found[0][1]
    return found


@FUZZ
@given(data=st.data())
def test_forms_refuse_bad_posts_cleanly(
    admin_client: Client, targets: list[tuple[str, list[str]]], data: st.DataObject
) -> None:
    for url, names in targets:
        body = data.draw(posts(names), label=url)
        before = state()
        response = admin_client.post(url, body)
        assert response.status_code < 500, (url, body)
        refused = response.status_code == 400 or (
            # The cluster page's small forms go back to it with the error as a message.
            response.status_code == 302 and response["Location"] == "/scaling/cluster/"
        )
        if refused:
            assert state() == before, (url, body)
        else:
            assert response.status_code == 302, (url, body, response.status_code)
        # What a good post created is undone, so that the next draw starts alike.
        App.objects.exclude(name="fuzz").delete()
        Deployment.objects.all().delete()
        Schedule.objects.all().delete()
        NodeGroup.objects.exclude(name="fuzz").delete()
        ScalingRun.objects.all().delete()


LISTS = [
    "/",
    "/deployments/",
    "/apps/{app}/history/",
    "/scaling/runs/",
    "/scaling/schedules/preview/",
    "/api/apps/",
    "/api/deployments/",
    "/api/deployments/{deployment}/logs/",
    "/api/scaling/runs/",
]
QUERY_KEYS = ["namespace", "status", "kind", "page", "after", "app", "trigger", "cron",
              "timezone", "days", "at_time", "until_time", "q", "limit"]  # fmt: skip


@FUZZ
@given(query=st.dictionaries(st.sampled_from(QUERY_KEYS) | st.text(max_size=5), values, max_size=4))
def test_lists_take_any_query(
    admin_client: Client, fuzz_app: App, make_deployment: Any, query: dict[str, str]
) -> None:
    deployment = Deployment.objects.first() or make_deployment(fuzz_app, lines=3)
    for path in LISTS:
        url = path.format(app=fuzz_app.pk, deployment=deployment.pk)
        response = admin_client.get(url, query)
        assert response.status_code in (200, 400, 404), (url, query, response.status_code)
