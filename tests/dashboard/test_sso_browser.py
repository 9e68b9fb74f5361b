"""End to end: Chromium signs in to the dashboard through a real OpenID Connect provider.

oidc-provider-mock runs in its own process; daphne serves the dashboard with
GREENLIGHT_OIDC_* pointing at it (and local sign-in off), on the test database.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from playwright.sync_api import expect

from dashboard.sso.models import Identity
from deployer.models import App, RoleBinding
from tests.dashboard.oidckit import CLIENT_ID, CLIENT_SECRET, Provider, oidc_provider
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

PROVIDER_NAME = "Example ID"


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    """Playwright's sync API keeps an event loop in this thread; the ORM calls here are sync."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    """The identity provider's process."""
    with oidc_provider(tmp_path_factory.mktemp("oidc")) as running:
        yield running


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
    django_db_setup: Any,
    redis: Any,
    provider: Provider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Web]:
    """daphne with single sign-on through ``provider`` and username and password sign-in off."""
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
        GREENLIGHT_LOG_LEVEL="INFO",
        GREENLIGHT_OIDC_ISSUER=provider.issuer,
        GREENLIGHT_OIDC_CLIENT_ID=CLIENT_ID,
        GREENLIGHT_OIDC_CLIENT_SECRET=CLIENT_SECRET,
        GREENLIGHT_OIDC_NAME=PROVIDER_NAME,
        GREENLIGHT_LOCAL_LOGIN="0",
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def page(
    browser: Any, web: Web, provider: Provider, transactional_db: Any,
    request: pytest.FixtureRequest, tmp_path: Path,
) -> Iterator[Any]:  # fmt: skip
    """A fresh browser page; on failure the servers' logs and a screenshot are kept."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    yield page
    if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"screenshot: {tmp_path / 'failure.png'}\n--- web ---\n{web.log()[-6000:]}")
        print(f"--- provider ---\n{provider.log()[-4000:]}")
    context.close()
    assert not script_errors, f"JavaScript errors: {script_errors}"


def sign_in_at_provider(page: Any, web: Web, sub: str) -> None:
    """From the sign-in page, through the provider's authorization page as ``sub``."""
    page.goto(web.url + "/")
    page.wait_for_url(web.url + "/login/?next=/")
    expect(page.locator("#id_password")).to_have_count(0)
    page.click(f"text=Sign in with {PROVIDER_NAME}")
    page.wait_for_url("**/oauth2/authorize?**")
    page.fill("input[name=sub]", sub)
    page.click("button:has-text('Authorize')")


def test_a_user_signs_in_through_the_provider_and_sees_only_the_namespaces_its_groups_give(
    page: Any, web: Web, provider: Provider
) -> None:
    # The provider's group team-a is viewer on the namespace team-a, and nowhere else.
    team = Group.objects.create(name="sso:team-a")
    RoleBinding.objects.create(role="viewer", group=team, namespace="team-a")
    App.objects.create(
        name="shop", namespace="team-a", image="demo/hello:1", replicas=1, frontend="shop.localhost"
    )
    billing = App.objects.create(
        name="billing",
        namespace="team-b",
        image="demo/hello:1",
        replicas=1,
        frontend="billing.localhost",
    )
    provider.set_user(
        "sub-alice",
        preferred_username="alice",
        email="alice@example.com",
        groups=["team-a", "observers"],
    )

    sign_in_at_provider(page, web, "sub-alice")

    page.wait_for_url(web.url + "/")
    expect(page.locator(".userbox .username")).to_have_text("alice")
    expect(page.locator("main")).to_contain_text("shop")
    expect(page.locator("main")).not_to_contain_text("billing")
    expect(page.locator("main")).not_to_contain_text("team-b")
    assert page.goto(f"{web.url}/apps/{billing.pk}/").status == 404
    alice = User.objects.get(username="alice")
    assert Identity.objects.get(user=alice).subject == "sub-alice"
    assert sorted(alice.groups.values_list("name", flat=True)) == ["sso:observers", "sso:team-a"]

    # Signed out and in again after the provider moved alice out of team-a: no more apps.
    page.goto(web.url + "/")
    page.click("text=Sign out")
    page.wait_for_url("**/login/")
    provider.set_user("sub-alice", preferred_username="alice", groups=["observers"])
    sign_in_at_provider(page, web, "sub-alice")
    page.wait_for_url(web.url + "/")
    assert list(alice.groups.values_list("name", flat=True)) == ["sso:observers"]
    assert User.objects.filter(username="alice").count() == 1
    assert page.goto(web.url + "/").status == 403
    assert f"Single sign-on through {provider.issuer} ({PROVIDER_NAME})" in web.log()


def test_a_sign_in_the_user_denies_at_the_provider_is_shown_in_words(
    page: Any, web: Web, provider: Provider
) -> None:
    page.goto(web.url + "/login/")
    page.click(f"text=Sign in with {PROVIDER_NAME}")
    page.wait_for_url("**/oauth2/authorize?**")
    page.click("button:has-text('Deny')")
    page.wait_for_url(web.url + "/login/")
    expect(page.locator(".messages")).to_contain_text(
        f"Signing in with {PROVIDER_NAME} failed: you or the provider declined the sign-in"
    )
    assert "failed single sign-on from 127.0.0.1" in web.log()
