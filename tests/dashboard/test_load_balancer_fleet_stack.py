"""``GREENLIGHT_LB_COUNT=2 make run``: the demo app answers on both load balancers' ports.

The whole stack starts as ``make run`` starts it (bench.stackrun: prepare, migrate,
bootstrap, the supervisor on the Procfile) on free loopback ports, with two load
balancers. After a deploy of the demo app, both ports serve it; both load balancers are
listed by the API and the page; and when one HAProxy is killed, the supervisor starts it
again while the other keeps serving.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from bench.stackrun import Api, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

HOST = "hello.localhost"


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)  # the stack has no watch for what the test waits on
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def served(port: int) -> tuple[int, str]:
    """(status, version) of the demo app through the load balancer on ``port``."""
    try:
        response = requests.get(
            f"http://127.0.0.1:{port}/health", headers={"Host": HOST}, timeout=5
        )
    except requests.RequestException as exc:
        return 0, repr(exc)
    if response.status_code != 200:
        return response.status_code, response.text[:200]
    return 200, str(response.json().get("version"))


def live_fleet(api: Api) -> list[dict[str, Any]]:
    """The load balancers the API lists, once both are registered and healthy."""
    fleet = api.call("GET", "/api/load-balancers/")
    balancers = fleet["results"]
    ready = len(balancers) == 2 and all(balancer["healthy"] for balancer in balancers)
    return balancers if ready else []


def test_two_load_balancers_serve_the_demo_app_and_come_back_one_at_a_time(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # A short folder: HAProxy refuses a master socket path over 97 characters, and the
    # test's own tmp_path (its name, under an xdist worker's folder) comes close.
    stack = Stack(tmp_path_factory.mktemp("fleet"), lb_count=2)
    try:
        stack.start(timeout=180)
        api = Api(stack.web_port, stack.token())

        balancers = wait_for("both load balancers to register", lambda: live_fleet(api), 60)
        assert [balancer["id"] for balancer in balancers] == ["lb-0", "lb-1"]
        assert [balancer["address"] for balancer in balancers] == [
            f"http://127.0.0.1:{port}" for port in stack.lb_ports
        ]
        assert all(balancer["haproxy_version"] for balancer in balancers)

        apps = api.call("GET", "/api/apps/")["results"]
        hello = next(app for app in apps if app["name"] == "hello")
        deployment = api.call("POST", f"/api/apps/{hello['id']}/deploy/", {})
        done = api.wait_terminal(f"/api/deployments/{deployment['id']}/", "the deploy", 180)
        version = str(done["version"])
        for port in stack.lb_ports:
            assert served(port) == (200, version), f"the demo app on port {port}"

        fleet = api.call("GET", "/api/load-balancers/")
        assert [balancer["applied_revision"] is not None for balancer in fleet["results"]] == [
            True,
            True,
        ]
        api.sign_in(stack.password)
        page = api.page("GET", "/load-balancer/").text
        for balancer, port in zip(("lb-0", "lb-1"), stack.lb_ports, strict=True):
            assert f'<tr id="lb-{balancer}">' in page
            assert f"http://127.0.0.1:{port}</a>" in page

        # One load balancer's HAProxy dies: the supervisor starts it again on its own
        # config, and the other load balancer serves every request meanwhile.
        killed, other = stack.pid("haproxy-1"), stack.pid("haproxy-0")
        assert killed is not None and other is not None
        os.kill(killed, signal.SIGKILL)
        answers_of_lb_0: list[tuple[int, str]] = []

        def back() -> bool:
            answers_of_lb_0.append(served(stack.lb_ports[0]))
            return served(stack.lb_ports[1]) == (200, version)

        wait_for("lb-1's HAProxy to serve again", back, 60)
        assert stack.pid("haproxy-1") != killed
        assert stack.pid("haproxy-0") == other
        assert any("haproxy-1 exited with code -9" in line for line in stack.exits())
        assert not any("haproxy-0 exited" in line for line in stack.exits())
        assert answers_of_lb_0 and set(answers_of_lb_0) == {(200, version)}
        wait_for("lb-1 to register again", lambda: live_fleet(api), 60)
    except Exception:
        print(stack.log_tail(200))
        raise
    finally:
        stack.stop()
