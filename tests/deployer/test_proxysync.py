"""proxysync against a real etcd and a real master-worker HAProxy."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployer import haproxycli
from deployer.etcdstore import EtcdStore
from deployer.haproxycli import (
    HAProxyTarget,
    backend_sessions,
    master_command,
    old_workers,
)
from deployer.lbrender import map_commands
from deployer.proxysync import ProxySync, ReloadError
from tests.deployer.lbkit import master_state, running, target
from tests.servers import Server, free_port


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
def second_server() -> Iterator[ThreadingHTTPServer]:
    """Another pod stand-in, answering version 2."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.version = "2"  # type: ignore[attr-defined]
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


@pytest.fixture
def proxysync(store: EtcdStore, haproxy: Server) -> Iterator[ProxySync]:
    """proxysync running in a thread until the test ends."""
    with running(ProxySync(store, target(haproxy))) as sync:
        yield sync


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
    config: Path = haproxy.extra["config"]  # type: ignore[assignment]
    assert "hello.localhost default.hello-v1" in (config.parent / "frontends.map").read_text()


def test_it_renders_the_current_state_when_it_starts(
    store: EtcdStore, haproxy: Server, app_server: ThreadingHTTPServer
) -> None:
    revision = store.put_route("early.localhost", "default.early-v1", _servers(app_server))

    sync = ProxySync(store, target(haproxy))
    sync.apply(store.snapshot())

    assert store.applied_revision("lb-0") >= revision
    assert _get(haproxy.port, "early.localhost")[0] == 200


def test_it_skips_a_record_of_the_wrong_shape_and_keeps_serving_the_last_good_backend(
    store: EtcdStore, haproxy: Server, proxysync: ProxySync, app_server: ThreadingHTTPServer
) -> None:
    good = store.put_route("hello.localhost", "default.hello-v1", _servers(app_server))
    assert store.wait_applied(good, 20)

    bad = store.put_route(
        "hello.localhost",
        "default.hello-v2",
        [{"name": "pod-0", "address": "127.0.0.1", "port": 99999}],
    )

    assert store.wait_applied(bad, 20)
    applied = store.get(store.applied_key_of("lb-0"))[0] or {}
    assert (
        "port must be a number from 1 to 65535" in applied["skipped"]["backends/default.hello-v2"]
    )
    status, body = _get(haproxy.port, "hello.localhost")
    assert status == 200 and json.loads(body)["version"] == "1"
    assert "default.hello-v2" not in haproxy.extra["config"].read_text()  # type: ignore[union-attr]


def test_a_record_that_is_not_even_an_object_never_stops_proxysync(
    store: EtcdStore, haproxy: Server, proxysync: ProxySync, app_server: ThreadingHTTPServer
) -> None:
    store._client.put(store.backend_key("default.junk-v1"), "not json")
    store._client.put(store.backend_key("default.list-v1"), json.dumps({"servers": "pod-0"}))
    store._client.put(store.frontend_key("junk.localhost"), json.dumps(["default.junk-v1"]))

    revision = store.put_route("hello.localhost", "default.hello-v1", _servers(app_server))

    assert store.wait_applied(revision, 20)
    assert _get(haproxy.port, "hello.localhost")[0] == 200
    skipped = (store.get(store.applied_key_of("lb-0"))[0] or {})["skipped"]
    assert skipped["backends/default.junk-v1"] == "the value is not JSON"
    assert skipped["backends/default.list-v1"] == "servers must be a list, not str"
    assert "must be an object" in skipped["frontends/junk.localhost"]


def test_it_leaves_out_only_the_backend_haproxy_refuses_and_shows_its_message(
    store: EtcdStore, haproxy: Server, proxysync: ProxySync, app_server: ThreadingHTTPServer
) -> None:
    good = store.put_route("hello.localhost", "default.hello-v1", _servers(app_server))
    assert store.wait_applied(good, 20)

    broken = store.put_route(
        "broken.localhost",
        "default.broken-v1",
        [{"name": "pod-0", "address": "no-such-host.invalid", "port": 8080}],
    )
    other = store.put_route("other.localhost", "default.other-v1", _servers(app_server))

    assert store.wait_applied(other, 20)
    skipped = (store.get(store.applied_key_of("lb-0"))[0] or {})["skipped"]
    assert "haproxy -c refused it" in skipped["backends/default.broken-v1"]
    assert "no-such-host.invalid" in skipped["backends/default.broken-v1"]
    assert broken < other
    assert _get(haproxy.port, "other.localhost")[0] == 200
    assert _get(haproxy.port, "hello.localhost")[0] == 200
    assert _get(haproxy.port, "broken.localhost")[0] == 503


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
    live = target(haproxy)
    gone = HAProxyTarget(
        config=live.config,
        master_socket=tmp_path / "no-such.sock",
        lb_port=live.lb_port,
        stats_port=live.stats_port,
    )

    with pytest.raises(ReloadError, match="master socket"):
        ProxySync(store, gone).apply(store.snapshot())

    assert store.applied_revision("lb-0") < revision


def _two_backends(
    store: EtcdStore, haproxy: Server, first: ThreadingHTTPServer, second: ThreadingHTTPServer
) -> None:
    """hello.localhost on v1, and v2's backend written but not routed to, both applied."""
    assert store.wait_applied(
        store.put_route("hello.localhost", "default.hello-v1", _servers(first)), 20
    )
    record = {"servers": _servers(second), "version": 2, "check_path": "/health"}
    assert store.wait_applied(store.put_backend("default.hello-v2", record), 20)
    assert json.loads(_get(haproxy.port, "hello.localhost")[1])["version"] == "1"


