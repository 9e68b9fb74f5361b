"""End to end: Chromium types an image in the app form and gets the registry's tags, or why not.

daphne serves the dashboard on the test database; Debian's docker-registry holds the tags.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from deployer.models import App
from tests.registrykit import push_image, registry_server
from tests.servers import (
    Server,
    free_port,
    launch_chromium,
    python_command,
    shared_database_env,
    start_process,
    stop_process,
    wait_for_port,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PASSWORD = "registry-e2e-password"


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    """Playwright's sync API keeps an event loop in this thread; the ORM calls here are sync."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with registry_server(tmp_path_factory.mktemp("registry")) as server:
        for tag in ("1.0.0", "1.1.0", "1.0.1"):
            push_image(server.extra["url"], "demo/hello", tag)
        yield server


@pytest.fixture(scope="module")
def web(
    django_db_setup: Any, redis: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """daphne on a free loopback port, on the test database."""
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
        PYTHONUNBUFFERED="1",
    )
    command = python_command(
        "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "dashboard.asgi:application"
    )  # fmt: skip
    process: subprocess.Popen[bytes] = start_process("web", command, workdir, env)
    try:
        wait_for_port(port, process=process, timeout=60)
        yield f"http://127.0.0.1:{port}", workdir
    finally:
        stop_process(process)


@pytest.fixture
def page(
    web: tuple[str, Path], transactional_db: Any, django_user_model: Any,
    request: pytest.FixtureRequest, tmp_path: Path,
) -> Iterator[Any]:  # fmt: skip
    """A page signed in as a superuser; on failure the web log and a screenshot are kept."""
    from playwright.sync_api import sync_playwright

    url, workdir = web
    django_user_model.objects.create_superuser("admin", password=PASSWORD)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        script_errors: list[str] = []
        page.on("pageerror", lambda error: script_errors.append(str(error)))
        page.goto(url + "/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(url + "/")
        yield page
        if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
            page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
            log = (workdir / "web.log").read_text(errors="replace")[-6000:]
            print(f"screenshot: {tmp_path / 'failure.png'}\n--- web ---\n{log}")
        browser.close()
    assert not script_errors, f"JavaScript errors: {script_errors}"


def test_the_image_field_offers_tags_newest_first_and_works_when_the_registry_is_down(
    page: Any, web: tuple[str, Path], registry: Server
) -> None:
    url, _ = web
    host = registry.extra["host"]
    page.goto(url + "/apps/new/")
    page.fill("#id_image", f"{host}/demo/hello:1.0.0")
    status = page.locator("#image-tags-status")
    expect(status).to_have_text(f"3 tags of {host}/demo/hello from the registry, newest first.")
    options = page.locator("#image-suggestions option[data-registry]")
    assert options.evaluate_all("all => all.map(o => o.value)") == [
        f"{host}/demo/hello:1.1.0",
        f"{host}/demo/hello:1.0.1",
        f"{host}/demo/hello:1.0.0",
    ]

    down = f"127.0.0.1:{free_port()}/demo/hello:1"
    page.fill("#id_image", down)
    expect(status).to_contain_text("No tag suggestions:")
    expect(status).to_contain_text("cannot be reached")
    expect(options).to_have_count(0)

    page.fill("#id_name", "follower")
    page.fill("#id_frontend", "follower.localhost")
    page.fill("#id_follow_policy", "semver-minor")
    page.click("form button[type=submit].primary")
    page.wait_for_url(f"{url}/apps/*/")
    app = App.objects.get(name="follower")
    assert (app.image, app.follow_policy) == (down, "semver-minor")
    expect(page.locator("#registry-polling")).to_contain_text("semver-minor")
