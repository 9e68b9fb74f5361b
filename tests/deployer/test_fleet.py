"""A fleet of two load balancers: real etcd, two real HAProxy and two `manage.py proxysync`.

The workflow runs in the test process on the real etcd store (the cluster and the pods'
own health checks are fakes); the verify step goes through each HAProxy over HTTP to
stand-ins of the versions' pods, each on its own loopback address as in localcluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from deployer.collaborators import SystemClock
from deployer.etcdstore import EtcdStore
from deployer.health import HealthResult, HttpHealthChecker
from deployer.lbstatus import fleet as lb_rows
from deployer.models import App, Deployment
from deployer.pods import PodInfo
from launcher.stack import haproxy_command
from tests.deployer.lbkit import get
from tests.servers import (
    Server,
    free_port,
    haproxy_server,
    kill_process,
    python_command,
    spawn,
    start_process,
    stop_process,
)

pytestmark = pytest.mark.timeout(180)

LEASE_SECONDS = 2
SWITCH_LINE = re.compile(r"Load balancers applied revision \d+: (.*)\.$")


class _VersionHandler(BaseHTTPRequestHandler):
    server: _VersionPod

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.dumps({"version": self.server.version, "healthy": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _VersionPod(ThreadingHTTPServer):
    """A pod of ``version`` at its own loopback address, answering its version as JSON."""

    daemon_threads = True

    def __init__(self, address: str, port: int, version: int) -> None:
        super().__init__((address, port), _VersionHandler)
        self.version = str(version)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@dataclass
class Pair:
    """One load balancer: a HAProxy and the `manage.py proxysync` that drives it."""

    id: str
    haproxy: Server
    env: dict[str, str]
    workdir: Path
    proxysync: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """Where users' traffic enters it."""
        return f"http://127.0.0.1:{self.haproxy.port}"

    def start_proxysync(self, **env: str) -> None:
        """Start (or restart) its proxysync, with ``env`` over its usual environment."""
        command = python_command("manage.py", "proxysync", "--no-endpoints")
        self.proxysync = start_process(
            f"proxysync-{self.id}", command, self.workdir, {**self.env, **env}
        )

    def kill_haproxy(self) -> None:
        """SIGKILL HAProxy's master and workers at once."""
        kill_process(self.haproxy.process)

    def restart_haproxy(self) -> None:
        """Start HAProxy again on the configuration proxysync last wrote."""
        config = Path(str(self.haproxy.extra["config"]))
        socket_path = Path(str(self.haproxy.extra["master_socket"]))
        command = haproxy_command(config, socket_path, config.parent / "haproxy.pid")
        extra = self.haproxy.extra
        self.haproxy = spawn("haproxy", command, config.parent, self.haproxy.port)
        self.haproxy.extra.update(extra)

    def log(self) -> str:
        """The tail of its proxysync's log."""
        path = self.workdir / f"proxysync-{self.id}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@dataclass
class Fleet:
    """Two load balancers sharing an etcd prefix, and the store the workflow uses."""

    store: EtcdStore
    pairs: list[Pair] = field(default_factory=list)

    def ids(self) -> list[str]:
        """The ids of the live load balancers."""
        return [balancer.id for balancer in self.store.load_balancers()]

    def wait_for(self, ids: list[str], timeout: float = 20.0) -> None:
        """Until exactly ``ids`` are live, every one of them at the latest configuration."""
        deadline = time.monotonic() + timeout
        while True:
            balancers = self.store.load_balancers()
            revision = self.configuration_revision()
            current = [
                b.id for b in balancers if int((b.applied or {}).get("revision", 0)) >= revision
            ]
            if [b.id for b in balancers] == ids == current:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.id} ---\n{p.log()}" for p in self.pairs)
                raise AssertionError(f"live: {balancers} at {revision}, wanted {ids}\n{logs}")
            time.sleep(0.05)  # registrations come and go with leases: poll, bounded

    def configuration_revision(self) -> int:
        """The revision of the latest frontend or backend record (acknowledgements are later)."""
        snapshot = self.store.snapshot()
        revisions = [0, *snapshot.backend_revisions.values()]
        revisions += [
            self.store.get(self.store.frontend_key(host))[1] for host in snapshot.frontends
        ]
        return max(revisions)

    def served(self, hostname: str) -> set[str]:
        """The version each load balancer serves ``hostname`` with (one GET each)."""
        answers = set()
        for pair in self.pairs:
            status, body = get(pair.haproxy.port, hostname, "/health")
            answers.add(json.loads(body)["version"] if status == 200 else f"HTTP {status}")
        return answers


