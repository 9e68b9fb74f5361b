"""Fixtures of the deployer tests: apps, deployments and the fake collaborators."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer.kinds import WORKFLOWS
from deployer.models import App, Deployment
from deployer.workflow import Timing, Workflow
from tests.deployer.fakes import FakeClock, FakeCluster, FakeHealth, FakeLB, ListSink
from tests.servers import Server, Stack, running_stack


@pytest.fixture
def app_defaults() -> dict[str, Any]:
    """Deployer apps wait at most 30 s for health (the model says 120)."""
    return {"health_deadline": 30}


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    """One app, app1 at app1.localhost."""
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
        workflow = WORKFLOWS[kind](
            deployment=deployment,
            cluster=cluster,
            lb=lb,
            health=health,
            clock=clock,
            sink=sink,
            timing=Timing(),
            schedule_retire=lambda dep, v, delay: retired.append((dep, v, delay)),
        )
        if before is not None:
            before(workflow)
        workflow.execute()
        deployment.refresh_from_db()
        return deployment

    return run


# Integration: a real worker, proxysync, HAProxy, etcd, redis and localcluster.


@pytest.fixture(scope="module")
def deploy_stack(
    tmp_path_factory: pytest.TempPathFactory,
    django_db_setup: None,
    redis: Server,
    etcd: Server,
    kubeconfig: Path,
) -> Iterator[Stack]:
    """HAProxy, proxysync and a Celery worker sharing the test database, for one module."""
    with running_stack(
        tmp_path_factory.mktemp("deploy-stack"),
        redis_url=str(redis.extra["url"]),
        etcd_endpoint=str(etcd.extra["endpoint"]),
        kubeconfig=kubeconfig,
        web=False,
        label="deployer-it",
    ) as stack:
        yield stack


@pytest.fixture
def live(
    deploy_stack: Stack,
    transactional_db: None,
    settings: Any,
    kubeconfig: Path,
) -> Iterator[Stack]:
    """The module's stack, with this process's settings and Celery pointed at it."""
    from dashboard.celery import app as celery_app
    from deployer import k8s

    settings.KUBECONFIG = kubeconfig
    settings.ETCD_ENDPOINT = deploy_stack.etcd_endpoint
    settings.ETCD_PREFIX = deploy_stack.etcd_prefix
    settings.LB_URL = f"http://127.0.0.1:{deploy_stack.haproxy.port}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [deploy_stack.redis_url], "prefix": "greenlight"},
        }
    }
    k8s.reset()
    previous = celery_app.conf.broker_url

    def point_celery_at(url: str) -> None:
        # Celery caches its pools on first use; kombu keeps them per URL, so they
        # are forgotten here, not closed (a closed one would be handed out again).
        celery_app.conf.broker_url = url
        celery_app._pool = None
        celery_app.amqp._producer_pool = None

    point_celery_at(deploy_stack.redis_url)
    try:
        yield deploy_stack
    finally:
        point_celery_at(previous)
        k8s.reset()
