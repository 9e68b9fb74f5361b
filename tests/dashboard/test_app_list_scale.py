"""The app list at hundreds of apps: the same queries whatever the number, pods read as counts."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from deployer import k8s
from deployer.models import Deployment
from deployer.status import app_readiness, app_status
from tests.history import add_apps, numbered


def app_list_queries(client: Client) -> tuple[int, int]:
    """(queries, rows) of one request of the app list."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get("/")
    assert response.status_code == 200
    return len(captured.captured_queries), len(response.context["rows"])


def test_the_app_list_costs_the_same_queries_at_one_app_and_at_500(
    admin_client: Client, admin: Any
) -> None:
    add_apps(admin, numbered(0, 1), 3)
    at_one = app_list_queries(admin_client)
    add_apps(admin, numbered(1, 499), 3)
    at_500 = app_list_queries(admin_client)

    assert at_one[1] == 1
    assert at_500[1] == 500
    assert at_500[0] == at_one[0]


def test_each_row_links_the_app_its_last_deployment_and_its_frontend(
    admin_client: Client, admin: Any
) -> None:
    (app,) = add_apps(admin, numbered(0, 1), 4)
    last = Deployment.objects.filter(app=app, version=4).get()

    html = admin_client.get("/").content.decode()

    assert f'href="/apps/{app.pk}/"' in html
    assert f'href="/deployments/{last.pk}/"' in html
    assert 'class="badge succeeded"' in html
    assert re.search(r"v4 · \d+ s ago", html)
    assert 'href="http://app0.localhost:8080/"' in html


@pytest.fixture
def cluster(kubeconfig: Path, settings: Any) -> Iterator[Any]:
    """The session's localcluster as the dashboard reads it, and a namespace of this test's."""
    settings.KUBECONFIG = kubeconfig
    settings.KUBE_IN_CLUSTER = False
    settings.KUBE_CONTEXT = None
    k8s.reset()
    core = k8s.core_v1()
    namespace = f"list-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        yield core, namespace
    finally:
        core.delete_namespace(namespace)
        k8s.reset()


def start_pod(core: Any, namespace: str, app: str, version: int, index: int) -> None:
    """A Greenlight-managed pod of ``app`` at ``version`` that becomes Ready."""
    labels = {"app": app, "version": str(version), "app.kubernetes.io/managed-by": "greenlight"}
    body = {
        "metadata": {"name": f"{app}-v{version}-{index}", "labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": "demo/hello:1"}],
        },
    }
    core.create_namespaced_pod(namespace, body)


def test_the_list_counts_ready_pods_of_the_live_version_as_the_app_page_does(
    cluster: Any, make_app: Any
) -> None:
    core, namespace = cluster
    shop = make_app("shop", namespace=namespace, live_version=2, replicas=2)
    blog = make_app("blog", namespace=namespace, live_version=1, replicas=3)
    for app, version, index in [("shop", 2, 0), ("shop", 2, 1), ("shop", 1, 0), ("blog", 1, 0)]:
        start_pod(core, namespace, app, version, index)

    deadline = time.monotonic() + 60
    while sum(status["ready"] for status in app_status([shop, blog]).values()) < 3:
        assert time.monotonic() < deadline, "the pods did not become ready"
        time.sleep(0.2)  # the kubelet starts them on its own
    full = app_status([shop, blog])
    counts = app_readiness([shop, blog])

    assert counts[shop.pk]["ready"] == full[shop.pk]["ready"] == 2
    assert counts[blog.pk]["ready"] == full[blog.pk]["ready"] == 1
    assert counts[shop.pk]["pods"] == []
    assert counts[blog.pk]["desired"] == 3
