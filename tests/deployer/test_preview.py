"""Preview hostnames and routes, and proxysync applying them to a real HAProxy and etcd."""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from deployer.etcdstore import EtcdStore
from deployer.lbconfig import preview_backend, preview_routes
from deployer.models import Deployment
from deployer.preview import preview_hostname, preview_url
from deployer.proxysync import ProxySync
from tests.deployer.lbkit import master_state, target
from tests.servers import Server


@pytest.mark.parametrize(
    ("app", "frontend", "version", "expected"),
    [
        ("hello", "hello.localhost", 3, "hello--v3.localhost"),
        ("shop", "www.shop.example.com", 12, "shop--v12.shop.example.com"),
        ("hello", "localhost", 1, "hello--v1.localhost"),
        ("Hello", "Hello.Localhost.", 2, "hello--v2.localhost"),
        ("a" * 59, "x.example", 1, f"{'a' * 59}--v1.example"),  # a 63-character label
        ("a" * 60, "x.example", 1, None),  # a 64-character label
        ("hello", "x." + ".".join(["b" * 60] * 4), 1, f"hello--v1.{'.'.join(['b' * 60] * 4)}"),
        ("hello", "x." + ".".join(["b" * 61] * 4), 1, None),  # 257 characters
    ],
)
def test_it_names_the_preview_under_the_frontends_domain(
    app: str, frontend: str, version: int, expected: str | None
) -> None:
    assert preview_hostname(app, frontend, version) == expected


def test_it_routes_good_previews_and_names_each_bad_one() -> None:
    backends: dict[str, Any] = {"ns.a-v2": {}, "ns.b-v1": {}, "ns.c-v1": {}, "ns.d-v1": {}}
    good = {"hostname": "a--v2.localhost", "frontend": "a.localhost", "version": 2}
    previews: dict[str, Any] = {
        "ns.a-v2": good,
        "ns.b-v1": {**good, "hostname": "b--v1.localhost", "frontend": "a b"},
        "ns.c-v1": {**good, "hostname": "live.localhost"},
        "ns.d-v1": {**good, "hostname": "d--v1.localhost", "version": "1"},
        "ns.gone-v1": {**good, "hostname": "gone--v1.localhost"},
        "ns.e-v1": "not an object",
    }

    routes, skipped = preview_routes(previews, ["live.localhost"], backends)

    assert routes == {"a--v2.localhost": "ns.a-v2", "a.localhost@2": "ns.a-v2"}
    assert skipped == {
        "previews/ns.b-v1": "frontend 'a b' is not a DNS name",
        "previews/ns.c-v1": "hostname live.localhost is taken by another route",
        "previews/ns.d-v1": "version must be a positive number, not '1'",
        "previews/ns.gone-v1": "its backend record 'ns.gone-v1' is not rendered",
        "previews/ns.e-v1": "a preview must be an object, not str",
    }


def test_the_preview_url_has_the_load_balancers_port_in_both_traffic_modes(
    settings: Any,
) -> None:
    settings.LB_URL = "http://127.0.0.1:8080"
    descriptor = {"name": "hello", "frontend": "hello.localhost", "namespace": "default"}
    deploy = Deployment(kind=Deployment.Kind.DEPLOY, version=4, descriptor=descriptor)
    service = Deployment(
        kind=Deployment.Kind.DEPLOY, version=4, descriptor={**descriptor, "traffic": "service"}
    )

    assert preview_url(deploy) == "http://hello--v4.localhost:8080/"
    assert preview_url(deploy, port_suffix="") == "http://hello--v4.localhost/"
    assert preview_url(service) == "http://hello--v4.localhost:8080/"
    assert preview_url(Deployment(kind=Deployment.Kind.DEPLOY, descriptor=descriptor)) is None
    undeploy = Deployment(kind=Deployment.Kind.UNDEPLOY, version=4, descriptor=descriptor)
    assert preview_url(undeploy) is None


class _Version(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.dumps({"version": self.server.version}).encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def pods() -> Iterator[dict[str, ThreadingHTTPServer]]:
    """Two pod stand-ins answering versions 1 and 2."""
    servers = {}
    for version in ("1", "2"):
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Version)
        server.version = version  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers[version] = server
    yield servers
    for server in servers.values():
        server.shutdown()
        server.server_close()


def ask(haproxy: Server, host: str, version: str | None = None) -> str:
    """The version answering through HAProxy, or ``-<status>``."""
    headers = {"Host": host} if version is None else {"Host": host, "X-Greenlight-Version": version}
    connection = http.client.HTTPConnection("127.0.0.1", haproxy.port, timeout=5)
    try:
        connection.request("GET", "/", headers=headers)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    return json.loads(body)["version"] if response.status == 200 else f"-{response.status}"


