"""Traffic mode service end to end: the stable Service's selector moves, on localcluster's kube-proxy.

Real worker, proxysync, HAProxy, etcd, redis and localcluster (official client). Load runs
through the stable Service's ClusterIP (keep-alive and new connections) while versions
change, and must lose nothing.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.utils import timezone
from kubernetes import client

from deployer import k8s, runner, services
from deployer.collaborators import StopDeployment
from deployer.etcdstore import EtcdStore
from deployer.lbconfig import preview_backend
from deployer.models import App, Deployment
from deployer.workflow import backend_name
from tests.servers import Stack as DeployStack

from .test_integration import finished, make_app, served_versions

pytestmark = pytest.mark.timeout(300)


def stable(name: str) -> client.V1Service | None:
    """The app's stable Service, or None."""
    try:
        return k8s.core_v1().read_namespaced_service(name, "default")
    except client.ApiException as exc:
        assert exc.status == 404
        return None


def cluster_ip_versions(service: client.V1Service, requests: int = 8) -> set[str]:
    """The versions answering through the ClusterIP over new connections."""
    seen = set()
    for _ in range(requests):
        connection = http.client.HTTPConnection(
            service.spec.cluster_ip, service.spec.ports[0].port, timeout=5
        )
        try:
            connection.request("GET", "/health")
            response = connection.getresponse()
            assert response.status == 200
            seen.add(str(json.loads(response.read())["version"]))
        finally:
            connection.close()
    return seen


@dataclass
class Load:
    """Requests through one address until stopped: (ok, failed, versions seen)."""

    address: tuple[str, int]
    keepalive: bool
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    versions: set[str] = field(default_factory=set)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        connection: http.client.HTTPConnection | None = None
        reused = False
        while not self.stop.is_set():
            for attempt in (1, 2):
                if connection is None:
                    connection, reused = http.client.HTTPConnection(*self.address, timeout=5), False
                try:
                    headers = {} if self.keepalive else {"Connection": "close"}
                    connection.request("GET", "/health", headers=headers)
                    response = connection.getresponse()
                    body = response.read()
                    if response.status != 200:
                        self.failures.append(f"HTTP {response.status}")
                    else:
                        self.ok += 1
                        self.versions.add(str(json.loads(body)["version"]))
                    if self.keepalive and not response.will_close:
                        reused = True
                    else:
                        connection.close()
                        connection = None
                    break
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()
                    connection = None
                    # Like every HTTP client: a kept-alive connection the server closed
                    # while idle is retried once on a new one; anything else is a failure.
                    stale = reused and isinstance(
                        exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError
                    )
                    if not (stale and attempt == 1):
                        self.failures.append(f"{time.time():.3f} {type(exc).__name__}: {exc}")
                        break
            time.sleep(0.01)
        if connection is not None:
            connection.close()


@contextmanager
def load_through(service: client.V1Service) -> Iterator[list[Load]]:
    """Keep-alive and new-connection load through the ClusterIP for the block's duration."""
    address = (service.spec.cluster_ip, service.spec.ports[0].port)
    loads = [Load(address, keepalive=True), Load(address, keepalive=False)]
    threads = [threading.Thread(target=load.run, daemon=True) for load in loads]
    for thread in threads:
        thread.start()
    try:
        yield loads
    finally:
        for load in loads:
            load.stop.set()
        for thread in threads:
            thread.join(10)


def assert_nothing_lost(loads: list[Load]) -> None:
    """Every request answered 200, and each load made some."""
    for load in loads:
        assert load.failures == [], (load.keepalive, load.failures[:5])
        assert load.ok > 10, load


def deployed(live: DeployStack, app: App, image: str) -> Deployment:
    """A deploy of ``image`` that succeeded."""
    deployment = finished(live, services.request_deploy(app, image=image))
    assert deployment.status == Deployment.Status.SUCCEEDED, deployment.failure_reason
    return deployment


