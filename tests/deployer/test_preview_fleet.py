"""Previews on a fleet of two load balancers (see tests.deployer.test_fleet for the setup)."""

from __future__ import annotations

import http.client
import json
import time

from deployer.models import App, Deployment
from tests.deployer import test_fleet as fleet_setup
from tests.deployer.test_fleet import Fleet, Run

# The fleet module's fixtures: two load balancers, the version stand-ins, the workflow's
# real store and through-the-load-balancer checks.
fleet, lb, health, clock, pod_port, app = (
    fleet_setup.fleet,
    fleet_setup.lb,
    fleet_setup.health,
    fleet_setup.clock,
    fleet_setup.pod_port,
    fleet_setup.app,
)


def answers(fleet: Fleet, hostname: str, version: str | None = None) -> set[str]:
    """The version each load balancer answers ``hostname`` with (``HTTP <status>`` otherwise)."""
    headers = {"Host": hostname, "Connection": "close"}
    if version is not None:
        headers["X-Greenlight-Version"] = version
    seen = set()
    for pair in fleet.pairs:
        connection = http.client.HTTPConnection("127.0.0.1", pair.haproxy.port, timeout=10)
        try:
            connection.request("GET", "/health", headers=headers)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        seen.add(
            json.loads(body)["version"] if response.status == 200 else f"HTTP {response.status}"
        )
    return seen


def eventually(fleet: Fleet, hostname: str, version: str | None, expected: set[str]) -> set[str]:
    """What ``answers`` gives once it is ``expected``, or after 10 s (a deletion is not waited for)."""
    deadline = time.monotonic() + 10
    while (seen := answers(fleet, hostname, version)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)  # HAProxy offers nothing to watch
    return seen


def test_every_load_balancer_serves_the_preview_until_the_version_is_retired(
    fleet: Fleet, app: App, run_workflow: Run, sink: object
) -> None:
    first = run_workflow(app)
    assert first.status == Deployment.Status.SUCCEEDED

    assert answers(fleet, "hello--v1.localhost") == {"1"}
    assert answers(fleet, "hello.localhost", "1") == {"1"}
    assert "served by every load balancer" in sink.text()  # type: ignore[attr-defined]

    second = run_workflow(app, image="demo/hello:2")
    assert second.status == Deployment.Status.SUCCEEDED

    assert answers(fleet, "hello--v2.localhost") == {"2"}
    assert answers(fleet, "hello.localhost", "2") == {"2"}
    # v1 was retired with its preview: its hostname is unknown, its header takes the route.
    assert eventually(fleet, "hello--v1.localhost", None, {"HTTP 503"}) == {"HTTP 503"}
    assert answers(fleet, "hello.localhost", "1") == {"2"}
