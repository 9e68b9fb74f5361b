"""The health-check step of the workflow: every pod over HTTP, with backoff, until a deadline.

A mixin of deployer.workflow.Workflow. A pod that stops answering is looked up in the
cluster at once, so a crash loop fails the deploy instead of waiting for the deadline.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
from typing import TYPE_CHECKING

from django.db import transaction

from deployer.collaborators import StopDeployment
from deployer.errors import BackendError
from deployer.health import HealthResult
from deployer.models import Deployment
from deployer.pods import PodInfo

if TYPE_CHECKING:
    from deployer.workflow import Workflow

    _Base = Workflow
else:
    _Base = object

# A pod restarted this often while it does not answer is crashing, not starting slowly.
CRASH_RESTARTS = 2


class HealthSteps(_Base):
    """Health checks of the new version's pods, for Workflow."""

    def log_pod_output(self) -> None:
        """Put the last lines of a failing pod's output in the log."""
        version = self.deployment.version
        assert version is not None
        with contextlib.suppress(BackendError):
            for pod in self.cluster.pods(self.namespace, self.name, version)[:1]:
                tail = self.cluster.pod_log_tail(self.namespace, pod.name, 10).strip()
                if tail:
                    self.log(f"Last output of {pod.name}:\n{tail}", level="warning", step="pods")

    def check_health(self, deadline: float) -> None:
        """Check every pod until each passed once; retry with backoff until the deadline."""
        health = self.d["health"]
        if not health.get("enabled", True):
            self.log("Health checks are disabled for this app; skipping.", step="health")
            self.healthy_at = self.clock.monotonic()
            return
        url = f"http://<pod>:{health['port']}{health['path']}"
        self.log(f"Checking {url} ({health['type']}) on {len(self.pods)} pods.", step="health")
        results: dict[str, HealthResult] = {}
        pending = list(self.pods)
        attempt = 0
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(pending) or 1)) as pool:
            while pending:
                self.check_abort()
                checked = list(pool.map(lambda pod: self.health.check(pod, health), pending))
                if all(result.healthy for result in checked):
                    self.healthy_at = self.clock.monotonic()  # the last pod just passed
                with transaction.atomic():
                    pending = self._record_round(pending, checked, results)
                if not pending:
                    break
                if any(results[p.name].status == 0 for p in pending):
                    self.check_pods_alive()
                if self.clock.monotonic() >= deadline:
                    names = ", ".join(f"{p.name} ({results[p.name].detail})" for p in pending)
                    raise StopDeployment(
                        f"health checks did not pass within {health['deadline']}s: {names}"
                    )
                backoff = self.timing.health_backoff
                self.clock.sleep(
                    min(
                        backoff[min(attempt, len(backoff) - 1)],
                        max(0.0, deadline - self.clock.monotonic()),
                    )
                )
                attempt += 1

    def _record_round(
        self,
        pending: list[PodInfo],
        checked: list[HealthResult],
        results: dict[str, HealthResult],
    ) -> list[PodInfo]:
        """Log and store one round of health checks; return the pods still unhealthy."""
        still: list[PodInfo] = []
        for pod, result in zip(pending, checked, strict=True):
            previous = results.get(pod.name)
            results[pod.name] = result
            if result.healthy:
                self.log(
                    f"Pod {pod.name} ({pod.ip}) is healthy: {result.detail} "
                    f"in {result.seconds * 1000:.0f} ms.",
                    step="health",
                )
                continue
            still.append(pod)
            if previous is None or previous.detail != result.detail:
                self.log(
                    f"Pod {pod.name} ({pod.ip}) is not healthy yet: {result.detail}",
                    level="warning",
                    step="health",
                )
        self._store_health(results)
        return still

    def check_pods_alive(self) -> None:
        """Fail at once when a pod that does not answer has crashed or restarted meanwhile."""
        version = self.deployment.version
        if version is None or self.deployment.kind != Deployment.Kind.DEPLOY:
            return
        for pod in self.cluster.pods(self.namespace, self.name, version):
            if pod.deleting:
                continue
            problem = pod.fatal or (
                f"the container exited and was restarted {pod.restarts} times "
                f"({pod.reason or 'no reason'}: {pod.message})"
                if pod.restarts >= CRASH_RESTARTS
                else ""
            )
            if problem:
                self.log_pod_output()
                raise StopDeployment(f"pod {pod.name}: {problem}")

    def _store_health(self, results: dict[str, HealthResult]) -> None:
        self.deployment.health_results = [r.as_json() for r in results.values()]
        self._save("health_results")