def _refusing_haproxy(directory: Path, marker: str) -> Path:
    """A `haproxy` that refuses to validate (`-c`) any configuration containing ``marker``."""
    script = directory / "haproxy-refusing"
    script.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do last="$arg"; done\n'
        f'if [ "$1" = "-c" ] && grep -q "{marker}" "$last"; then\n'
        '  echo "[ALERT] (1) : this load balancer refuses it" >&2; exit 1\n'
        "fi\n"
        'exec haproxy "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@contextlib.contextmanager
def _fleet(
    etcd: Server, workdir: Path, env_of: Callable[[str, Path], dict[str, str]] | None = None
) -> Iterator[Fleet]:
    prefix = f"/fleet-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(EtcdStore(str(etcd.extra["endpoint"]), prefix))
        fleet = Fleet(store)
        for number in range(2):
            lb_id = f"lb-{number}"
            directory = workdir / lb_id
            haproxy = stack.enter_context(haproxy_server(directory / "haproxy"))
            env = {k: v for k, v in os.environ.items() if not k.startswith("GREENLIGHT_")}
            env.update(
                DJANGO_SETTINGS_MODULE="tests.settings",
                GREENLIGHT_ETCD_ENDPOINT=str(etcd.extra["endpoint"]),
                GREENLIGHT_ETCD_PREFIX=prefix,
                GREENLIGHT_HAPROXY_CONFIG=str(haproxy.extra["config"]),
                GREENLIGHT_HAPROXY_MASTER_SOCKET=str(haproxy.extra["master_socket"]),
                GREENLIGHT_LB_PORT=str(haproxy.port),
                GREENLIGHT_HAPROXY_STATS_PORT=str(haproxy.extra["stats_port"]),
                GREENLIGHT_LB_URL=f"http://127.0.0.1:{haproxy.port}",
                GREENLIGHT_LB_ID=lb_id,
                GREENLIGHT_LB_LEASE_SECONDS=str(LEASE_SECONDS),
                GREENLIGHT_LOG_LEVEL="INFO",
                PYTHONUNBUFFERED="1",
                **(env_of(lb_id, directory) if env_of else {}),
            )
            pair = Pair(lb_id, haproxy, env, directory)
            fleet.pairs.append(pair)
            pair.start_proxysync()
        try:
            fleet.wait_for(["lb-0", "lb-1"])
            yield fleet
        finally:
            for pair in fleet.pairs:
                if pair.proxysync is not None:
                    stop_process(pair.proxysync)
                with contextlib.suppress(Exception):
                    pair.haproxy.stop()


