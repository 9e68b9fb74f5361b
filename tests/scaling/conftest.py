"""Factories and fakes for scaling tests."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import time
from typing import Any

import pytest

from deployer import k8s
from deployer.models import App
from deployer.pods import PodInfo
from scaling.kube import BudgetInfo, NodeInfo, PodEvent
from scaling.models import AppAction, NodeGroup, NodeGroupAction, Schedule
from scaling.runner import RunContext
from scaling.schedule import FrozenClock
from tests.scaling.kubehelp import Cluster
from tests.servers import LocalCluster, localcluster_server


@pytest.fixture
def app_defaults() -> dict[str, Any]:
    """A scaling app is ``hello`` with 4 replicas unless a test says otherwise."""
    return {"name": "hello", "replicas": 4}


@pytest.fixture
def make_schedule(db: None) -> Callable[..., Schedule]:
    """Create a Schedule with app actions ``apps={app: (mode, value[, floor])}``."""

    def make(
        name: str,
        *,
        cron: str = "",
        days: list[int] | None = None,
        at: time | None = None,
        until: time | None = None,
        zone: str = "UTC",
        apps: dict[App, tuple[Any, ...]] | None = None,
        groups: dict[NodeGroup, int] | None = None,
    ) -> Schedule:
        schedule = Schedule.objects.create(
            name=name,
            kind=Schedule.Kind.CRON if cron else Schedule.Kind.WEEKLY,
            cron=cron,
            days=days or [],
            at_time=at,
            until_time=until,
            timezone=zone,
        )
        for app, spec in (apps or {}).items():
            mode, value, *rest = spec
            AppAction.objects.create(
                schedule=schedule, app=app, mode=mode, value=value, floor=rest[0] if rest else 1
            )
        for group, desired in (groups or {}).items():
            NodeGroupAction.objects.create(schedule=schedule, node_group=group, desired=desired)
        return schedule

    return make


class FakeScaler:
    """Records scale_app calls and applies them to the row, as deployer.services does."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, app: App, replicas: int, log: object = None) -> None:
        self.calls.append((app.name, replicas))
        App.objects.filter(pk=app.pk).update(replicas=replicas)
        app.replicas = replicas


@pytest.fixture
def scaler() -> FakeScaler:
    """A scale_app that only touches the database."""
    return FakeScaler()


@pytest.fixture
def make_services(scaler: FakeScaler) -> Callable[[FrozenClock], RunContext]:
    """RunContext with a frozen clock and the fake scaler; no cluster, no deploys running."""

    def make(clock: FrozenClock, busy: Callable[[App], int | None] | None = None) -> RunContext:
        return RunContext(clock=clock, scale_app=scaler, busy_deploy=busy or (lambda app: None))

    return make


class FakeNodes:
    """An in-memory NodeOps: nodes and their (static) pods; records cordons and deletions."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self.pods: dict[str, list[PodInfo]] = {}
        self.calls: list[tuple[str, str]] = []
        self.budgets: list[BudgetInfo] = []

    def add(self, name: str, labels: dict[str, str], provider_id: str = "") -> None:
        self.nodes[name] = NodeInfo(
            name=name, labels=labels, unschedulable=False, ready=True, provider_id=provider_id
        )

    def list_nodes(self, selector: str | None = None) -> list[NodeInfo]:
        if selector is None:
            return list(self.nodes.values())
        key, value = selector.split("=", 1)
        return [n for n in self.nodes.values() if n.labels.get(key) == value]

    def get_node(self, name: str) -> NodeInfo:
        return self.nodes[name]

    def set_unschedulable(self, name: str, unschedulable: bool) -> None:
        self.calls.append(("cordon" if unschedulable else "uncordon", name))
        node = self.nodes[name]
        self.nodes[name] = NodeInfo(
            node.name, node.labels, unschedulable, node.ready, node.provider_id
        )

    def create_node(self, name: str, labels: dict[str, str]) -> None:
        self.calls.append(("create", name))
        self.add(name, labels)

    def delete_node(self, name: str) -> None:
        self.calls.append(("delete", name))
        self.nodes.pop(name, None)

    def pods_on_node(self, name: str) -> tuple[list[PodInfo], str]:
        return list(self.pods.get(name, [])), "1"

    def pods_by_node(self) -> dict[str, list[PodInfo]]:
        return {name: list(pods) for name, pods in self.pods.items()}

    def evict(self, pod: PodInfo, grace_seconds: int | None) -> None:
        self.calls.append(("evict", pod.key))
        self.pods[pod.node] = [p for p in self.pods.get(pod.node, []) if p.uid != pod.uid]

    def list_budgets(self) -> list[BudgetInfo]:
        return list(self.budgets)

    def watch_pods_on_node(
        self, name: str, resource_version: str, timeout_seconds: int
    ) -> Iterator[PodEvent]:
        return iter(())


@pytest.fixture
def fake_nodes() -> FakeNodes:
    """An empty in-memory cluster."""
    return FakeNodes()


# Images for drain tests: "test/stubborn" ignores SIGTERM, so only its grace period ends it.
CATALOG = {"test/stubborn:*": {"command": ["/bin/sh", "-c", 'trap "" TERM; sleep 3600']}}


@pytest.fixture(scope="session")
def localcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A localcluster with 3 nodes that also knows the CATALOG images, for the session."""
    workdir = tmp_path_factory.mktemp("localcluster")
    catalog = workdir / "images.json"
    catalog.write_text(json.dumps(CATALOG))
    with localcluster_server(workdir, nodes=3, images=catalog) as cluster:
        yield cluster


@pytest.fixture
def cluster(localcluster: LocalCluster, settings: Any) -> Iterator[Cluster]:
    """The session's localcluster as the configured cluster; a test's objects are removed after it."""
    settings.KUBECONFIG = localcluster.kubeconfig
    settings.KUBE_IN_CLUSTER = False
    settings.KUBE_CONTEXT = None
    k8s.reset()
    helper = Cluster()
    try:
        yield helper
    finally:
        helper.cleanup()
        k8s.reset()
