"""Shared fixtures: real redis, etcd, HAProxy and localcluster on free loopback ports (stopped
after the run), and ``make_app``."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from hypothesis import settings

from deployer.models import App
from tests.dbplugin import end_other_sessions
from tests.servers import (
    LocalCluster,
    Server,
    etcd_server,
    haproxy_server,
    localcluster_server,
    redis_server,
)

# Property-based tests draw the same examples on every run of `make test`, so that CI
# never fails on a new random draw; GREENLIGHT_FUZZ_EXAMPLES=N asks for a longer hunt
# with fresh random examples (the fuzz tests read it for their example count).
settings.register_profile("fixed", derandomize=True)
settings.register_profile("hunt", derandomize=False)
settings.load_profile("hunt" if os.environ.get("GREENLIGHT_FUZZ_EXAMPLES") else "fixed")


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """pytest-django's test database; the sessions threads left on it end before it is dropped."""
    yield
    with django_db_blocker.unblock():
        connection.close()
        end_other_sessions()


@pytest.fixture(scope="session")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A throwaway redis-server; ``redis.extra['url']`` is its URL."""
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A throwaway etcd; ``etcd.extra['endpoint']`` is its host:port."""
    with etcd_server(tmp_path_factory.mktemp("etcd")) as server:
        yield server


@pytest.fixture
def haproxy(tmp_path: Path) -> Iterator[Server]:
    """A master-worker HAProxy for one test, with an empty route table."""
    with haproxy_server(tmp_path / "haproxy") as server:
        yield server


@pytest.fixture(scope="session")
def localcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A localcluster with 3 nodes for the session."""
    with localcluster_server(tmp_path_factory.mktemp("localcluster"), nodes=3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kubeconfig(localcluster: LocalCluster) -> Path:
    """The kubeconfig file of the session's localcluster."""
    return localcluster.kubeconfig


@pytest.fixture
def app_defaults() -> dict[str, Any]:
    """Fields every App from ``make_app`` starts from; a package's conftest may override this."""
    return {}


@pytest.fixture
def make_app(db: None, app_defaults: dict[str, Any]) -> Callable[..., App]:
    """Create an App: ``make_app(name, **fields)``, the fields overriding ``app_defaults``.

    Without a name (given or in ``app_defaults``) the apps are app1, app2, ...; unless a field
    says otherwise the image is demo/hello:1, the replicas 2, the frontend <name>.localhost
    and the guard's bake time 0 (no guard).
    """
    numbers = itertools.count(1)

    def make(name: str | None = None, **fields: Any) -> App:
        # No guard after the switch unless a test is about it: its bake would add to every
        # redeploy.
        values: dict[str, Any] = {
            "image": "demo/hello:1",
            "replicas": 2,
            "guard_bake_seconds": 0,
            **app_defaults,
            **fields,
        }
        values["name"] = name or values.get("name") or f"app{next(numbers)}"
        values.setdefault("frontend", f"{values['name']}.localhost")
        return App.objects.create(**values)

    return make


@pytest.fixture(autouse=True)
def _umask_restored() -> Iterator[None]:
    """Each test ends with the umask it started with: launcher.stack.prepare sets 077 for the
    process, which would leak into later tests' files and children."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.fixture
def role_user(django_user_model: Any) -> Callable[..., Any]:
    """Make a user holding a role: ``role_user("ann", "viewer")`` (on ``*``), or
    ``role_user("ann", "deployer", namespace="team-a")``; no role: a user who may do nothing."""
    from deployer.models import RoleBinding

    def make(username: str, role: str | None = None, namespace: str = "*") -> Any:
        user = django_user_model.objects.create_user(username=username, password="pw-" + username)
        if role is not None:
            RoleBinding.objects.create(role=role, user=user, namespace=namespace)
        return user

    return make


# Test files that start servers or a browser take most of the suite's time. They run
# first, the heaviest first, so that pytest-xdist (``make test`` spreads files over
# workers, one file per worker) does not end with one worker on a long file while the
# others are idle.
HEAVIEST = ("/rbac/", "/e2e/", "/install/", "test_api_schema_fuzz", "test_browser")
HEAVY_FIXTURES = frozenset(
    {
        "deploy_stack",
        "live",
        "stack",
        "web",
        "browser",
        "page",
        "faults",
        "enforcing",
        "cli_stack",
        "prometheus",
        "guarded",
        "registry",
        "provider",
        "node_cluster",
        "servers",
        "localcluster",
    }
)


def _weight(item: pytest.Item) -> int:
    path = str(item.path)
    if any(part in path for part in HEAVIEST):
        return 0
    if "_stack" in path or "_browser" in path or HEAVY_FIXTURES & set(item.fixturenames):
        return 1
    return 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Heavy test files first (see HEAVIEST); each file's tests stay in their order."""
    weights: dict[Path, int] = {}
    for item in items:
        weights[item.path] = min(weights.get(item.path, 2), _weight(item))
    items.sort(key=lambda item: weights[item.path])
