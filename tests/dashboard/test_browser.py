"""End to end: Chromium drives the dashboard (and a CI client the REST API) on the whole stack.

localcluster runs the pods, a Celery worker runs the workflow, proxysync drives HAProxy
from etcd, daphne serves the dashboard and its WebSocket; all share the test database.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from deployer.models import App, Deployment
from tests.deployer.guardkit import VersionedLoad
from tests.servers import Stack, launch_chromium, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

PASSWORD = "e2e-password"


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch: pytest.MonkeyPatch) -> None:
    """Playwright's sync API keeps an event loop in this thread; the ORM calls here are sync."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture(scope="module")
def stack(
    django_db_setup: Any,
    redis: Any,
    etcd: Any,
    kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The whole stack on free loopback ports, sharing the test database."""
    with running_stack(
        tmp_path_factory.mktemp("stack"),
        redis_url=str(redis.extra["url"]),
        etcd_endpoint=str(etcd.extra["endpoint"]),
        kubeconfig=kubeconfig,
    ) as running:
        yield running


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
    browser: Any, stack: Stack, transactional_db: Any, django_user_model: Any,
    request: pytest.FixtureRequest, tmp_path: Path,
) -> Iterator[Any]:  # fmt: skip
    """A signed-in page; on failure the stack's logs and a screenshot are kept."""
    django_user_model.objects.create_superuser("admin", password=PASSWORD)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    page.goto(stack.web_url + "/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(stack.web_url + "/")
    yield page
    if getattr(request.node, "rep_call", None) is None or request.node.rep_call.failed:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        print(f"screenshot: {tmp_path / 'failure.png'}\n{stack.logs()}")
    context.close()
    assert not script_errors, f"JavaScript errors: {script_errors}"


def through_lb(stack: Stack, hostname: str, path: str = "/health") -> tuple[int, dict[str, Any]]:
    """GET ``path`` from the load balancer with ``hostname`` in the Host header."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.lb_port}{path}", headers={"Host": hostname}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}


def deploy_and_follow(page: Any, image: str = "") -> tuple[int, int]:
    """Click Deploy on the app page; return (deployment id, lines on the page when it opened)."""
    if image:
        page.fill("#id_image", image)
    page.click("#deploy-button")
    page.wait_for_url("**/deployments/*/")
    deployment_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    return deployment_id, page.locator("#log li").count()


def test_a_user_creates_an_app_deploys_it_live_and_a_broken_deploy_rolls_back(
    page: Any, stack: Stack
) -> None:
    # Create the app through the form.
    page.click("text=New app")
    page.fill("#id_name", "web")
    page.fill("#id_image", "demo/hello:1")
    page.fill("#id_replicas", "2")
    page.fill("#id_frontend", "web.localhost")
    page.fill("#id_health_deadline", "20")
    page.click("#env-add")
    page.fill("#id_env-1-key", "MESSAGE")
    page.fill("#id_env-1-value", "hello from e2e")
    page.click("button:has-text('Create app')")
    page.wait_for_url("**/apps/*/")
    app = App.objects.get(name="web")
    assert app.env == {"MESSAGE": "hello from e2e"}

    # Deploy: the browser lands on the deployment page and the log streams in.
    deployment_id, lines_at_load = deploy_and_follow(page)
    page.wait_for_selector("#live-indicator.on")
    page.wait_for_selector("#status-banner.succeeded", timeout=120_000)
    received = page.evaluate("window.greenlightDeployment.received()")
    lines = page.locator("#log li").count()
    stored = Deployment.objects.get(pk=deployment_id).logs.count()
    assert received > 0, "no log line arrived over the WebSocket"
    assert lines == stored > lines_at_load
    expect(page.locator("#status-badge")).to_have_text("succeeded")
    expect(page.locator("#steps li:not(.done)")).to_have_count(0)
    status, health = through_lb(stack, "web.localhost")
    assert status == 200 and str(health["version"]) == "1"
    _, home = through_lb(stack, "web.localhost", "/")
    assert home["message"] == "hello from e2e"

    # A reload (or a late viewer) sees the whole log and the final state at once.
    page.reload()
    assert page.locator("#log li").count() == stored
    assert page.locator("#health-card tbody tr").count() == 2

    # A broken image fails, and the old version keeps serving.
    page.goto(f"{stack.web_url}/apps/{app.pk}/")
    broken_id, _ = deploy_and_follow(page, "demo/broken")
    assert broken_id != deployment_id
    # Meanwhile the app page says a deploy is running, and refreshes itself when it ends.
    page.goto(f"{stack.web_url}/apps/{app.pk}/")
    page.wait_for_selector("#active-deployment")
    page.wait_for_selector("#active-deployment", state="detached", timeout=120_000)
    page.wait_for_load_state()  # the reloaded page, completely
    expect(page.locator("table.history tbody tr .badge.failed")).to_have_count(1)
    page.goto(f"{stack.web_url}/deployments/{broken_id}/")
    page.wait_for_selector("#status-banner.failed")
    expect(page.locator("#status-banner")).to_contain_text("previous version kept serving")
    expect(page.locator("#steps li.failed")).to_have_count(1)
    status, health = through_lb(stack, "web.localhost")
    assert status == 200 and str(health["version"]) == "1"
    app.refresh_from_db()
    assert app.live_version == 1

    # The app page shows v1 live, both runs in the history and the chart.
    page.goto(f"{stack.web_url}/apps/{app.pk}/")
    expect(page.locator("h1")).to_contain_text("v1 live")
    expect(page.locator("table.history tbody tr")).to_have_count(2)
    expect(page.locator("#deploy-chart svg rect.chart-bar")).to_have_count(2)


def wait_for_end(page: Any, state: str = "succeeded") -> None:
    """Wait until the deployment page's banner shows a final state; fail on another one."""
    page.wait_for_selector(
        "#status-banner.succeeded, #status-banner.failed, #status-banner.aborted",
        timeout=120_000,
    )
    banner = page.locator("#status-banner")
    assert state in (banner.get_attribute("class") or ""), banner.inner_text()


def test_a_user_swaps_back_scales_aborts_and_undeploys(page: Any, stack: Stack) -> None:
    app = App.objects.create(
        name="swap",
        image="demo/hello:1",
        replicas=1,
        frontend="swap.localhost",
        keep_old_seconds=300,
        health_deadline=20,
        guard_bake_seconds=0,
    )
    for image in ("demo/hello:1", "demo/hello:2"):
        page.goto(f"{stack.web_url}/apps/{app.pk}/")
        deploy_and_follow(page, image)
        wait_for_end(page)
    assert str(through_lb(stack, "swap.localhost")[1]["version"]) == "2"

    # v1 is still warm: Swap back puts it live again.
    page.goto(f"{stack.web_url}/apps/{app.pk}/")
    page.click("button:has-text('Swap back')")
    page.wait_for_url("**/deployments/*/")
    wait_for_end(page)
    expect(page.locator("#status-banner")).to_contain_text("previous version is live again")
    assert str(through_lb(stack, "swap.localhost")[1]["version"]) == "1"

    # Scale the live version.
    page.goto(f"{stack.web_url}/apps/{app.pk}/")
    page.fill("#id_replicas", "2")
    page.click("button:has-text('Scale')")
    page.wait_for_selector("text=swap scaled to 2 replicas.")
    app.refresh_from_db()
    assert app.replicas == 2

    # A slow starter is aborted while it is health-checked; v1 keeps serving.
    page.goto(f"{stack.web_url}/apps/{app.pk}/")
    deploy_and_follow(page, "demo/slow")
    page.wait_for_selector("#steps li.running[data-step='health']")
    page.click("#abort-form button")
    page.wait_for_selector("text=Abort of deployment")
    wait_for_end(page, "aborted")
    expect(page.locator("#abort-form")).to_be_hidden()
    assert str(through_lb(stack, "swap.localhost")[1]["version"]) == "1"

    # Undeploy needs the name typed back; then the load balancer no longer routes it.
    page.goto(f"{stack.web_url}/apps/{app.pk}/")
    page.click("text=Undeploy…")
    page.fill("#id_confirm", "wrong")
    page.click("button:has-text('Undeploy swap')")
    expect(page.locator(".field-error")).to_contain_text("Type swap to confirm.")
    page.fill("#id_confirm", "swap")
    page.click("button:has-text('Undeploy swap')")
    page.wait_for_url("**/deployments/*/")
    wait_for_end(page)
    expect(page.locator("#status-banner")).to_contain_text("the app is undeployed")
    assert through_lb(stack, "swap.localhost")[0] == 503


def call(stack: Stack, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    """One REST call to the running web server, as a CI pipeline makes it."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        stack.web_url + path,
        data=data,
        method=method,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def test_ci_creates_and_deploys_an_app_through_the_rest_api(
    stack: Stack, transactional_db: Any, django_user_model: Any
) -> None:
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=django_user_model.objects.create_superuser("ci")).key
    status, app = call(
        stack,
        "POST",
        "/api/apps/",
        token,
        {"name": "api", "image": "demo/hello:1", "replicas": 1, "frontend": "api.localhost"},
    )
    assert status == 201, app
    status, queued = call(stack, "POST", f"/api/apps/{app['id']}/deploy/", token, {})
    assert status == 202 and queued["status"] == "queued"
    for _ in range(600):
        status, deployment = call(stack, "GET", f"/api/deployments/{queued['id']}/", token)
        if deployment["status"] in ("succeeded", "failed", "aborted"):
            break
        time.sleep(0.1)  # a CI pipeline polls; the browser follows the socket instead
    assert deployment["status"] == "succeeded", deployment
    status, logs = call(stack, "GET", f"/api/deployments/{queued['id']}/logs/?after=0", token)
    assert logs["results"][0]["seq"] == 1 and not logs["has_more"]
    assert str(through_lb(stack, "api.localhost")[1]["version"]) == "1"


def test_the_deployment_page_shows_the_guard_live_and_its_swap_back(
    page: Any, stack: Stack
) -> None:
    app = App.objects.create(
        name="guardweb",
        image="demo/hello:1",
        replicas=1,
        frontend="guardweb.localhost",
        health_deadline=20,
        guard_bake_seconds=6,
        guard_min_requests=30,
    )
    page.goto(f"{stack.web_url}/apps/{app.pk}/")
    deploy_and_follow(page)
    wait_for_end(page)
    expect(page.locator("#guard-card")).to_be_hidden()

    with VersionedLoad(stack.lb_port, app.frontend, bad="2", clients=2, pause=0.05) as load:
        page.goto(f"{stack.web_url}/apps/{app.pk}/")
        deployment_id, _ = deploy_and_follow(page, "demo/bad-release:2")
        # Pushed over the socket while the bake runs: v2's figures grow, v1 is beside them.
        page.wait_for_selector("#guard-card[data-state=baking]", timeout=60_000)
        new_row = page.locator('#guard-body tr[data-role="new"] td')
        expect(new_row.first).to_have_text("v2 (new)")
        expect(page.locator('#guard-body tr[data-role="previous"] td').first).to_have_text(
            "v1 (previous)"
        )
        expect(page.locator("#guard-state")).to_have_text("baking")
        page.wait_for_selector("#guard-card[data-state=swapped_back]", timeout=60_000)
        wait_for_end(page, "failed")

    expect(page.locator("#guard-state")).to_have_text("swapped back")
    expect(page.locator("#guard-reason")).to_contain_text("guard: v2 answered 5xx to ")
    expect(page.locator("#status-banner .banner-reason")).to_contain_text("guard: v2 answered")
    assert int(new_row.nth(1).inner_text()) >= 30
    assert int(new_row.nth(2).inner_text()) == int(new_row.nth(1).inner_text())
    assert load.failures == [], load.failures[:10]
    status, body = through_lb(stack, app.frontend, "/")
    assert (status, str(body["version"])) == (200, "1")
    # A late viewer sees the same reading, stored with the deployment.
    page.reload()
    expect(page.locator("#guard-state")).to_have_text("swapped back")
    stored = Deployment.objects.get(pk=deployment_id).guard
    expect(new_row.nth(1)).to_have_text(str(stored["new"]["requests"]))


def test_a_user_promotes_a_deploy_that_awaits_promotion_and_sees_it_finish_live(
    page: Any, stack: Stack
) -> None:
    app = App.objects.create(
        name="gatekeeper",
        image="demo/hello:1",
        replicas=1,
        frontend="gatekeeper.localhost",
        health_deadline=20,
        guard_bake_seconds=0,
        promotion="manual",
        promotion_timeout_seconds=600,
    )
    page.goto(f"{stack.web_url}/apps/{app.pk}/")
    expect(page.locator("#promotion-mode")).to_have_text("manual promotion, rejected after 10 min")
    deployment_id, _ = deploy_and_follow(page)

    # Pushed over the socket once the pods are healthy: the wait, its buttons and deadline.
    page.wait_for_selector("#status-banner.awaiting_promotion", timeout=60_000)
    expect(page.locator("#status-badge")).to_have_text("awaiting promotion")
    expect(page.locator("#promotion-actions")).to_be_visible()
    expect(page.locator("#promotion-deadline")).to_contain_text("UTC unless promoted first")
    expect(page.locator("#steps li.running[data-step='promotion']")).to_have_count(1)
    assert through_lb(stack, "gatekeeper.localhost")[0] == 503  # nothing switched yet

    page.click("#promote-form button")
    page.wait_for_url(f"**/deployments/{deployment_id}/")
    page.wait_for_selector("text=Promoted deployment")
    loaded = page.evaluate("performance.timeOrigin")
    wait_for_end(page)
    assert page.evaluate("performance.timeOrigin") == loaded  # followed live, not reloaded
    expect(page.locator("#live-indicator")).to_have_class("live off")
    expect(page.locator("#promotion-actions")).to_be_hidden()
    expect(page.locator("#steps li[data-step='promotion'].done")).to_have_count(1)
    status, health = through_lb(stack, "gatekeeper.localhost")
    assert status == 200 and str(health["version"]) == "1"
    assert Deployment.objects.get(pk=deployment_id).promotion_decided_by.username == "admin"
