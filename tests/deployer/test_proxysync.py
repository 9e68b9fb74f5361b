"""proxysync against a real etcd and a real master-worker HAProxy."""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployer.etcdstore import EtcdStore
from deployer.proxysync import (
    HAProxyTarget,
    ProxySync,
    ReloadError,
    old_workers,
    served_revision,
)
from tests.servers import Server


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.dumps({"version": self.server.version, "healthy": True}).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def app_server() -> Iterator[ThreadingHTTPServer]:
    """A pod stand-in on 127.0.0.1 answering its version as JSON."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.version = "1"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def store(etcd: Server) -> Iterator[EtcdStore]:
    """An EtcdStore on a prefix of its own."""
    with EtcdStore(str(etcd.extra["endpoint"]), f"/test-{uuid.uuid4().hex[:8]}") as store:
        yield store


def _target(haproxy: Server) -> HAProxyTarget:
    return HAProxyTarget(
        config=haproxy.extra["config"],  # type: ignore[arg-type]
        master_socket=haproxy.extra["master_socket"],  # type: ignore[arg-type]
        lb_port=haproxy.port,
        stats_port=int(haproxy.extra["stats_port"]),  # type: ignore[arg-type]
    )


@pytest.fixture
def proxysync(store: EtcdStore, haproxy: Server) -> Iterator[ProxySync]:
    """proxysync running in a thread until the test ends."""
    sync = ProxySync(store, _target(haproxy))
    thread = threading.Thread(target=sync.run, daemon=True)
    thread.start()
    yield sync
    sync.stop()
    thread.join(10)
    assert not thread.is_alive()


def _get(port: int, host: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/health", headers={"Host": host})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _servers(server: ThreadingHTTPServer) -> list[dict[str, object]]:
    return [{"name": "pod-0", "address": "127.0.0.1", "port": server.server_address[1]}]


def test_it_routes_a_frontend_to_its_backend_after_the_applied_revision(
    store: EtcdStore, haproxy: Server, proxysync: ProxySync, app_server: ThreadingHTTPServer
) -> None:
    revision = store.put_route(
        "hello.localhost", "default.hello-v1", _servers(app_server), backend_options={"version": 1}
    )

    assert store.wait_applied(revision, 20)
    status, body = _get(haproxy.port, "hello.localhost")
    assert status == 200 and json.loads(body)["version"] == "1"
    assert _get(haproxy.port, "other.localhost")[0] == 503
    assert "use_backend default.hello-v1" in haproxy.extra["config"].read_text()  # type: ignore[union-attr]


def test_it_renders_the_current_state_when_it_starts(
    store: EtcdStore, haproxy: Server, app_server: ThreadingHTTPServer
) -> None:
    revision = store.put_route("early.localhost", "default.early-v1", _servers(app_server))

    sync = ProxySync(store, _target(haproxy))
    sync.apply(store.snapshot())

    assert store.applied_revision() >= revision
    assert _get(haproxy.port, "early.localhost")[0] == 200


def test_it_refuses_an_invalid_render_and_keeps_the_last_good_config(
    store: EtcdStore, haproxy: Server, proxysync: ProxySync, app_server: ThreadingHTTPServer
) -> None:
    good = store.put_route("hello.localhost", "default.hello-v1", _servers(app_server))
    assert store.wait_applied(good, 20)

    bad = store.put_route(
        "hello.localhost",
        "default.hello-v2",
        [{"name": "pod-0", "address": "127.0.0.1", "port": 99999}],
    )

    assert not store.wait_applied(bad, 20)
    applied = store.get(store.applied_key)[0] or {}
    assert applied["rejected"]["revision"] >= bad
    assert "haproxy -c refused" in applied["rejected"]["error"]
    assert _get(haproxy.port, "hello.localhost")[0] == 200
    served = served_revision("127.0.0.1", int(haproxy.extra["stats_port"]))  # type: ignore[arg-type]
    assert served is not None and good <= served < bad
    assert "default.hello-v2" not in haproxy.extra["config"].read_text()  # type: ignore[union-attr]


def test_it_removes_a_route_when_its_frontend_is_deleted(
    store: EtcdStore, haproxy: Server, proxysync: ProxySync, app_server: ThreadingHTTPServer
) -> None:
    assert store.wait_applied(
        store.put_route("hello.localhost", "default.hello-v1", _servers(app_server)), 20
    )

    assert store.wait_applied(store.delete_route("hello.localhost", ["default.hello-v1"]), 20)

    assert _get(haproxy.port, "hello.localhost")[0] == 503


def test_it_reports_drained_once_no_old_worker_is_left(
    store: EtcdStore, haproxy: Server, proxysync: ProxySync, app_server: ThreadingHTTPServer
) -> None:
    revision = store.put_route("hello.localhost", "default.hello-v1", _servers(app_server))

    assert store.wait_applied(revision, 20)
    assert store.wait_drained(revision, 20)
    assert old_workers(haproxy.extra["master_socket"]) == 0  # type: ignore[arg-type]


def test_it_does_not_acknowledge_a_revision_haproxy_did_not_load(
    store: EtcdStore, haproxy: Server, app_server: ThreadingHTTPServer, tmp_path: Path
) -> None:
    revision = store.put_route("hello.localhost", "default.hello-v1", _servers(app_server))
    target = _target(haproxy)
    gone = HAProxyTarget(
        config=target.config,
        master_socket=tmp_path / "no-such.sock",
        lb_port=target.lb_port,
        stats_port=target.stats_port,
    )

    with pytest.raises(ReloadError, match="master socket"):
        ProxySync(store, gone).apply(store.snapshot())

    assert store.applied_revision() < revision
