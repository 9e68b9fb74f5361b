"""Fake collaborators of the workflow: a cluster, an LB store, a health checker, a clock, a sink."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Unpack

from deployer.cluster import PodFailed
from deployer.errors import Transient
from deployer.health import HealthResult
from deployer.lbconfig import preview_backend
from deployer.lbfleet import FleetWait, LoadBalancer, RouteOptions, ServerEntry, WaitOptions
from deployer.logsink import Level
from deployer.pods import PodInfo, PodStartWait


@dataclass
class FakeClock:
    """Monotonic time that only moves when someone sleeps."""

    now: float = 1000.0
    slept: list[float] = field(default_factory=list)
    on_sleep: Callable[[], object] = lambda: None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.on_sleep()
        self.slept.append(seconds)
        self.now += max(seconds, 0.001)


@dataclass
class FakeCluster:
    """Versions as dicts; ``pod_outcome`` decides what waiting for pods does per image."""

    versions_: dict[int, dict[str, Any]] = field(default_factory=dict)
    deleted: list[int] = field(default_factory=list)
    fail_create: Exception | None = None
    pod_outcome: Callable[[str], str] = lambda image: "started"

    def add_live(self, version: int, replicas: int = 2, image: str = "demo/hello:1") -> None:
        self.versions_[version] = {"image": image, "replicas": replicas}

    def versions(self, namespace: str, app: str) -> list[int]:
        return sorted(self.versions_)

    def version_exists(self, namespace: str, app: str, version: int) -> bool:
        return version in self.versions_

    def create_version(self, descriptor: dict[str, Any], version: int) -> None:
        if self.fail_create is not None:
            raise self.fail_create
        self.versions_[version] = {
            "image": descriptor["image"],
            "replicas": descriptor["replicas"],
        }

    def delete_version(self, namespace: str, app: str, version: int) -> None:
        self.versions_.pop(version, None)
        self.deleted.append(version)

    def pods(self, namespace: str, app: str, version: int) -> list[PodInfo]:
        if version not in self.versions_:
            return []
        count = int(self.versions_[version]["replicas"])
        return [
            PodInfo(
                name=f"{app}-v{version}-{i}",
                app=app,
                version=version,
                ip=f"127.1.{version}.{i + 1}",
                node="node-1",
                phase="Running",
                ready=True,
                started=True,
                restarts=0,
            )
            for i in range(count)
        ]

    def pod_log_tail(self, namespace: str, pod: str, lines: int = 10) -> str:
        return "panic: the end"

    def wait_pods_started(self, wait: PodStartWait) -> list[PodInfo]:
        if wait.on_event is not None:
            wait.on_event(
                "Normal", f"Scheduled on {wait.app}-v{wait.version}-0: assigned to node-1"
            )
        outcome = self.pod_outcome(self.versions_[wait.version]["image"])
        pods = self.pods(wait.namespace, wait.app, wait.version)
        for pod in pods:
            wait.on_change(pod)
        if outcome == "pull":
            raise PodFailed(f"pod {pods[0].name}: the image could not be pulled (ErrImagePull)")
        if outcome == "crash":
            raise PodFailed(f"pod {pods[0].name}: the container keeps crashing (CrashLoopBackOff)")
        if outcome == "timeout":
            raise TimeoutError(f"0 of {wait.replicas} pods running after {wait.timeout:.0f}s")
        return pods


@dataclass
class FakeLB:
    """etcd records in dicts; ``applies`` False simulates a proxysync that is down."""

    frontends: dict[str, dict[str, Any]] = field(default_factory=dict)
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    previews: dict[str, dict[str, Any]] = field(default_factory=dict)
    revision: int = 1
    applied: int = 1
    applies: bool = True
    writes: list[str] = field(default_factory=list)
    drained: list[int] = field(default_factory=list)
    history: list[str] = field(default_factory=list)  # writes and drain waits, in order
    skipped: dict[str, str] = field(default_factory=dict)  # records proxysync left out
    # The live load balancers: id -> address.
    fleet: dict[str, str] = field(default_factory=lambda: {"lb-0": "http://127.0.0.1:8080"})

    def _bump(self, what: str) -> int:
        self.revision += 1
        self.writes.append(what)
        self.history.append(what)
        return self.revision

    def close(self) -> None:
        """Nothing to close: the records are dicts."""

    def get_frontend(self, hostname: str) -> dict[str, Any] | None:
        return self.frontends.get(hostname)

    def get_backend(self, backend: str) -> dict[str, Any] | None:
        return self.backends.get(backend)

    def put_route(
        self, hostname: str, backend: str, servers: list[ServerEntry], **route: Unpack[RouteOptions]
    ) -> int:
        self.backends[backend] = {"servers": servers, **(route.get("backend_options") or {})}
        self.frontends[hostname] = {"hostname": hostname, "backend": backend, "options": {}}
        return self._bump(f"route {hostname}->{backend}")

    def put_backend(self, backend: str, record: dict[str, Any]) -> int:
        self.backends[backend] = dict(record)
        return self._bump(f"backend {backend}")

    def point_frontend(
        self, hostname: str, backend: str, options: dict[str, Any] | None = None
    ) -> int:
        self.frontends[hostname] = {"hostname": hostname, "backend": backend, "options": {}}
        return self._bump(f"point {hostname}->{backend}")

    def delete_backend(self, backend: str) -> int:
        for name in (backend, preview_backend(backend)):
            self.backends.pop(name, None)
            self.previews.pop(name, None)
        return self._bump(f"delete backend {backend}")

    def delete_route(self, hostname: str, backends: list[str]) -> int:
        self.frontends.pop(hostname, None)
        for name in backends:
            for each in (name, preview_backend(name)):
                self.backends.pop(each, None)
                self.previews.pop(each, None)
        return self._bump(f"delete route {hostname}")

    def put_preview(self, backend: str, record: dict[str, Any]) -> int:
        # Kept out of ``writes``: those are the frontend and backend records, in order.
        self.previews[backend] = dict(record)
        self.revision += 1
        return self.revision

    def get_preview(self, backend: str) -> dict[str, Any] | None:
        return self.previews.get(backend)

    def delete_preview(self, backend: str) -> int:
        self.previews.pop(backend, None)
        self.revision += 1
        return self.revision

    def load_balancers(self) -> list[LoadBalancer]:
        applied = {"revision": self.applied, "skipped": dict(self.skipped)}
        drained = {"revision": max(self.drained, default=0)}
        return [
            LoadBalancer(lb_id, {"id": lb_id, "address": address}, dict(applied), dict(drained))
            for lb_id, address in sorted(self.fleet.items())
        ]

    def _waited(self, revision: int, reached: bool, problem: str = "") -> FleetWait:
        balancers = tuple(self.load_balancers())
        seconds = {lb.id: 0.001 * (n + 1) for n, lb in enumerate(balancers)} if reached else {}
        return FleetWait(reached, revision, seconds, balancers, problem=problem)

    def wait_applied(
        self, revision: int, timeout: float, **options: Unpack[WaitOptions]
    ) -> FleetWait:
        if not self.fleet:
            return self._waited(revision, False, "no load balancer is registered")
        if self.applies:
            self.applied = max(self.applied, revision)
            return self._waited(revision, True)
        return self._waited(revision, False, f"lb-0 did not report it within {timeout:.0f}s")

    def wait_drained(
        self, revision: int, timeout: float, **options: Unpack[WaitOptions]
    ) -> FleetWait:
        self.drained.append(revision)
        self.history.append(f"drained {revision}")
        return self._waited(revision, True)

    # What deployer.rotation uses.
    def backend_key(self, backend: str) -> str:
        return f"backends/{backend}"

    def get(self, key: str) -> tuple[dict[str, Any] | None, int]:
        if key.startswith("backends/"):
            record = self.backends.get(key.removeprefix("backends/"))
            return (dict(record), self.revision) if record is not None else (None, 0)
        return None, 0

    def put_backend_if_unchanged(
        self, backend: str, record: dict[str, Any], mod_revision: int
    ) -> int:
        self.backends[backend] = dict(record)
        return self._bump(f"rotation {backend}")

    def live_version(self, hostname: str) -> int | None:
        frontend = self.frontends.get(hostname)
        if frontend is None:
            return None
        return self.backends[frontend["backend"]].get("version")


@dataclass
class FakeHealth:
    """Pods are healthy unless ``unhealthy`` says so; the LB answers with the routed version."""

    lb: FakeLB
    unhealthy: Callable[[PodInfo, int], bool] = lambda pod, attempt: False
    lb_answers: bool = True
    asked: list[str] = field(default_factory=list)  # load balancer addresses, in order
    attempts: dict[str, int] = field(default_factory=dict)

    def check(self, pod: PodInfo, health: dict[str, Any]) -> HealthResult:
        attempt = self.attempts.get(pod.name, 0)
        self.attempts[pod.name] = attempt + 1
        if self.unhealthy(pod, attempt):
            return HealthResult(pod.name, pod.ip, False, 200, "HTTP 200, healthy: false", 0.001)
        return HealthResult(pod.name, pod.ip, True, 200, "HTTP 200", 0.001, str(pod.version))

    def through_lb(
        self, address: str, hostname: str, path: str, timeout: float = 2.0
    ) -> tuple[int, bytes]:
        self.asked.append(address)
        if not self.lb_answers:
            raise ConnectionRefusedError("connection refused")
        version = self.lb.live_version(hostname)
        if version is None:
            return 503, b"No application is deployed at this address."
        body = {"version": str(version), "healthy": True, "message": "hi"}
        return 200, json.dumps(body).encode()


@dataclass
class ListSink:
    """Keeps log lines in a list."""

    lines: list[tuple[str, str, str]] = field(default_factory=list)
    statuses: int = 0

    def log(self, message: str, *, level: Level = "info", step: str = "") -> None:
        self.lines.append((level, step, message))

    def status(self) -> None:
        self.statuses += 1

    def text(self) -> str:
        return "\n".join(message for _, _, message in self.lines)


TRANSIENT = Transient("Kubernetes API unreachable: connection refused")
