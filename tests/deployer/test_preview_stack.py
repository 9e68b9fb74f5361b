"""Previews on the real stack: etcd, proxysync, HAProxy, localcluster, a worker, daphne, Chromium.

A new version answers at ``<app>--v<N>.localhost`` and, on the app's own hostname, with
``X-Greenlight-Version: <N>`` while the frontend still serves the old one; the entries
reach HAProxy through its runtime API (its master's reload count does not move), and go
when the version is rolled back or retired. In traffic mode service the preview goes
through a preview backend of its own to the version's Service.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer import k8s, preview, runner, services, taskqueue
from deployer.collaborators import StopDeployment, backend_name
from deployer.deploy import DeployWorkflow
from deployer.etcdstore import EtcdStore
from deployer.lbconfig import preview_backend
from deployer.models import App, Deployment
from tests.deployer.lbkit import master_state
from tests.servers import Stack, launch_chromium, running_stack

pytestmark = pytest.mark.timeout(240)

HEADER = "X-Greenlight-Version"


@pytest.fixture(scope="module")
def deploy_stack(
    tmp_path_factory: pytest.TempPathFactory,
    django_db_setup: None,
    redis: Any,
    etcd: Any,
    kubeconfig: Path,
) -> Iterator[Stack]:
    """The deployer tests' stack (conftest's ``live`` uses it), with daphne for the page."""
    with running_stack(
        tmp_path_factory.mktemp("preview-stack"),
        redis_url=str(redis.extra["url"]),
        etcd_endpoint=str(etcd.extra["endpoint"]),
        kubeconfig=kubeconfig,
        label="preview",
    ) as stack:
        yield stack


def ask(stack: Stack, hostname: str, version: str | None = None) -> tuple[int, str]:
    """GET /health through HAProxy on a new connection; (status, the version that answered)."""
    headers = {"Host": hostname, "Connection": "close"}
    if version is not None:
        headers[HEADER] = version
    connection = http.client.HTTPConnection("127.0.0.1", stack.lb_port, timeout=5)
    try:
        connection.request("GET", "/health", headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    try:
        answered = str(json.loads(body).get("version"))
    except (ValueError, AttributeError):
        answered = ""
    return response.status, answered


def answers(stack: Stack, hostname: str, version: str | None = None, times: int = 4) -> set[str]:
    """The versions answering ``times`` requests (``-<status>`` for a request that failed)."""
    seen = set()
    for _ in range(times):
        status, answered = ask(stack, hostname, version)
        seen.add(answered if status == 200 else f"-{status}")
    return seen


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Whether ``check()`` holds within ``timeout`` (a deletion is not waited for by its writer)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # HAProxy offers nothing to watch
    return True


def finished(deployment: Deployment, timeout: float = 90) -> Deployment:
    """Poll the row until it is terminal (the database offers no watch)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment.refresh_from_db()
        if deployment.is_terminal:
            return deployment
        time.sleep(0.2)
    raise AssertionError(f"deployment #{deployment.pk} is still {deployment.status}")


def log_of(deployment: Deployment) -> str:
    """The deployment's stored log."""
    return "\n".join(deployment.logs.values_list("message", flat=True))


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> Callable[[App], Deployment]:
    """Deploy ``app`` in this process (so that a test can hold its run), nothing sent to Celery."""
    monkeypatch.setattr(taskqueue, "send", lambda *args, **kwargs: None)

    def deploy(app: App) -> Deployment:
        deployment = services.request_deploy(app)
        runner.run(deployment.pk, "preview-test@localhost")
        deployment.refresh_from_db()
        return deployment

    return deploy


