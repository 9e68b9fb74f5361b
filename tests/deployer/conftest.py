"""Fixtures of the deployer tests: apps, deployments and the fake collaborators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from deployer.models import App, Deployment
from deployer.workflow import Timing, Workflow
from tests.deployer.fakes import FakeClock, FakeCluster, FakeHealth, FakeLB, ListSink


@pytest.fixture
def make_app(db: None) -> Callable[..., App]:
    """Create an App with sensible defaults; keyword arguments override fields."""
    counter = {"n": 0}

    def make(**fields: Any) -> App:
        counter["n"] += 1
        n = counter["n"]
        defaults: dict[str, Any] = {
            "name": f"hello{n}",
            "image": "demo/hello:1",
            "replicas": 2,
            "frontend": f"hello{n}.localhost",
            "health_deadline": 30,
        }
        return App.objects.create(**{**defaults, **fields})

    return make


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    """One app, hello1 at hello1.localhost."""
    return make_app()


@pytest.fixture
def lb() -> FakeLB:
    return FakeLB()


@pytest.fixture
def cluster() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def health(lb: FakeLB) -> FakeHealth:
    return FakeHealth(lb)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def retired() -> list[tuple[int, int, float]]:
    return []


@pytest.fixture
def run_workflow(
    cluster: FakeCluster,
    lb: FakeLB,
    health: FakeHealth,
    clock: FakeClock,
    sink: ListSink,
    retired: list[tuple[int, int, float]],
) -> Callable[..., Deployment]:
    """Create a RUNNING deployment of ``app`` and run the workflow with the fakes."""

    def run(
        app: App,
        *,
        image: str | None = None,
        kind: str = Deployment.Kind.DEPLOY,
        version: int | None = None,
        before: Callable[[Workflow], None] | None = None,
    ) -> Deployment:
        app.refresh_from_db()
        descriptor = app.snapshot()
        if image:
            descriptor["image"] = image
        deployment = Deployment.objects.create(
            app=app,
            kind=kind,
            image=descriptor["image"],
            descriptor=descriptor,
            version=version,
        )
        deployment.start(worker="test")
        workflow = Workflow(
            deployment=deployment,
            cluster=cluster,
            lb=lb,
            health=health,
            clock=clock,
            sink=sink,
            timing=Timing(drain_seconds=0),
            schedule_retire=lambda dep, v, delay: retired.append((dep, v, delay)),
        )
        if before is not None:
            before(workflow)
        workflow.execute()
        deployment.refresh_from_db()
        return deployment

    return run
