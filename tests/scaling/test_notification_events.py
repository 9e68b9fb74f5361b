"""What the scaler announces (deployer.events): a failed scaling run, a drain that did not finish."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from deployer.errors import TooManyRequests
from deployer.events import event_emitted
from deployer.pods import PodInfo
from scaling import runner, services
from scaling.drain import DrainFailed, DrainOptions, drain_node
from scaling.models import NodeGroup, ScalingRun
from scaling.runner import Outcome, RunContext
from tests.scaling.conftest import FakeNodes


@pytest.fixture
def heard() -> Iterator[list[dict[str, Any]]]:
    """Every event emitted during the test, as its listener receives it."""
    events: list[dict[str, Any]] = []

    def listen(sender: Any, **kwargs: Any) -> None:
        events.append(kwargs)

    event_emitted.connect(listen, dispatch_uid="test-heard")
    yield events
    event_emitted.disconnect(dispatch_uid="test-heard")


class BudgetSaysNo(FakeNodes):
    """A cluster whose disruption budget refuses every eviction."""

    def evict(self, pod: PodInfo, grace_seconds: int | None) -> None:
        self.calls.append(("evict", pod.key))
        raise TooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.")


def test_a_failed_scaling_run_is_announced_with_its_reason(
    db: None, heard: list[dict[str, Any]]
) -> None:
    group = NodeGroup.objects.create(name="g", provider="local", min_size=0, max_size=3, desired=2)
    run = services.request_capacity(group, 1)
    group.delete()

    assert runner.execute(run.pk, RunContext(ops_factory=FakeNodes)) == Outcome.DONE

    run.refresh_from_db()
    assert run.status == ScalingRun.Status.FAILED
    [event] = heard
    assert event["event"] == "scaling_run_failed"
    assert event["scaling_run"].pk == run.pk and event["app"] is None
    assert event["details"]["reason"] == "the node group no longer exists"
    assert event["message"].startswith(f"Scaling run #{run.pk} (")


def test_a_drain_that_does_not_finish_by_its_deadline_is_announced_as_stuck(
    db: None, heard: list[dict[str, Any]]
) -> None:
    nodes = BudgetSaysNo()
    nodes.add("node-1", {})
    nodes.pods["node-1"] = [
        PodInfo(
            namespace="default",
            name="web-1",
            uid="u1",
            node="node-1",
            phase="Running",
            owner_kind="ReplicaSet",
            owner_name="web-abc",
        )
    ]
    options = DrainOptions(deadline_seconds=1, backoff_initial=0.1, backoff_max=0.2)

    with pytest.raises(DrainFailed, match="not drained within 1s"):
        drain_node(nodes, "node-1", options, lambda level, message: None)

    [event] = heard
    assert event["event"] == "drain_stuck"
    assert event["details"]["node"] == "node-1"
    assert event["details"]["left"] == ["default/web-1"]
    assert "disruption budget" in event["details"]["reason"]
