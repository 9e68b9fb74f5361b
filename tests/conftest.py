"""Session fixtures: real redis, etcd, HAProxy and localcluster on free loopback ports, stopped after the run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.servers import Server, etcd_server, haproxy_server, localcluster_server, redis_server

# Property-based tests draw the same examples on every run of `make test`, so that CI
# never fails on a new random draw; GREENLIGHT_FUZZ_EXAMPLES=N asks for a longer hunt
# with fresh random examples (the fuzz tests read it for their example count).
settings.register_profile("fixed", derandomize=True)
settings.register_profile("hunt", derandomize=False)
settings.load_profile("hunt" if os.environ.get("GREENLIGHT_FUZZ_EXAMPLES") else "fixed")


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