@pytest.mark.both_databases
def test_it_moves_the_stable_services_selector_and_loses_no_request(live: DeployStack) -> None:
    app = make_app(name="stable", frontend="stable.localhost", traffic="service")

    first = deployed(live, app, "demo/hello:1")

    service = stable("stable")
    assert service is not None
    assert service.spec.selector == {
        "app": "stable",
        "app.kubernetes.io/managed-by": "greenlight",
        "version": "1",
    }
    create_lines = list(first.logs.filter(step="create").values_list("message", flat=True))
    assert any("selects every version of the app" in line for line in create_lines)
    assert cluster_ip_versions(service) == {"1"}
    assert served_versions(live, app.frontend) == {"1"}
    with EtcdStore() as store:
        record = store.get_backend(backend_name("default", "stable", 1))
    assert record["servers"] == [
        {"name": "stable", "address": service.spec.cluster_ip, "port": 8080}
    ]
    assert record["traffic"] == "service"

    with load_through(service) as loads:
        second = deployed(live, app, "demo/hello:2")
        time.sleep(0.5)

    assert_nothing_lost(loads)
    assert set().union(*(load.versions for load in loads)) == {"1", "2"}
    assert stable("stable").spec.selector["version"] == "2"
    assert cluster_ip_versions(service) == {"2"}
    assert served_versions(live, app.frontend) == {"2"}
    switch_lines = list(second.logs.filter(step="switch").values_list("message", flat=True))
    assert any("answers through Service stable" in line for line in switch_lines), switch_lines
    assert stable("stable").spec.cluster_ip == service.spec.cluster_ip
    # The endpoint sync, which saw v2's pods become ready, left the ClusterIP as the server.
    with EtcdStore() as store:
        record = store.get_backend(backend_name("default", "stable", 2))
        preview = store.get_backend(preview_backend(backend_name("default", "stable", 2)))
    assert [s["address"] for s in record["servers"]] == [service.spec.cluster_ip]
    # v2's preview backend reaches v2's own Service, not the stable one.
    own = k8s.core_v1().read_namespaced_service("stable-v2", "default")
    assert preview is not None
    assert [s["address"] for s in preview["servers"]] == [own.spec.cluster_ip]
    assert own.spec.cluster_ip != service.spec.cluster_ip


def test_a_broken_version_never_gets_the_selector(live: DeployStack) -> None:
    app = make_app(name="unbroken", frontend="unbroken.localhost", traffic="service")
    deployed(live, app, "demo/hello:1")
    service = stable("unbroken")
    assert service is not None

    with load_through(service) as loads:
        broken = finished(live, services.request_deploy(app, image="demo/broken"))

    assert broken.status == Deployment.Status.FAILED
    assert_nothing_lost(loads)
    assert {v for load in loads for v in load.versions} == {"1"}
    assert stable("unbroken").spec.selector["version"] == "1"


def v2_claimed_over_v1(
    live: DeployStack, monkeypatch: pytest.MonkeyPatch, name: str, worker: str
) -> tuple[App, client.V1Service, Deployment]:
    """A service-mode app ``name`` with v1 live, and a deploy of v2 claimed by ``worker`` for
    the test to run in-process (never sent to the stack's worker)."""
    app = make_app(name=name, frontend=f"{name}.localhost", traffic="service")
    deployed(live, app, "demo/hello:1")
    service = stable(name)
    assert service is not None
    monkeypatch.setattr(services, "enqueue", lambda deployment_id: None)
    deployment = services.request_deploy(app, image="demo/hello:2")
    claimed = runner.claim(deployment.pk, worker)
    assert claimed is not None
    return app, service, claimed


