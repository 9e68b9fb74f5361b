"""Session fixtures: real redis, etcd, HAProxy and localcluster on free loopback ports, stopped after the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import Server, etcd_server, haproxy_server, localcluster_server, redis_server


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
def localcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A localcluster with 3 nodes for the session; ``localcluster.extra['kubeconfig']``."""
    with localcluster_server(tmp_path_factory.mktemp("localcluster"), nodes=3) as server:
        yield server


@pytest.fixture(scope="session")
def kubeconfig(localcluster: Server) -> Path:
    """The kubeconfig file of the session's localcluster."""
    return Path(str(localcluster.extra["kubeconfig"]))
