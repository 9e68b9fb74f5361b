"""Blue-green deploys end to end: real worker, proxysync, HAProxy, etcd, redis and localcluster."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from deployer import k8s, services
from deployer.cluster import KubeCluster
from deployer.etcdstore import EtcdStore
from deployer.models import App, Deployment
from deployer.workflow import backend_name
from tests.servers import Stack as DeployStack

pytestmark = pytest.mark.timeout(240)


def wait_until(
    stack: DeployStack, deployment: Deployment, done: Callable[[Deployment], bool], timeout: float
) -> Deployment:
    """Poll the row (the database offers no watch) until ``done``; fail with the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment.refresh_from_db()
        if done(deployment):
            return deployment
        time.sleep(0.2)
    log = "\n".join(deployment.logs.values_list("message", flat=True))
    raise AssertionError(
        f"deployment #{deployment.pk} is {deployment.status}\n{log}\n{stack.logs()}"
    )


def finished(stack: DeployStack, deployment: Deployment, timeout: float = 90) -> Deployment:
    """Wait for a terminal status."""
    return wait_until(stack, deployment, lambda d: d.is_terminal, timeout)


def make_app(**fields: object) -> App:
    """A demo app with a short health deadline and no guard after the switch."""
    defaults: dict[str, object] = {
        "name": "hello",
        "image": "demo/hello:1",
        "replicas": 2,
        "frontend": "hello.localhost",
        "health_deadline": 15,
        "guard_bake_seconds": 0,
    }
    return App.objects.create(**{**defaults, **fields})


def served_versions(stack: DeployStack, hostname: str, requests: int = 6) -> set[str]:
    """The versions answering through the load balancer over a few new connections."""
    versions = set()
    for _ in range(requests):
        status, body = stack.get(hostname)
        assert status == 200, body
        versions.add(str(body.get("version")))
    return versions


def test_it_deploys_upgrades_and_refuses_a_broken_version(live: DeployStack) -> None:
    app = make_app()
    cluster = KubeCluster()

    first = finished(live, services.request_deploy(app))
    assert first.status == Deployment.Status.SUCCEEDED, first.failure_reason
    assert served_versions(live, app.frontend) == {"1"}

    second = finished(live, services.request_deploy(app, image="demo/hello:2"))
    assert second.status == Deployment.Status.SUCCEEDED, second.failure_reason
    assert served_versions(live, app.frontend) == {"2"}
    assert cluster.versions("default", "hello") == [2]
    with EtcdStore() as store:
        assert store.get_backend(backend_name("default", "hello", 1)) is None
    lines = list(second.logs.values_list("message", flat=True))
    assert any("done in" in line for line in lines)
    assert all(r["healthy"] for r in second.health_results) and len(second.health_results) == 2

    broken = finished(live, services.request_deploy(app, image="demo/broken"))
    assert broken.status == Deployment.Status.FAILED
    assert "health checks did not pass" in broken.failure_reason
    assert served_versions(live, app.frontend) == {"2"}
    assert cluster.versions("default", "hello") == [2]
    with EtcdStore() as store:
        assert store.get_frontend(app.frontend)["backend"] == backend_name("default", "hello", 2)
        assert store.get_backend(backend_name("default", "hello", 3)) is None
    assert [p.version for p in cluster.pods("default", "hello", 3) if not p.deleting] == []

    services.request_undeploy(app)
    gone = Deployment.objects.filter(kind=Deployment.Kind.UNDEPLOY).get()
    assert finished(live, gone).status == Deployment.Status.SUCCEEDED
    assert live.get(app.frontend)[0] == 503
    assert cluster.versions("default", "hello") == []


def test_it_fails_at_once_on_an_image_that_cannot_be_pulled(live: DeployStack) -> None:
    app = make_app(name="nopull", frontend="nopull.localhost")

    deployment = finished(live, services.request_deploy(app, image="nope/nothing:1"), 60)

    assert deployment.status == Deployment.Status.FAILED
    assert "could not be pulled" in deployment.failure_reason
    lines = list(deployment.logs.values_list("message", flat=True))
    assert any(line.startswith("Event: ") and "nope/nothing:1" in line for line in lines), lines
    assert KubeCluster().versions("default", "nopull") == []
    with EtcdStore() as store:
        assert store.get_frontend(app.frontend) is None


