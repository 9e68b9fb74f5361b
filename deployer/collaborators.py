"""The workflow's collaborators as Protocols, the real clock, and the workflow's timeouts.

Production wires deployer.cluster.KubeCluster, deployer.etcdstore.EtcdStore,
deployer.health.HttpHealthChecker, SystemClock and deployer.logsink.deployment_log
(see deployer.runner); unit tests pass fakes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol, Unpack

from deployer.cluster import backend_name as backend_name  # where the workflow's callers look
from deployer.health import HealthResult
from deployer.lbfleet import RouteOptions, ServerEntry
from deployer.logsink import LogSink as LogSink  # where the workflow's callers look
from deployer.pods import PodInfo, PodStartWait
from deployer.rotation import RotationStore


class StopDeployment(Exception):
    """Ends a deployment early: ``reason`` is shown to the user; ``aborted`` marks a user abort."""

    def __init__(self, reason: str, *, aborted: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.aborted = aborted


class Cluster(Protocol):
    """Versioned workloads of apps (deployer.cluster.KubeCluster in production)."""

    def versions(self, namespace: str, app: str) -> list[int]: ...
    def version_exists(self, namespace: str, app: str, version: int) -> bool: ...
    def create_version(self, descriptor: dict[str, Any], version: int) -> None: ...
    def delete_version(self, namespace: str, app: str, version: int) -> None: ...
    def pods(self, namespace: str, app: str, version: int) -> list[PodInfo]: ...
    def pod_log_tail(self, namespace: str, pod: str, lines: int = 10) -> str: ...
    def wait_pods_started(self, wait: PodStartWait) -> list[PodInfo]: ...


class LBStore(RotationStore, Protocol):
    """The load balancers' records (deployer.etcdstore.EtcdStore in production).

    Waiting for every live load balancer (``wait_applied``, ``wait_drained``) and the
    list of them (``load_balancers``) come with RotationStore.
    """

    def get_frontend(self, hostname: str) -> dict[str, Any] | None: ...
    def get_backend(self, backend: str) -> dict[str, Any] | None: ...
    def put_route(
        self, hostname: str, backend: str, servers: list[ServerEntry], **route: Unpack[RouteOptions]
    ) -> int: ...
    def put_backend(self, backend: str, record: dict[str, Any]) -> int: ...
    def point_frontend(
        self, hostname: str, backend: str, options: dict[str, Any] | None = None
    ) -> int: ...
    def delete_backend(self, backend: str) -> int: ...
    def delete_route(self, hostname: str, backends: list[str]) -> int: ...
    def put_preview(self, backend: str, record: dict[str, Any]) -> int: ...
    def get_preview(self, backend: str) -> dict[str, Any] | None: ...
    def delete_preview(self, backend: str) -> int: ...


class HealthChecker(Protocol):
    """HTTP checks of pods and through a load balancer at its address (deployer.health)."""

    def check(self, pod: PodInfo, health: dict[str, Any]) -> HealthResult: ...
    def through_lb(
        self, address: str, hostname: str, path: str, timeout: float = 2.0
    ) -> tuple[int, bytes]: ...


class Clock(Protocol):
    """Monotonic time and waiting (a fake advances instantly in tests)."""

    def monotonic(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """Seconds since an arbitrary point; never goes back, unlike the wall clock."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds``."""
        time.sleep(seconds)


@dataclass(frozen=True)
class Timing:
    """Timeouts and delays of the workflow; tests shorten them."""

    apply_timeout: float = 30.0
    verify_timeout: float = 10.0
    # Old pods stop once no HAProxy worker of an older configuration is left, or after this.
    drain_timeout: float = 10.0
    health_backoff: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0)


def version_of_backend(record: dict[str, Any] | None) -> int | None:
    """The version a backend record serves, when recorded."""
    if not record:
        return None
    value = record.get("version")
    return int(value) if isinstance(value, int | str) and str(value).isdigit() else None
