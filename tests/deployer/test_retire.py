"""A kept-warm version's retirement, when a load balancer whose proxysync is down holds it."""

from __future__ import annotations

from typing import Any

import pytest

from deployer import runner
from deployer.models import App, Deployment, DeploymentLog
from deployer.rotation import StillRouted
from tests.deployer.fakes import FakeCluster, FakeLB


@pytest.mark.django_db
def test_a_held_retirement_is_deferred_again_and_the_version_keeps_running(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = Deployment.objects.create(app=app, image=app.image, descriptor=app.snapshot())
    cluster = FakeCluster()
    cluster.add_live(1)
    cluster.add_live(2)
    App.objects.filter(pk=app.pk).update(live_version=2)
    scheduled: list[tuple[int, int, float]] = []

    def held(*_args: Any, **_kwargs: Any) -> None:
        raise StillRouted("lb-1 may still route to these pods: its proxysync does not answer")

    monkeypatch.setattr(runner, "EtcdStore", FakeLB)
    monkeypatch.setattr(runner, "KubeCluster", lambda: cluster)
    monkeypatch.setattr(runner, "take_out", held)
    monkeypatch.setattr(runner, "schedule_retire", lambda *args: scheduled.append(args))

    runner.retire(deployment.pk, 1)

    assert cluster.deleted == []
    [(deployment_id, version, delay)] = scheduled
    assert (deployment_id, version) == (deployment.pk, 1)
    assert delay >= runner.RETIRE_RETRY_SECONDS
    [line] = DeploymentLog.objects.filter(deployment=deployment, step="retire")
    assert line.level == "warning"
    assert line.message.startswith(f"Retiring v1 deferred again by {delay:.0f}s: lb-1 may")
