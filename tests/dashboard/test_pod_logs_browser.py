"""End to end: Chromium opens a pod's log viewer from the app page and sees a request line appear.

daphne serves the dashboard on the test database with the session's localcluster as its
cluster; the pod runs the demo image, which prints a line for each request it answers.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from playwright.sync_api import expect

from deployer.cluster import MANAGED_BY, MANAGER
from deployer.models import App
from tests.dashboard.test_pod_logs import running
from tests.servers import (
    free_port,
    launch_chromium,
    python_command,
    shared_database_env,
    start_process,
    stop_process,
    wait_for_port,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PASSWORD = "logs-password"


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    """Playwright's sync API keeps an event loop in this thread; the ORM calls here are sync."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@dataclass
class Web:
    """The dashboard's process and where it answers."""

    url: str
    workdir: Path

    def log(self) -> str:
        """What daphne printed."""
        return (self.workdir / "web.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def web(
    django_db_setup: Any, redis: Any, kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Web]:
    """daphne on the test database, with the session's localcluster as its cluster."""
    workdir = tmp_path_factory.mktemp("web")
    (workdir / "staticfiles").mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GREENLIGHT_DB_PATH")}
    env.update(shared_database_env())
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        GREENLIGHT_VAR_DIR=str(workdir),
        GREENLIGHT_WEB_PORT=str(port),
        GREENLIGHT_REDIS_URL=str(redis.extra["url"]),
        GREENLIGHT_KUBECONFIG=str(kubeconfig),
        PYTHONUNBUFFERED="1",
    )
    command = python_command(
        "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "dashboard.asgi:application"
    )  # fmt: skip
    process: subprocess.Popen[bytes] = start_process("web", command, workdir, env)
    try:
        wait_for_port(port, process=process, timeout=60)
        yield Web(f"http://127.0.0.1:{port}", workdir)
    finally:
        stop_process(process)


@pytest.fixture
def core(kubeconfig: Path) -> client.CoreV1Api:
    """The official client on the session's localcluster."""
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))


def test_the_log_viewer_follows_a_pods_output_live(
    web: Web, core: client.CoreV1Api, transactional_db: Any, django_user_model: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    django_user_model.objects.create_superuser("admin", password=PASSWORD)
    app = App.objects.create(name="logs", image="demo/hello:1", frontend="logs.localhost")
    app.live_version = 1
    app.save(update_fields=["live_version"])
    pod = f"logs-v1-{uuid.uuid4().hex[:5]}"
    core.create_namespaced_pod(
        app.namespace,
        {
            "metadata": {
                "name": pod,
                "labels": {"app": "logs", "version": "1", MANAGED_BY: MANAGER},
            },
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "app", "image": "demo/hello:1", "ports": [{"containerPort": 8080}]}
                ],
            },
        },
    )
    ip = running(core, app.namespace, pod).status.pod_ip
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        page = chromium.new_page()
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            page.goto(web.url + "/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", PASSWORD)
            page.click("button[type=submit]")
            page.goto(f"{web.url}/apps/{app.pk}/")
            page.click(f"tr:has-text('{pod}') a.pod-logs")
            page.wait_for_url(f"**/pods/{pod}/logs/")
            expect(page.locator("#pod-log-state")).to_have_text("Following live.")
            marker = f"/hello-{uuid.uuid4().hex[:8]}"
            deadline = time.monotonic() + 20
            while True:  # the demo server may still be binding its port
                try:
                    urllib.request.urlopen(f"http://{ip}:8080{marker}", timeout=2).close()
                    break
                except urllib.error.HTTPError:
                    break  # answered (a 404 for this path), and printed the request line
                except OSError:
                    assert time.monotonic() < deadline, "the pod never answered"
                    time.sleep(0.2)
            expect(page.locator("#log li", has_text=marker)).to_have_count(1)
            core.delete_namespaced_pod(pod, app.namespace, grace_period_seconds=0)
            expect(page.locator("#pod-log-state")).to_have_text("The pod is gone.")
            assert not errors, f"JavaScript errors: {errors}"
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'failure.png'}\n--- web ---\n{web.log()[-6000:]}")
            raise
        finally:
            chromium.close()