@pytest.mark.both_databases
def test_it_aborts_a_running_deploy_and_rolls_back(live: DeployStack) -> None:
    app = make_app(
        name="slowpoke",
        frontend="slowpoke.localhost",
        image="demo/slow",
        env={"STARTUP_SECONDS": "60"},
        health_deadline=120,
    )
    deployment = services.request_deploy(app)
    wait_until(live, deployment, lambda d: d.steps.get("health", {}).get("state") == "running", 60)

    services.request_abort(deployment)

    deployment = finished(live, deployment, 30)
    assert deployment.status == Deployment.Status.ABORTED, deployment.failure_reason
    assert KubeCluster().versions("default", "slowpoke") == []
    with EtcdStore() as store:
        assert store.get_frontend(app.frontend) is None


@pytest.mark.both_databases
def test_it_recovers_a_deploy_whose_worker_was_killed(live: DeployStack) -> None:
    app = make_app(name="phoenix", frontend="phoenix.localhost")
    first = finished(live, services.request_deploy(app))
    assert first.status == Deployment.Status.SUCCEEDED, first.failure_reason
    app.refresh_from_db()
    app.image, app.env = "demo/slow", {"STARTUP_SECONDS": "60"}
    app.health_deadline = 120
    app.save()
    deployment = services.request_deploy(app)
    wait_until(live, deployment, lambda d: d.steps.get("health", {}).get("state") == "running", 60)

    live.kill_worker()
    live.start("worker")

    deployment = finished(live, deployment, 60)
    assert deployment.status == Deployment.Status.FAILED
    assert "worker running this deployment was lost" in deployment.failure_reason
    assert KubeCluster().versions("default", "phoenix") == [1]
    assert served_versions(live, app.frontend) == {"1"}


def backend_servers_become(
    stack: DeployStack, app: str, version: int, done: Callable[[set[str], set[str]], bool]
) -> None:
    """Poll etcd and the cluster until ``done(backend server names, ready pod names)``."""
    cluster = KubeCluster()
    deadline = time.monotonic() + 60
    names: set[str] = set()
    ready: set[str] = set()
    with EtcdStore() as store:
        while time.monotonic() < deadline:
            record = store.get_backend(backend_name("default", app, version)) or {}
            names = {s["name"] for s in record.get("servers", [])}
            ready = {p.name for p in cluster.pods("default", app, version) if p.ready}
            if done(names, ready):
                return
            time.sleep(0.2)
    raise AssertionError(f"backend servers {names}, ready pods {ready}\n{stack.logs()}")


def test_it_keeps_the_live_backend_in_sync_when_pods_are_replaced_or_added(
    live: DeployStack,
) -> None:
    app = make_app(name="steady", frontend="steady.localhost")
    first = finished(live, services.request_deploy(app))
    assert first.status == Deployment.Status.SUCCEEDED, first.failure_reason
    cluster = KubeCluster()
    victim = cluster.pods("default", "steady", 1)[0]

    k8s.call(cluster.core.delete_namespaced_pod, victim.name, "default")
    backend_servers_become(
        live,
        "steady",
        1,
        lambda names, ready: victim.name not in names and len(names) == 2 and names <= ready,
    )

    app.refresh_from_db()
    services.scale_app(app, 3)
    backend_servers_become(live, "steady", 1, lambda names, ready: len(names) == 3 == len(ready))
    app.refresh_from_db()
    assert app.replicas == 3
    assert served_versions(live, app.frontend) == {"1"}


def test_it_swaps_back_to_the_version_kept_warm(live: DeployStack) -> None:
    app = make_app(name="warm", frontend="warm.localhost", keep_old_seconds=300)
    for image in ("demo/hello:1", "demo/hello:2"):
        deployment = finished(live, services.request_deploy(app, image=image))
        assert deployment.status == Deployment.Status.SUCCEEDED, deployment.failure_reason
    app.refresh_from_db()
    assert KubeCluster().versions("default", "warm") == [1, 2]

    swap = services.request_swap_back(app)

    assert swap is not None and swap.version == 1
    swap = finished(live, swap)
    assert swap.status == Deployment.Status.SUCCEEDED, swap.failure_reason
    assert served_versions(live, app.frontend) == {"1"}
    assert KubeCluster().versions("default", "warm") == [1]
    app.refresh_from_db()
    assert app.live_version == 1
    assert services.request_swap_back(app) is None  # v2 is gone: nothing warm to go back to