@pytest.fixture
def fleet(etcd: Server, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """Two load balancers, both registered and at the current revision.

    Parametrized with "lb-1 refuses hello-v2", lb-1's ``haproxy -c`` refuses any
    configuration with that version's backend.
    """
    refusing = getattr(request, "param", "") == "lb-1 refuses hello-v2"

    def env_of(lb_id: str, directory: Path) -> dict[str, str]:
        if not refusing or lb_id != "lb-1":
            return {}
        directory.mkdir(parents=True, exist_ok=True)
        return {"GREENLIGHT_HAPROXY_BIN": str(_refusing_haproxy(directory, "hello-v2"))}

    with _fleet(etcd, tmp_path, env_of) as running:
        yield running


@dataclass
class ThroughEachLB:
    """Pods are healthy; the check through a load balancer is a real GET to its address."""

    asked: list[str] = field(default_factory=list)
    on_check: Callable[[], None] = lambda: None

    def check(self, pod: PodInfo, health: dict[str, Any]) -> HealthResult:
        self.on_check()
        return HealthResult(pod.name, pod.ip, True, 200, "HTTP 200", 0.001, str(pod.version))

    def through_lb(
        self, address: str, hostname: str, path: str, timeout: float = 2.0
    ) -> tuple[int, bytes]:
        self.asked.append(address)
        return HttpHealthChecker().through_lb(address, hostname, path, timeout)


@pytest.fixture
def lb(fleet: Fleet) -> EtcdStore:
    """The workflow's store is the fleet's."""
    return fleet.store


@pytest.fixture
def health() -> ThroughEachLB:
    return ThroughEachLB()


@pytest.fixture
def clock() -> SystemClock:
    return SystemClock()


@pytest.fixture
def pod_port() -> Iterator[int]:
    """The container port of the app; the pods of versions 1 to 3 listen on it."""
    port = free_port()
    pods = [
        _VersionPod(f"127.1.{version}.{index}", port, version)
        for version in (1, 2, 3)
        for index in (1, 2)
    ]
    yield port
    for pod in pods:
        pod.shutdown()
        pod.server_close()


@pytest.fixture
def app(make_app: Callable[..., App], pod_port: int) -> App:
    return make_app(name="hello", container_port=pod_port)


Run = Callable[..., Deployment]


def _switch_lines(sink: Any) -> list[str]:
    return [m for _, step, m in sink.lines if step == "switch" and SWITCH_LINE.match(m)]


def test_the_switch_waits_for_every_load_balancer_and_verifies_through_each(
    fleet: Fleet, app: App, run_workflow: Run, health: ThroughEachLB, sink: Any
) -> None:
    assert run_workflow(app).status == Deployment.Status.SUCCEEDED
    sink.lines.clear()
    health.asked.clear()

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.SUCCEEDED, sink.text()
    [line] = _switch_lines(sink)
    assert re.fullmatch(
        r"Load balancers applied revision \d+: lb-0 in \d+ ms, lb-1 in \d+ ms\.", line
    ), line
    for pair in fleet.pairs:
        assert f"answers through load balancer {pair.id} at {pair.address}" in sink.text()
    assert sorted(set(health.asked)) == sorted(pair.address for pair in fleet.pairs)
    assert fleet.served("hello.localhost") == {"2"}
    revision = fleet.configuration_revision()
    for balancer in fleet.store.load_balancers():
        assert balancer.record["healthy"] is True
        assert balancer.record["reloads"] >= 1
        assert balancer.record["address"] == fleet.pairs[int(balancer.id[-1])].address
        assert balancer.record["haproxy_version"]
        assert int((balancer.drained or {}).get("revision", 0)) > 0
        assert int((balancer.applied or {})["revision"]) >= revision
    # At rest (once the old backend's deletion is applied too), both applied every routing
    # change: no lag, whatever etcd's revision is now.
    deadline = time.monotonic() + 10
    while True:
        etcd_revision, rows = lb_rows(fleet.store)
        lags = [(row["id"], row["state"], row["lag"]) for row in rows]
        if lags == [("lb-0", "live", 0), ("lb-1", "live", 0)] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert lags == [("lb-0", "live", 0), ("lb-1", "live", 0)]
    assert etcd_revision > revision


def test_a_killed_proxysync_drops_out_after_its_lease_and_the_switch_goes_on(
    fleet: Fleet,
    app: App,
    run_workflow: Run,
    health: ThroughEachLB,
    sink: Any,
    cluster: Any,
    retired: list[tuple[int, int, float]],
) -> None:
    assert run_workflow(app).status == Deployment.Status.SUCCEEDED
    sink.lines.clear()
    victim = fleet.pairs[1]

    def kill_once() -> None:
        if victim.proxysync is not None and victim.proxysync.poll() is None:
            kill_process(victim.proxysync)  # SIGKILL: no chance to revoke its lease

    health.on_check = kill_once
    started = time.monotonic()

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.SUCCEEDED, sink.text()
    assert time.monotonic() - started < 40
    [line] = _switch_lines(sink)
    assert re.fullmatch(r"Load balancers applied revision \d+: lb-0 in \d+ ms\.", line), line
    assert (
        "lb-1 is not registered (its proxysync does not answer) and keeps the previous routes"
        in (sink.text())
    )
    assert fleet.ids() == ["lb-0"]
    status, body = get(fleet.pairs[0].haproxy.port, "hello.localhost", "/health")
    assert (status, json.loads(body)["version"]) == (200, "2")
    # lb-1's HAProxy still serves v1 with the routes it had: v1 is not retired under it.
    status, body = get(victim.haproxy.port, "hello.localhost", "/health")
    assert (status, json.loads(body)["version"]) == (200, "1")
    assert "Held up by lb-1" in sink.text() and "still accepts connections" in sink.text()
    assert "Retiring v1 deferred by 30s" in sink.text()
    assert 1 not in cluster.deleted
    assert fleet.store.get_backend("default.hello-v1") is not None
    assert retired == [(deployment.pk, 1, 30.0)]


def test_a_hung_proxysync_across_the_switch_holds_the_old_version_until_it_is_back_and_applied(
    fleet: Fleet, app: App, run_workflow: Run, health: ThroughEachLB, sink: Any, cluster: Any
) -> None:
    assert run_workflow(app).status == Deployment.Status.SUCCEEDED
    sink.lines.clear()
    victim = fleet.pairs[1]
    assert victim.proxysync is not None
    pid = victim.proxysync.pid
    failures: list[str] = []
    done = threading.Event()

    def users() -> None:  # keep-alive-less GETs through lb-1's HAProxy the whole time
        while not done.is_set():
            try:
                status, _ = get(victim.haproxy.port, "hello.localhost", "/health")
            except OSError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            if status != 200:
                failures.append(f"HTTP {status}")
            time.sleep(0.01)

    resumed: list[float] = []

    def resume() -> None:
        os.kill(pid, signal.SIGCONT)
        resumed.append(time.monotonic())

    # Hung past its lease and across the switch, back before the drain deadline (10 s).
    timer = threading.Timer(LEASE_SECONDS * 2 + 1, resume)

    hung = threading.Lock()  # pods are health-checked in parallel: only the first check hangs it

    def hang_once() -> None:
        if hung.acquire(blocking=False):
            os.kill(pid, signal.SIGSTOP)
            timer.start()

    deletions: list[tuple[float, dict[str, int]]] = []
    delete_version = cluster.delete_version

    def delete_and_note(namespace: str, name: str, version: int) -> None:
        seen = {
            b.id: int((b.drained or {}).get("revision", 0)) for b in fleet.store.load_balancers()
        }
        deletions.append((time.monotonic(), seen))
        delete_version(namespace, name, version)

    cluster.delete_version = delete_and_note
    health.on_check = hang_once
    load = threading.Thread(target=users, daemon=True)
    load.start()
    try:
        deployment = run_workflow(app, image="demo/hello:2")
    finally:
        done.set()
        timer.cancel()
        os.kill(pid, signal.SIGCONT)
        load.join(10)

    text = sink.text()
    assert deployment.status == Deployment.Status.SUCCEEDED, text
    [line] = _switch_lines(sink)
    assert ": lb-0 in " in line and "lb-1" not in line  # the switch went on without it
    assert "lb-1 is not registered (its proxysync does not answer)" in text
    switch_revision = int(re.search(r"written at etcd revision (\d+)", text).group(1))  # type: ignore[union-attr]
    # v1 was deleted only once lb-1 was back, registered and drained past the switch.
    [(deleted_at, drained)] = deletions
    assert resumed and deleted_at > resumed[0]
    assert drained.get("lb-1", 0) >= switch_revision, (drained, switch_revision)
    assert cluster.deleted == [1]
    assert "Retiring v1 deferred" not in text
    assert failures == [], failures[:5]
    fleet.wait_for(["lb-0", "lb-1"])
    assert fleet.served("hello.localhost") == {"2"}


def test_a_member_whose_haproxy_is_gone_drops_out_of_the_drained_wait_at_once(
    fleet: Fleet, app: App, run_workflow: Run, sink: Any, cluster: Any
) -> None:
    assert run_workflow(app).status == Deployment.Status.SUCCEEDED
    victim = fleet.pairs[1]
    assert victim.proxysync is not None
    kill_process(victim.proxysync)  # its membership stays: it did not stop cleanly
    victim.proxysync = None
    victim.kill_haproxy()
    fleet.wait_for(["lb-0"], timeout=LEASE_SECONDS * 3 + 5)
    assert [(m.id, m.registered) for m in fleet.store.members()] == [
        ("lb-0", True),
        ("lb-1", False),
    ]

    started = time.monotonic()
    waited = fleet.store.wait_drained(fleet.configuration_revision(), 10.0)
    assert waited and waited.held_by == () and time.monotonic() - started < 2
    sink.lines.clear()
    started = time.monotonic()
    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.SUCCEEDED, sink.text()
    assert time.monotonic() - started < 10  # the drain deadline was never reached
    assert "Held up" not in sink.text() and cluster.deleted == [1]


def test_a_killed_haproxy_takes_its_load_balancer_out_until_it_is_back(
    fleet: Fleet, app: App, run_workflow: Run, sink: Any
) -> None:
    assert run_workflow(app).status == Deployment.Status.SUCCEEDED
    victim = fleet.pairs[1]

    victim.kill_haproxy()
    fleet.wait_for(["lb-0"], timeout=LEASE_SECONDS * 3 + 5)
    assert "leaves the fleet" in victim.log()
    sink.lines.clear()
    deployment = run_workflow(app, image="demo/hello:2")
    assert deployment.status == Deployment.Status.SUCCEEDED, sink.text()
    [line] = _switch_lines(sink)
    assert ": lb-0 in " in line and "lb-1" not in line

    victim.restart_haproxy()
    fleet.wait_for(["lb-0", "lb-1"], timeout=LEASE_SECONDS * 3 + 15)
    assert fleet.served("hello.localhost") == {"2"}
    sink.lines.clear()
    deployment = run_workflow(app, image="demo/hello:3")
    assert deployment.status == Deployment.Status.SUCCEEDED, sink.text()
    [line] = _switch_lines(sink)
    assert ": lb-0 in " in line and ", lb-1 in " in line
    assert fleet.served("hello.localhost") == {"3"}


def test_a_load_balancer_the_new_version_does_not_answer_through_fails_the_switch(
    fleet: Fleet, app: App, run_workflow: Run, sink: Any
) -> None:
    assert run_workflow(app).status == Deployment.Status.SUCCEEDED
    # lb-1 comes back saying its traffic enters where nothing answers.
    victim = fleet.pairs[1]
    assert victim.proxysync is not None
    stop_process(victim.proxysync)  # SIGTERM: it revokes its lease on the way out
    assert fleet.ids() == ["lb-0"]
    assert [m.id for m in fleet.store.members()] == ["lb-0"]  # and leaves for good
    nowhere = f"http://127.0.0.1:{free_port()}"
    victim.start_proxysync(GREENLIGHT_LB_ADDRESS=nowhere)
    fleet.wait_for(["lb-0", "lb-1"])

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.FAILED
    assert f"did not answer through the load balancer lb-1 at {nowhere}" in (
        deployment.failure_reason
    )
    assert "answers through load balancer lb-0" in sink.text()
    assert fleet.store.get_frontend("hello.localhost")["backend"].endswith("hello-v1")  # type: ignore[index]
    fleet.wait_for(["lb-0", "lb-1"])
    assert fleet.served("hello.localhost") == {"1"}


@pytest.mark.parametrize("fleet", ["lb-1 refuses hello-v2"], indirect=True)
def test_a_refusal_by_one_load_balancer_fails_the_deploy_and_the_old_version_serves(
    fleet: Fleet, app: App, run_workflow: Run, sink: Any
) -> None:
    assert run_workflow(app).status == Deployment.Status.SUCCEEDED, sink.text()

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.FAILED
    assert "load balancer lb-1 refused the configuration" in deployment.failure_reason
    assert "this load balancer refuses it" in deployment.failure_reason
    assert deployment.switched_at is None
    assert fleet.store.get_frontend("hello.localhost")["backend"].endswith("hello-v1")  # type: ignore[index]
    fleet.wait_for(["lb-0", "lb-1"])
    assert fleet.served("hello.localhost") == {"1"}
