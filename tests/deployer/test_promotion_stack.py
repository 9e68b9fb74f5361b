"""Manual promotion end to end: real worker, proxysync, HAProxy, etcd, redis and localcluster.

A deploy of a manual app waits in awaiting_promotion, its heartbeat going on, while the
old version serves every request; Promote switches, Reject and the timeout roll back
before the switch, an abort still works, a run whose worker died while it waited is
rolled back by the worker that comes back, and a deploy queued behind it waits its turn.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from deployer import services
from deployer.cluster import KubeCluster
from deployer.etcdstore import EtcdStore
from deployer.models import App, Deployment
from deployer.workflow import backend_name
from tests.servers import Stack as DeployStack

from .test_integration import finished, make_app, served_versions, wait_until

pytestmark = pytest.mark.timeout(240)


def awaiting(stack: DeployStack, deployment: Deployment) -> Deployment:
    """Wait until the run awaits promotion (it fails the test if it ends first)."""
    return wait_until(
        stack,
        deployment,
        lambda d: d.status == Deployment.Status.AWAITING_PROMOTION or d.is_terminal,
        60,
    )


def live_app(stack: DeployStack, name: str, timeout: int = 600) -> App:
    """An app with v1 live (deployed automatically), whose next deploys wait for promotion."""
    app = make_app(name=name, frontend=f"{name}.localhost", replicas=1)
    first = finished(stack, services.request_deploy(app))
    assert first.status == Deployment.Status.SUCCEEDED, first.failure_reason
    App.objects.filter(pk=app.pk).update(promotion="manual", promotion_timeout_seconds=timeout)
    app.refresh_from_db()
    return app


@pytest.mark.both_databases  # decisions race the run's polls and the per-app queue
def test_it_waits_with_the_old_version_serving_then_reject_rolls_back_and_promote_switches(
    live: DeployStack,
) -> None:
    alice = get_user_model().objects.create_user("alice")
    app = live_app(live, "gate")
    cluster = KubeCluster()

    second = awaiting(live, services.request_deploy(app, image="demo/hello:2"))
    assert second.status == Deployment.Status.AWAITING_PROMOTION, second.failure_reason
    assert served_versions(live, app.frontend) == {"1"}
    assert sorted(cluster.versions("default", "gate")) == [1, 2]
    # A deploy asked for meanwhile waits behind it, and says why.
    third = services.request_deploy(app, image="demo/hello:3")
    assert "which awaits promotion" in "\n".join(third.logs.values_list("message", flat=True))
    # The run keeps beating while it waits.
    beat = second.heartbeat_at
    second = wait_until(live, second, lambda d: d.heartbeat_at != beat, 10)
    assert second.status == Deployment.Status.AWAITING_PROMOTION
    third.refresh_from_db()
    assert third.status == Deployment.Status.QUEUED

    services.request_promotion(second, Deployment.Decision.REJECT, user=alice)

    second = finished(live, second, 60)
    assert second.status == Deployment.Status.FAILED
    assert second.failure_reason == "rejected by alice"
    assert served_versions(live, app.frontend) == {"1"}
    with EtcdStore() as store:
        assert store.get_frontend(app.frontend)["backend"] == backend_name("default", "gate", 1)
        assert store.get_backend(backend_name("default", "gate", 2)) is None

    # The queued deploy runs now, and waits in its turn.
    third = awaiting(live, third)
    assert third.status == Deployment.Status.AWAITING_PROMOTION, third.failure_reason
    assert served_versions(live, app.frontend) == {"1"}

    services.request_promotion(third, Deployment.Decision.PROMOTE, user=alice)

    third = finished(live, third, 60)
    assert third.status == Deployment.Status.SUCCEEDED, third.failure_reason
    assert served_versions(live, app.frontend) == {"3"}
    assert cluster.versions("default", "gate") == [3]
    lines = "\n".join(third.logs.values_list("message", flat=True))
    assert "Promoted by alice; switching traffic to v3." in lines


def test_an_abort_the_timeout_and_a_lost_worker_while_waiting_all_roll_back(
    live: DeployStack,
) -> None:
    app = live_app(live, "limbo", timeout=3)

    timed_out = awaiting(live, services.request_deploy(app, image="demo/hello:2"))
    assert timed_out.status == Deployment.Status.AWAITING_PROMOTION, timed_out.failure_reason
    timed_out = finished(live, timed_out, 30)
    assert timed_out.status == Deployment.Status.FAILED
    assert timed_out.failure_reason == (
        "not promoted within 3 s: rejected when the promotion timed out"
    )
    assert timed_out.promotion_decision == "reject"
    assert served_versions(live, app.frontend) == {"1"}

    App.objects.filter(pk=app.pk).update(promotion_timeout_seconds=600)
    aborted = awaiting(live, services.request_deploy(app, image="demo/hello:3"))
    assert aborted.status == Deployment.Status.AWAITING_PROMOTION, aborted.failure_reason
    services.request_abort(aborted)

    aborted = finished(live, aborted, 30)
    assert aborted.status == Deployment.Status.ABORTED, aborted.failure_reason
    assert served_versions(live, app.frontend) == {"1"}
    assert KubeCluster().versions("default", "limbo") == [1]

    # The worker dies while its run waits: the worker that comes back rolls it back.
    orphan = awaiting(live, services.request_deploy(app, image="demo/hello:4"))
    assert orphan.status == Deployment.Status.AWAITING_PROMOTION, orphan.failure_reason
    live.kill_worker()
    assert served_versions(live, app.frontend) == {"1"}
    live.start("worker")

    orphan = finished(live, orphan, 60)
    assert orphan.status == Deployment.Status.FAILED
    assert "worker running this deployment was lost" in orphan.failure_reason
    assert served_versions(live, app.frontend) == {"1"}
    assert KubeCluster().versions("default", "limbo") == [1]