def test_the_preview_reaches_the_new_version_without_a_reload_and_goes_with_it(
    live: Stack, in_process: Callable[[App], Deployment], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App.objects.create(
        name="peek",
        image="demo/hello:1",
        replicas=2,
        frontend="peek.localhost",
        health_deadline=15,
        guard_bake_seconds=0,
        keep_old_seconds=60,
    )
    reloads: list[tuple[int, int]] = []
    publish = preview.publish

    def counted(workflow: Any) -> None:
        # Whatever reload the run's earlier writes caused is over before the count is read.
        with EtcdStore() as store:
            assert store.wait_applied(store.changes()[1], 20)
        before = master_state(live.haproxy)[0]
        publish(workflow)
        reloads.append((before, master_state(live.haproxy)[0]))

    monkeypatch.setattr(preview, "publish", counted)

    first = in_process(app)
    assert first.status == Deployment.Status.SUCCEEDED, log_of(first)
    url = f"http://peek--v1.localhost:{live.lb_port}/"
    assert f"Preview of v1 at {url}" in log_of(first)
    assert preview.preview_url(first) == url

    # Held at the switch: the frontend still serves v1, the preview and the header v2.
    seen: dict[str, set[str]] = {}

    def held(workflow: DeployWorkflow) -> None:
        seen["preview"] = answers(live, "peek--v2.localhost")
        seen["header"] = answers(live, "peek.localhost", "2")
        seen["frontend"] = answers(live, "peek.localhost")
        seen["no such preview"] = answers(live, "peek.localhost", "7")
        seen["old preview"] = answers(live, "peek--v1.localhost")
        raise StopDeployment("held at the switch by the test")

    with monkeypatch.context() as patch:
        patch.setattr(DeployWorkflow, "write_route", held)
        second = in_process(app)
    assert second.status == Deployment.Status.FAILED, log_of(second)
    assert seen == {
        "preview": {"2"},
        "header": {"2"},
        "frontend": {"1"},
        "no such preview": {"1"},
        "old preview": {"1"},
    }
    assert reloads and all(before == after for before, after in reloads), reloads
    # The rollback took the preview away before the version.
    assert "Removed the preview of v2" in log_of(second)
    with EtcdStore() as store:
        assert store.get_preview(backend_name("default", "peek", 2)) is None
    assert eventually(lambda: answers(live, "peek--v2.localhost") == {"-503"})
    assert answers(live, "peek.localhost", "2") == {"1"}

    # After a switch: the live version's preview, and the header of the warm old one.
    third = in_process(app)
    assert third.status == Deployment.Status.SUCCEEDED, log_of(third)
    assert third.version == 3
    assert answers(live, "peek.localhost") == {"3"}
    assert answers(live, "peek--v3.localhost") == {"3"}
    assert answers(live, "peek.localhost", "1") == {"1"}
    assert answers(live, "peek--v1.localhost") == {"1"}
    assert all(before == after for before, after in reloads), reloads
    assert len(reloads) == 3

    # Retiring the warm version removes its preview.
    runner.retire(third.pk, 1)
    with EtcdStore() as store:
        assert store.get_preview(backend_name("default", "peek", 1)) is None
        assert store.get_preview(backend_name("default", "peek", 3)) is not None
    assert eventually(lambda: answers(live, "peek--v1.localhost") == {"-503"})
    assert answers(live, "peek.localhost", "1") == {"3"}

    # Undeploying the app removes the live version's preview with its backend.
    gone = services.request_undeploy(app)
    runner.run(gone.pk, "preview-test@localhost")
    gone.refresh_from_db()
    assert gone.status == Deployment.Status.SUCCEEDED, log_of(gone)
    with EtcdStore() as store:
        assert store.get_preview(backend_name("default", "peek", 3)) is None
    assert answers(live, "peek--v3.localhost") == {"-503"}
    assert answers(live, "peek.localhost", "3") == {"-503"}


def test_in_traffic_mode_service_the_preview_reaches_the_versions_own_service(
    live: Stack, in_process: Callable[[App], Deployment], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = App.objects.create(
        name="peeksvc",
        image="demo/hello:1",
        replicas=1,
        frontend="peeksvc.localhost",
        health_deadline=15,
        guard_bake_seconds=0,
        keep_old_seconds=60,
        traffic="service",
    )
    first = in_process(app)
    assert first.status == Deployment.Status.SUCCEEDED, log_of(first)
    url = f"http://peeksvc--v1.localhost:{live.lb_port}/"
    v1 = preview_backend(backend_name("default", "peeksvc", 1))
    assert f"Preview of v1 at {url}" in log_of(first)
    assert f"through preview backend {v1} to Service peeksvc-v1" in log_of(first)
    assert preview.published_url(first) == url
    with EtcdStore() as store:
        record = store.get_backend(v1)
    service = k8s.core_v1().read_namespaced_service("peeksvc-v1", "default")
    assert record is not None and record["servers"] == [
        {"name": "peeksvc-v1", "address": service.spec.cluster_ip, "port": 8080}
    ]

    # Held at the switch: the stable Service and the frontend serve v1, the preview v2.
    seen: dict[str, set[str]] = {}

    def held(workflow: DeployWorkflow) -> None:
        eventually(lambda: answers(live, "peeksvc--v2.localhost") == {"2"}, 20)
        seen["preview"] = answers(live, "peeksvc--v2.localhost")
        seen["header"] = answers(live, "peeksvc.localhost", "2")
        seen["frontend"] = answers(live, "peeksvc.localhost")
        raise StopDeployment("held at the switch by the test")

    with monkeypatch.context() as patch:
        patch.setattr(DeployWorkflow, "write_route", held)
        second = in_process(app)
    assert second.status == Deployment.Status.FAILED, log_of(second)
    assert seen == {"preview": {"2"}, "header": {"2"}, "frontend": {"1"}}
    # The rollback took the preview, then its backend with the version's.
    assert "Removed the preview of v2" in log_of(second)
    v2 = preview_backend(backend_name("default", "peeksvc", 2))
    with EtcdStore() as store:
        assert store.get_preview(v2) is None and store.get_backend(v2) is None
    assert eventually(lambda: answers(live, "peeksvc--v2.localhost") == {"-503"})
    assert answers(live, "peeksvc.localhost", "2") == {"1"}

    # After the switch the warm v1 still answers at its preview, through its own Service.
    third = in_process(app)
    assert third.status == Deployment.Status.SUCCEEDED, log_of(third)
    assert third.version == 3
    assert answers(live, "peeksvc.localhost") == {"3"}
    assert eventually(lambda: answers(live, "peeksvc--v3.localhost") == {"3"}, 20)
    assert answers(live, "peeksvc.localhost", "1") == {"1"}

    # Retiring v1 removes its preview and preview backend.
    runner.retire(third.pk, 1)
    with EtcdStore() as store:
        assert store.get_preview(v1) is None and store.get_backend(v1) is None
        assert store.get_preview(preview_backend(backend_name("default", "peeksvc", 3)))
    assert eventually(lambda: answers(live, "peeksvc--v1.localhost") == {"-503"})
    assert answers(live, "peeksvc.localhost", "1") == {"3"}


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright keeps a loop in this thread
    try:
        with sync_playwright() as playwright:
            chromium = launch_chromium(playwright)
            yield chromium
            chromium.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


@pytest.mark.e2e
def test_a_user_follows_the_preview_link_of_a_deployment_to_its_version(
    live: Stack, browser: Any, django_user_model: Any
) -> None:
    django_user_model.objects.create_superuser("admin", password="preview-password")
    app = App.objects.create(
        name="glance",
        image="demo/hello:1",
        replicas=1,
        frontend="glance.localhost",
        health_deadline=15,
        guard_bake_seconds=0,
    )
    deployment = finished(services.request_deploy(app))
    assert deployment.status == Deployment.Status.SUCCEEDED, log_of(deployment)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        page.goto(f"{live.web_url}/deployments/{deployment.pk}/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "preview-password")
        page.click("button[type=submit]")
        link = page.locator("#preview-link")
        assert link.inner_text() == "Preview v1"
        assert link.get_attribute("href") == f"http://glance--v1.localhost:{live.lb_port}/"
        with context.expect_page() as opened:
            link.click()
        answer = opened.value
        answer.wait_for_load_state()
        assert json.loads(answer.locator("body").inner_text())["version"] == "1"
    finally:
        context.close()