def test_proxysync_applies_previews_without_a_reload_and_skips_bad_ones(
    etcd: Server, haproxy: Server, pods: dict[str, ThreadingHTTPServer]
) -> None:
    with EtcdStore(str(etcd.extra["endpoint"]), f"/test-{uuid.uuid4().hex[:8]}") as store:

        def server(version: str) -> list[dict[str, Any]]:
            port = pods[version].server_address[1]
            return [{"name": f"pod-{version}", "address": "127.0.0.1", "port": port}]

        store.put_route("app.localhost", "ns.app-v1", server("1"))
        store.put_backend("ns.app-v2", {"servers": server("2")})
        sync = ProxySync(store, target(haproxy))
        sync.apply(store.snapshot())
        reloads = master_state(haproxy)[0]
        good = {"hostname": "app--v2.localhost", "frontend": "app.localhost", "version": 2}
        store.put_preview("ns.app-v2", good)
        store.put_preview("ns.app-v1", {**good, "hostname": "x" * 64 + ".localhost"})
        store.put_preview("ns.app-v9", {**good, "hostname": "app--v9.localhost", "version": 9})
        store._client.put(store.preview_key("ns.junk"), b"{not json")

        assert sync.apply(store.snapshot())
        assert master_state(haproxy)[0] == reloads
        assert ask(haproxy, "app--v2.localhost") == "2"
        assert ask(haproxy, "app.localhost", "2") == "2"
        assert ask(haproxy, "app.localhost") == "1"
        assert ask(haproxy, "app.localhost", "9") == "1"  # no backend: the host's route
        assert ask(haproxy, "app.localhost", "2 3") == "1"
        applied = store.get(store.applied_key_of("lb-0"))[0] or {}
        assert set(applied["skipped"]) == {
            "previews/ns.app-v1",
            "previews/ns.app-v9",
            "previews/ns.junk",
        }
        sync.validate(sync.render(store.snapshot()).config)

        # A new backend waits for a reload; a preview of one HAProxy has does not.
        store.put_backend("ns.other-v1", {"servers": server("1")})
        store.put_preview("ns.app-v1", {**good, "hostname": "app--v1.localhost", "version": 1})
        assert sync.apply_runtime_part(store.snapshot())
        runtime = (store.get(store.applied_key_of("lb-0"))[0] or {})["runtime"]
        assert "previews/ns.app-v1" not in runtime["pending"]
        assert "backends/ns.other-v1" in runtime["pending"]
        assert ask(haproxy, "app.localhost", "1") == "1"
        assert ask(haproxy, "app--v1.localhost") == "1"
        assert master_state(haproxy)[0] == reloads

        # The preview goes with its backend record.
        store.delete_backend("ns.app-v2")
        assert store.get_preview("ns.app-v2") is None
        assert sync.apply(store.snapshot())
        assert ask(haproxy, "app--v2.localhost") == "-503"
        assert ask(haproxy, "app.localhost", "2") == "1"

        # Traffic mode service: a preview backend of its own, which goes with the version's.
        extra = preview_backend("ns.app-v3")
        assert extra == "ns.app-v3.preview"
        store.put_backend("ns.app-v3", {"servers": server("1"), "traffic": "service"})
        store.put_backend(extra, {"servers": server("2"), "traffic": "service"})
        store.put_preview(extra, {**good, "hostname": "app--v3.localhost", "version": 3})
        assert sync.apply(store.snapshot())
        assert ask(haproxy, "app--v3.localhost") == "2"
        assert ask(haproxy, "app.localhost", "3") == "2"
        store.delete_route("gone.localhost", ["ns.app-v3"])
        assert store.get_backend(extra) is None and store.get_preview(extra) is None
        assert store.get_backend("ns.app-v3") is None
        assert sync.apply(store.snapshot())
        assert ask(haproxy, "app--v3.localhost") == "-503"
        assert ask(haproxy, "app.localhost", "3") == "1"


def test_a_rollback_removes_the_preview_before_the_new_versions_pods_go(
    app: Any, run_workflow: Any, cluster: Any, lb: Any, sink: Any, monkeypatch: Any
) -> None:
    previews_at_delete: list[dict[str, Any]] = []
    delete_version = cluster.delete_version

    def recording(namespace: str, name: str, version: int) -> None:
        previews_at_delete.append(dict(lb.previews))
        delete_version(namespace, name, version)

    monkeypatch.setattr(cluster, "delete_version", recording)
    published: list[dict[str, Any]] = []
    put_preview = lb.put_preview

    def stop_applying(backend: str, record: dict[str, Any]) -> int:
        published.append(record)
        lb.applies = False  # the switch that follows is never applied: a rollback
        return put_preview(backend, record)

    monkeypatch.setattr(lb, "put_preview", stop_applying)

    deployment = run_workflow(app)

    assert deployment.status == Deployment.Status.FAILED
    assert published == [
        {
            "hostname": "app1--v1.localhost",
            "frontend": "app1.localhost",
            "version": 1,
            "app": "app1",
            "namespace": "default",
        }
    ]
    assert previews_at_delete == [{}]
    assert lb.previews == {}
    assert "Removed the preview of v1" in sink.text()
