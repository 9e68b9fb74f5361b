"""The health-check step of deploy and swap back: every pod over HTTP, with backoff, until a deadline.

A pod that stops answering is looked up in the cluster at once, so a crash loop fails
the deploy instead of waiting for the deadline.
"""

from __future__ import annotations

import concurrent.futures
import contextlib

from deployer.collaborators import StopDeployment
from deployer.errors import BackendError
from deployer.health import HealthResult
from deployer.models import Deployment
from deployer.pods import PodInfo
from deployer.workflow import Workflow

# A pod restarted this often while it does not answer is crashing, not starting slowly.
CRASH_RESTARTS = 2


def log_pod_output(run: Workflow) -> None:
    """Put the last lines of a failing pod's output in the log."""
    version = run.deployment.version
    assert version is not None
    with contextlib.suppress(BackendError):
        for pod in run.cluster.pods(run.namespace, run.name, version)[:1]:
            tail = run.cluster.pod_log_tail(run.namespace, pod.name, 10).strip()
            if tail:
                run.log(f"Last output of {pod.name}:\n{tail}", level="warning", step="pods")


def check_health(run: Workflow, deadline: float) -> None:
    """Check every pod until each passed once; retry with backoff until the deadline."""
    health = run.descriptor["health"]
    if not health.get("enabled", True):
        run.log("Health checks are disabled for this app; skipping.", step="health")
        run.healthy_at = run.clock.monotonic()
        return
    url = f"http://<pod>:{health['port']}{health['path']}"
    run.log(f"Checking {url} ({health['type']}) on {len(run.pods)} pods.", step="health")
    results: dict[str, HealthResult] = {}
    pending = list(run.pods)
    attempt = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(pending) or 1)) as pool:
        while pending:
            run.check_abort()
            checked = list(pool.map(lambda pod: run.health.check(pod, health), pending))
            if all(result.healthy for result in checked):
                run.healthy_at = run.clock.monotonic()  # the last pod just passed
                # Traffic moves next: the round is stored with the switch step's start.
                with run.deferred():
                    pending = _record_round(run, pending, checked, results)
                break
            # The round's lines, then its results on the deployment row: the row first.
            with run.locked():
                pending = _record_round(run, pending, checked, results)
            if not pending:
                break
            if any(results[p.name].status == 0 for p in pending):
                check_pods_alive(run)
            if run.clock.monotonic() >= deadline:
                names = ", ".join(f"{p.name} ({results[p.name].detail})" for p in pending)
                raise StopDeployment(
                    f"health checks did not pass within {health['deadline']}s: {names}"
                )
            backoff = run.timing.health_backoff
            run.clock.sleep(
                min(
                    backoff[min(attempt, len(backoff) - 1)],
                    max(0.0, deadline - run.clock.monotonic()),
                )
            )
            attempt += 1


def _record_round(
    run: Workflow,
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
            run.log(
                f"Pod {pod.name} ({pod.ip}) is healthy: {result.detail} "
                f"in {result.seconds * 1000:.0f} ms.",
                step="health",
            )
            continue
        still.append(pod)
        if previous is None or previous.detail != result.detail:
            run.log(
                f"Pod {pod.name} ({pod.ip}) is not healthy yet: {result.detail}",
                level="warning",
                step="health",
            )
    _store_health(run, results)
    return still


def check_pods_alive(run: Workflow) -> None:
    """Fail at once when a pod that does not answer has crashed or restarted meanwhile."""
    version = run.deployment.version
    if version is None or run.deployment.kind != Deployment.Kind.DEPLOY:
        return
    for pod in run.cluster.pods(run.namespace, run.name, version):
        if pod.deleting:
            continue
        problem = pod.fatal or (
            f"the container exited and was restarted {pod.restarts} times "
            f"({pod.reason or 'no reason'}: {pod.message})"
            if pod.restarts >= CRASH_RESTARTS
            else ""
        )
        if problem:
            log_pod_output(run)
            raise StopDeployment(f"pod {pod.name}: {problem}")


def _store_health(run: Workflow, results: dict[str, HealthResult]) -> None:
    run.deployment.health_results = [r.as_json() for r in results.values()]
    run.save("health_results")