@pytest.mark.both_databases
def test_a_failure_after_the_switch_points_the_selector_back(
    live: DeployStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, service, claimed = v2_claimed_over_v1(live, monkeypatch, "flipback", "test")

    with load_through(service) as loads, runner.workflow_for(claimed) as workflow:

        def verify_fails() -> None:
            assert stable("flipback").spec.selector["version"] == "2"
            raise StopDeployment("the new version misbehaves behind the load balancer")

        workflow.verify = verify_fails  # type: ignore[method-assign]
        workflow.execute()

    claimed.refresh_from_db()
    assert claimed.status == Deployment.Status.FAILED
    assert_nothing_lost(loads)
    assert stable("flipback").spec.selector["version"] == "1"
    assert cluster_ip_versions(service) == {"1"}
    assert served_versions(live, app.frontend) == {"1"}
    lines = list(claimed.logs.filter(step="rollback").values_list("message", flat=True))
    assert any("selects v1 again" in line for line in lines), lines
    assert any("endpoints are v1's 2 pods again" in line for line in lines), lines


class WorkerDied(BaseException):
    """Stands for the worker process going away mid-run (what SystemExit does to it)."""


@pytest.mark.both_databases
def test_a_worker_lost_after_the_selector_moved_is_recovered_by_another_which_points_it_back(
    live: DeployStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, service, claimed = v2_claimed_over_v1(live, monkeypatch, "lostsvc", "gone-host#1")

    with load_through(service) as loads:
        with runner.workflow_for(claimed) as workflow:

            def die() -> None:
                assert stable("lostsvc").spec.selector["version"] == "2"
                raise WorkerDied

            workflow.verify = die  # type: ignore[method-assign]
            with pytest.raises(WorkerDied):
                workflow.execute()

        # Nothing finished or undone: the run waits, RUNNING, for a live worker.
        claimed.refresh_from_db()
        assert claimed.status == Deployment.Status.RUNNING
        assert stable("lostsvc").spec.selector["version"] == "2"
        Deployment.objects.filter(pk=claimed.pk).update(
            heartbeat_at=timezone.now() - timedelta(minutes=5)
        )
        runner.recover(claimed.pk, "gone-host#1", "rescuer#1")

    claimed.refresh_from_db()
    assert claimed.status == Deployment.Status.FAILED, claimed.failure_reason
    assert "was lost" in claimed.failure_reason
    assert_nothing_lost(loads)
    assert stable("lostsvc").spec.selector["version"] == "1"
    assert cluster_ip_versions(service) == {"1"}
    assert served_versions(live, app.frontend) == {"1"}
    lines = list(claimed.logs.values_list("message", flat=True))
    assert any("selects v1 again" in line for line in lines), lines


@pytest.mark.both_databases
def test_swap_back_points_the_selector_at_the_warm_version(live: DeployStack) -> None:
    app = make_app(
        name="swapsvc", frontend="swapsvc.localhost", traffic="service", keep_old_seconds=300
    )
    deployed(live, app, "demo/hello:1")
    deployed(live, app, "demo/hello:2")
    service = stable("swapsvc")
    assert service is not None and service.spec.selector["version"] == "2"

    with load_through(service) as loads:
        swap = services.request_swap_back(app)
        assert swap is not None
        swap = finished(live, swap)

    assert swap.status == Deployment.Status.SUCCEEDED, swap.failure_reason
    assert_nothing_lost(loads)
    assert stable("swapsvc").spec.selector["version"] == "1"
    assert cluster_ip_versions(service) == {"1"}
    assert served_versions(live, app.frontend) == {"1"}


def test_undeploy_deletes_the_stable_service(live: DeployStack) -> None:
    app = make_app(name="goner", frontend="goner.localhost", traffic="service")
    deployed(live, app, "demo/hello:1")
    assert stable("goner") is not None

    undeploy = finished(live, services.request_undeploy(app))

    assert undeploy.status == Deployment.Status.SUCCEEDED, undeploy.failure_reason
    assert stable("goner") is None
    assert live.get(app.frontend)[0] == 503


def test_it_refuses_to_take_over_a_service_it_does_not_manage(live: DeployStack) -> None:
    k8s.core_v1().create_namespaced_service(
        "default",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "taken"},
            "spec": {"selector": {"app": "other"}, "ports": [{"port": 80}]},
        },
    )
    app = make_app(name="taken", frontend="taken.localhost", traffic="service")

    deployment = finished(live, services.request_deploy(app))

    assert deployment.status == Deployment.Status.FAILED
    assert "is not Greenlight's stable Service" in deployment.failure_reason
    assert stable("taken").spec.selector == {"app": "other"}
    k8s.core_v1().delete_namespaced_service("taken", "default")
