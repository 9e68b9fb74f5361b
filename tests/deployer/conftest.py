"""Fixtures of the deployer tests: apps, deployments and the fake collaborators."""

from __future__ import annotations

import http.client
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deployer.kinds import WORKFLOWS
from deployer.models import App, Deployment
from deployer.workflow import Timing, Workflow
from tests.deployer.fakes import FakeClock, FakeCluster, FakeHealth, FakeLB, ListSink
from tests.servers import (
    Server,
    celery_worker_command,
    haproxy_server,
    kill_process,
    python_command,
    stack_env,
    start_process,
    stop_process,
)


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


@dataclass
class DeployStack:
    """The processes of an integration test and what tests need to reach them."""

    haproxy: Server
    env: dict[str, str]
    workdir: Path
    worker_name: str
    etcd_endpoint: str
    etcd_prefix: str
    redis_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        """Start ``worker`` or ``proxysync``."""
        command = (
            celery_worker_command(self.worker_name)
            if name == "worker"
            else python_command("manage.py", "proxysync")
        )
        self.processes[name] = start_process(name, command, self.workdir, self.env)

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool at once, as a crash or OOM kill would."""
        kill_process(self.processes["worker"])

    def stop(self) -> None:
        """Stop every process this stack started."""
        for process in self.processes.values():
            stop_process(process)

    def logs(self) -> str:
        """The tail of each process's log (for failure messages)."""
        parts = []
        for name in self.processes:
            path = self.workdir / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    def get(self, hostname: str, path: str = "/health") -> tuple[int, dict[str, Any]]:
        """GET through HAProxy with ``Host: hostname`` on a new connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.haproxy.port, timeout=5)
        try:
            connection.request("GET", path, headers={"Host": hostname, "Connection": "close"})
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        try:
            data = json.loads(body)
        except ValueError:
            data = {"text": body.decode(errors="replace")}
        return response.status, data if isinstance(data, dict) else {"value": data}


@pytest.fixture(scope="module")
def deploy_stack(
    tmp_path_factory: pytest.TempPathFactory,
    django_db_setup: None,
    redis: Server,
    etcd: Server,
    kubeconfig: Path,
) -> Iterator[DeployStack]:
    """HAProxy, proxysync and a Celery worker sharing the test database, for one module."""
    from django.db import connection

    workdir = tmp_path_factory.mktemp("deploy-stack")
    with haproxy_server(workdir / "haproxy") as haproxy:
        prefix = f"/greenlight-it-{uuid.uuid4().hex[:8]}"
        env = stack_env(
            db_path=Path(connection.settings_dict["NAME"]),
            redis_url=str(redis.extra["url"]),
            etcd_endpoint=str(etcd.extra["endpoint"]),
            etcd_prefix=prefix,
            kubeconfig=kubeconfig,
            haproxy=haproxy,
            extra={"GREENLIGHT_LOG_LEVEL": "INFO"},
        )
        stack = DeployStack(
            haproxy=haproxy,
            env=env,
            workdir=workdir,
            worker_name=f"deployer-it-{uuid.uuid4().hex[:6]}@localhost",
            etcd_endpoint=str(etcd.extra["endpoint"]),
            etcd_prefix=prefix,
            redis_url=str(redis.extra["url"]),
        )
        try:
            stack.start("proxysync")
            stack.start("worker")
            yield stack
        finally:
            stack.stop()


@pytest.fixture
def live(
    deploy_stack: DeployStack,
    transactional_db: None,
    settings: Any,
    kubeconfig: Path,
) -> Iterator[DeployStack]:
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