def test_it_switches_a_frontend_to_an_existing_backend_without_a_reload(
    store: EtcdStore,
    haproxy: Server,
    proxysync: ProxySync,
    app_server: ThreadingHTTPServer,
    second_server: ThreadingHTTPServer,
) -> None:
    _two_backends(store, haproxy, app_server, second_server)
    before = master_state(haproxy)

    revision = store.point_frontend("hello.localhost", "default.hello-v2")

    assert store.wait_applied(revision, 20)
    assert master_state(haproxy) == before  # same worker, no reload
    assert (store.get(store.applied_key_of("lb-0"))[0] or {})["reloaded"] is False
    status, body = _get(haproxy.port, "hello.localhost")
    assert status == 200 and json.loads(body)["version"] == "2"
    config: Path = haproxy.extra["config"]  # type: ignore[assignment]
    assert "hello.localhost default.hello-v2" in (config.parent / "frontends.map").read_text()
    # Drained means no request is left on the backend that lost its route.
    assert store.wait_drained(revision, 20)
    assert backend_sessions(config.parent / "master.sock", {"default.hello-v1"}) == 0

    # Removing the frontend is a map change too.
    assert store.wait_applied(store.delete_route("hello.localhost", []), 20)
    assert master_state(haproxy) == before
    assert _get(haproxy.port, "hello.localhost")[0] == 503


def test_it_reloads_when_the_runtime_api_refuses_the_map_change(
    store: EtcdStore,
    haproxy: Server,
    proxysync: ProxySync,
    app_server: ThreadingHTTPServer,
    second_server: ThreadingHTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _two_backends(store, haproxy, app_server, second_server)
    reloads, _ = master_state(haproxy)

    def refusing(socket_path: Path, command: str, timeout: float = 5.0, **kwargs: float) -> str:
        # Map changes only: the check of the new worker's map after the reload still runs.
        if any(f"{verb} map " in command for verb in ("add", "set", "del")):
            return "Unknown map identifier. Please use #<id> or <file>.\n\n"
        return master_command(socket_path, command, timeout, **kwargs)

    monkeypatch.setattr(haproxycli, "master_command", refusing)
    with caplog.at_level(logging.WARNING, logger="deployer.proxysync"):
        revision = store.point_frontend("hello.localhost", "default.hello-v2")
        assert store.wait_applied(revision, 20)

    assert master_state(haproxy)[0] == reloads + 1
    assert (store.get(store.applied_key_of("lb-0"))[0] or {})["reloaded"] is True
    assert json.loads(_get(haproxy.port, "hello.localhost")[1])["version"] == "2"
    assert "runtime update failed, reloading instead" in caplog.text
    assert "Unknown map identifier" in caplog.text


def test_it_marks_a_newly_routed_backend_up_before_mapping_to_it(tmp_path: Path) -> None:
    commands = map_commands(
        {"a.localhost": "one", "gone.localhost": "one"},
        {"a.localhost": "two", "b.localhost": "one"},
        {"one": ["one/pod-0"], "two": ["two/pod-0", "two/pod-1"]},
        tmp_path / "frontends.map",
    )

    assert commands == [
        "set server two/pod-0 health up",
        "set server two/pod-1 health up",
        f"set map {tmp_path}/frontends.map a.localhost two",
        f"add map {tmp_path}/frontends.map b.localhost one",
        f"del map {tmp_path}/frontends.map gone.localhost",
    ]


def _server_up(haproxy: Server, backend: str) -> bool:
    socket_path: Path = haproxy.extra["master_socket"]  # type: ignore[assignment]
    answer = master_command(socket_path, f"@1 show servers state {backend}", retry_for=2.0)
    rows = [line.split() for line in answer.splitlines()[2:] if line.strip()]
    return bool(rows) and all(row[5] == "2" for row in rows)  # srv_op_state 2: running


def test_it_routes_at_once_to_a_backend_haproxy_marked_down_while_its_pod_started(
    store: EtcdStore, haproxy: Server, proxysync: ProxySync, app_server: ThreadingHTTPServer
) -> None:
    assert store.wait_applied(
        store.put_route("hello.localhost", "default.hello-v1", _servers(app_server)), 20
    )
    port = free_port()
    record = {
        "servers": [{"name": "pod-0", "address": "127.0.0.1", "port": port}],
        "check_path": "/health",
    }
    assert store.wait_applied(store.put_backend("default.hello-v2", record), 20)
    deadline = time.monotonic() + 10
    while _server_up(haproxy, "default.hello-v2"):  # HAProxy offers nothing to watch
        assert time.monotonic() < deadline, "HAProxy never checked the closed port"
        time.sleep(0.05)
    late = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    late.version = "2"  # type: ignore[attr-defined]
    threading.Thread(target=late.serve_forever, daemon=True).start()
    try:
        # The pod answers now (the workflow checked it); HAProxy would notice in up to 1s.
        assert store.wait_applied(store.point_frontend("hello.localhost", "default.hello-v2"), 20)

        status, body = _get(haproxy.port, "hello.localhost")
        assert status == 200 and json.loads(body)["version"] == "2"
    finally:
        late.shutdown()
        late.server_close()
