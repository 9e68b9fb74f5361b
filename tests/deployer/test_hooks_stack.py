"""Pre-switch hooks end to end: real worker, proxysync, HAProxy, etcd, redis and localcluster.

The hook runs demo/hello's ``migrate`` command as a Job after the health checks: its output
reaches the deploy log under its own step; a failing or timed-out hook rolls back with the
old version serving; an abort deletes the Job; an app without a hook has no hook step.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from deployer import k8s, services
from deployer.hooks import job_name
from deployer.models import App, Deployment
from tests.servers import Stack as DeployStack

from .test_integration import finished, make_app, served_versions, wait_until

pytestmark = pytest.mark.timeout(240)


def batch() -> client.BatchV1Api:
    """The batch API as Greenlight reaches the cluster."""
    return client.BatchV1Api(k8s.api_client())


def log_of(deployment: Deployment, step: str = "hook") -> str:
    """The deploy log lines of one step."""
    return "\n".join(deployment.logs.filter(step=step).values_list("message", flat=True))


def job_exists(namespace: str, name: str) -> bool:
    """Whether the Job is in the cluster (not being deleted)."""
    try:
        found = batch().read_namespaced_job(name, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return found.metadata.deletion_timestamp is None


def live_app(stack: DeployStack, name: str, **hook: object) -> App:
    """An app with v1 live, deployed without a hook, whose next deploys run ``hook``."""
    app = make_app(name=name, frontend=f"{name}.localhost", replicas=1)
    first = finished(stack, services.request_deploy(app))
    assert first.status == Deployment.Status.SUCCEEDED, first.failure_reason
    assert "hook" not in first.steps
    App.objects.filter(pk=app.pk).update(**hook)
    app.refresh_from_db()
    return app


def test_a_hook_that_succeeds_logs_its_output_and_one_that_fails_rolls_back(
    live: DeployStack,
) -> None:
    app = live_app(live, "hooked", pre_switch_hook="migrate")

    second = finished(live, services.request_deploy(app, image="demo/hello:2"))
    assert second.status == Deployment.Status.SUCCEEDED, second.failure_reason
    assert second.steps["hook"]["state"] == "done"
    hook_log = log_of(second)
    assert "Run the pre-switch hook" in hook_log
    assert "demo/hello version 2: migrate starting" in hook_log
    assert "preview at http://hooked--v2.localhost" in hook_log
    assert "migrate done" in hook_log
    assert served_versions(live, app.frontend) == {"2"}
    assert not job_exists("default", job_name("hooked", 2))

    App.objects.filter(pk=app.pk).update(env={"DEMO_MIGRATE_FAIL": "1"})
    third = finished(live, services.request_deploy(app, image="demo/hello:3"))
    assert third.status == Deployment.Status.FAILED
    assert third.failure_reason == "the pre-switch hook failed: its command exited with status 1"
    assert "error: migration 0002_add_column failed" in log_of(third)
    assert served_versions(live, app.frontend) == {"2"}
    # The failed Job is kept for inspection, with its pod and output.
    kept = batch().read_namespaced_job(job_name("hooked", third.version), "default")
    assert [(c.type, c.reason) for c in kept.status.conditions][-1] == (
        "Failed",
        "BackoffLimitExceeded",
    )


def test_a_hook_that_times_out_rolls_back_and_an_abort_deletes_the_job(
    live: DeployStack,
) -> None:
    app = live_app(
        live,
        "stuck",
        pre_switch_hook="migrate",
        pre_switch_hook_timeout_seconds=2,
        env={"DEMO_MIGRATE_SLEEP": "60"},
    )

    timed_out = finished(live, services.request_deploy(app, image="demo/hello:2"))
    assert timed_out.status == Deployment.Status.FAILED
    assert timed_out.failure_reason == "the pre-switch hook timed out after 2s"
    assert served_versions(live, app.frontend) == {"1"}

    App.objects.filter(pk=app.pk).update(pre_switch_hook_timeout_seconds=600)
    aborted = services.request_deploy(app, image="demo/hello:3")
    wait_until(live, aborted, lambda d: "migrating for 60s" in log_of(d) or d.is_terminal, 60)
    services.request_abort(aborted)
    aborted = finished(live, aborted, 30)
    assert aborted.status == Deployment.Status.ABORTED, aborted.failure_reason
    assert served_versions(live, app.frontend) == {"1"}
    assert not job_exists("default", job_name("stuck", aborted.version))
