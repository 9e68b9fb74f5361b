"""The whole stack as ``make run`` starts it (bench.stackrun), shared by a module's fault tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from celery import Celery

from bench.stackrun import REPO, Api, Stack, StepFailed
from bench.stackrun import Cluster as StackCluster

POLL = 0.2
TERMINAL = ("succeeded", "failed", "aborted")


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = POLL) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError naming ``what`` after
    ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)  # the stack has no watch for what the test waits on
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@dataclass
class FaultStack:
    """A running stack, its API and cluster, and what the fault tests do to its processes."""

    stack: Stack
    api: Api
    cluster: StackCluster
    workdir: Path
    extra: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def lb_port(self) -> int:
        """Where users' traffic enters lb-0."""
        return self.stack.lb_port

    @property
    def broker_url(self) -> str:
        """The stack's Redis."""
        return f"redis://127.0.0.1:{self.stack.web_port + 1}/0"

    def pid(self, name: str) -> int:
        """The pid of the supervisor's current ``name`` process (the last one it started)."""
        text = self.stack.log_path.read_text(errors="replace")
        pids = re.findall(rf"\| {re.escape(name)} started \(pid (\d+)\)", text)
        assert pids, f"the supervisor never started {name}"
        return int(pids[-1])

    def restarted(self, name: str, after: int) -> int:
        """Wait until the supervisor started ``name`` again (a pid other than ``after``)."""
        return wait_for(
            f"the supervisor to restart {name}",
            lambda: (pid := self.pid(name)) != after and pid,
            timeout=60,
        )

    def start_worker(self, hostname: str) -> subprocess.Popen[bytes]:
        """A second Celery worker against the same stack, in a process group of its own."""
        log = (self.workdir / f"{hostname.split('@')[0]}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dashboard", "worker", "--loglevel", "INFO",
             "--concurrency", "2", "--hostname", hostname],
            cwd=REPO,
            env=self.stack.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        self.extra[hostname] = process
        return process

    def stop_extra(self) -> None:
        """Stop the processes a test started beside the supervisor's."""
        for process in self.extra.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(process.pid, signal.SIGKILL)
                    process.wait(10)
        self.extra.clear()

    def celery(self) -> Celery:
        """A Celery client of the stack's broker, for remote control of its workers.

        Not made the current app: the process's own tasks (``celery.current_app``, as
        deployer.taskqueue sends them) must keep going to their own broker after this
        stack is gone.
        """
        return Celery("faults", broker=self.broker_url, set_as_current=False)

    # The REST API -------------------------------------------------------------------------

    def create_app(self, name: str, **fields: Any) -> int:
        """Create an app; its id."""
        body = {"name": name, "frontend": f"{name}.localhost", "image": "demo/hello:1"}
        body.update(
            {
                "replicas": 2,
                "health_deadline": 60,
                "stop_delay_seconds": 1,
                "guard_bake_seconds": 0,
                **fields,
            }
        )
        return int(self.api.call("POST", "/api/apps/", body)["id"])

    def deploy(self, app_id: int, image: str) -> int:
        """Queue a deploy of ``image``; the deployment's id."""
        return int(self.api.call("POST", f"/api/apps/{app_id}/deploy/", {"image": image})["id"])

    def deployment(self, deployment_id: int) -> dict[str, Any]:
        """The deployment as the API shows it."""
        return self.api.call("GET", f"/api/deployments/{deployment_id}/")

    def log(self, deployment_id: int) -> list[str]:
        """Every stored line of the deployment's log."""
        lines: list[str] = []
        after = 0
        while True:
            page = self.api.call("GET", f"/api/deployments/{deployment_id}/logs/?after={after}")
            lines += [line["message"] for line in page["results"]]
            after = page["last_seq"]
            if not page["has_more"]:
                return lines

    def finished(self, deployment_id: int, timeout: float = 120) -> dict[str, Any]:
        """Wait until the deployment is terminal; the deployment."""
        return wait_for(
            f"deployment #{deployment_id} to finish",
            lambda: (found := self.deployment(deployment_id))["status"] in TERMINAL and found,
            timeout=timeout,
            every=0.5,
        )

    def running_step(self, deployment_id: int, step: str, timeout: float = 60) -> None:
        """Wait until the deployment runs ``step`` (or has passed it)."""

        def reached() -> bool:
            found = self.deployment(deployment_id)
            assert found["status"] not in TERMINAL, (found, self.log(deployment_id))
            return found["steps"].get(step, {}).get("state") in ("running", "done")

        wait_for(f"deployment #{deployment_id} to reach {step}", reached, timeout=timeout)

    def live_version(self, app_id: int) -> int | None:
        """The app's live version as the API shows it."""
        return self.api.call("GET", f"/api/apps/{app_id}/")["live_version"]

    def served_version(self, host: str, lb: int = 0) -> str:
        """The version load balancer ``lb`` answers ``host`` with."""
        response = requests.get(
            f"http://127.0.0.1:{self.stack.lb_ports[lb]}/health", headers={"Host": host}, timeout=5
        )
        assert response.status_code == 200, response.text
        return str(response.json()["version"])

    def healthy_lbs(self) -> int:
        """How many load balancers the API lists as registered and healthy (none while the
        API cannot read etcd: it answers 503)."""
        try:
            listed = self.api.call("GET", "/api/load-balancers/")["results"]
        except StepFailed:
            return 0
        return len([balancer for balancer in listed if balancer["healthy"]])


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    """The whole stack under launcher.supervisor with two load balancers (on its own database
    of the session's server when the tests run on PostgreSQL), an API token and a session."""
    workdir = tmp_path_factory.mktemp("stack")
    # Two load balancers, as a team with real traffic runs; the load goes through lb-0.
    stack = Stack(workdir, lb_count=2)
    try:
        stack.start(timeout=180)
        api = Api(stack.web_port, stack.token())
        api.sign_in(stack.password)
        cluster = StackCluster(stack.kubeconfig, stack.stats_port, stack.web_port + 5)
        wait_for("4 schedulable nodes", lambda: len(cluster.nodes()) >= 4, timeout=60)
        running = FaultStack(stack, api, cluster, workdir)
        wait_for("both load balancers to register", lambda: running.healthy_lbs() == 2, 60)
        try:
            yield running
        finally:
            running.stop_extra()
    finally:
        stack.stop()
