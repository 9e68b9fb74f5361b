"""What needs no reload is served, and acknowledged, before another record's reload."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from deployer.etcdstore import EtcdStore
from deployer.lbfleet import reaches
from deployer.proxysync import ProxySync
from tests.deployer.lbkit import Pod, get, running, target
from tests.servers import Server

HOST = "hello.localhost"
BLUE, GREEN = "default.hello-v1", "default.hello-v2"
OTHER = "default.other-v1"
# Long enough that the other app's reload is still waiting when the switch is checked.
INTERVAL = 6.0


@pytest.fixture
def store(etcd: Server) -> Iterator[EtcdStore]:
    """An EtcdStore on a prefix of its own."""
    with EtcdStore(str(etcd.extra["endpoint"]), f"/part-{uuid.uuid4().hex[:8]}") as store:
        yield store


def _reloads(store: EtcdStore) -> int:
    [balancer] = store.load_balancers()
    return int(balancer.record["reloads"])


def _applied(store: EtcdStore) -> dict[str, object]:
    return store.get(store.applied_key_of("lb-0"))[0] or {}


def test_it_reaches_a_revision_by_the_whole_configuration_or_by_the_records_waited_for() -> None:
    applied = {"revision": 10, "runtime": {"revision": 14, "pending": ["backends/new"]}}

    assert reaches(applied, 10)
    assert not reaches(applied, 12)
    assert reaches(applied, 12, ["frontends/hello.localhost", "backends/old"])
    assert not reaches(applied, 12, ["frontends/hello.localhost", "backends/new"])
    assert not reaches(applied, 15, ["frontends/hello.localhost"])
    assert not reaches(None, 1, ["frontends/hello.localhost"])


def test_servers_and_a_switch_do_not_wait_for_another_apps_reload(
    store: EtcdStore, haproxy: Server
) -> None:
    blue, green, green2, other = Pod("blue"), Pod("green"), Pod("green2"), Pod("other")
    try:
        sync = ProxySync(store, target(haproxy), min_reload_interval=INTERVAL)
        with running(sync):
            # The new version's backend, without servers, is in HAProxy before its pods run.
            store.put_backend(GREEN, {"servers": []})
            first = store.put_route(HOST, BLUE, [blue.server_entry()])
            assert store.wait_applied(first, 30)
            before = _reloads(store)

            # Another app's new backend needs a reload, which waits for the interval.
            other_written = store.put_backend(OTHER, {"servers": [other.server_entry()]})
            started = time.monotonic()
            servers = store.put_backend(
                GREEN, {"servers": [green.server_entry(), green2.server_entry()]}
            )
            with_servers = store.wait_applied(servers, 30, records=[f"backends/{GREEN}"])
            switched = store.point_frontend(HOST, GREEN)
            switch = store.wait_applied(
                switched, 30, records=[f"frontends/{HOST}", f"backends/{GREEN}"]
            )
            elapsed = time.monotonic() - started

            assert with_servers, with_servers.problem
            assert switch, switch.problem
            assert elapsed < INTERVAL / 2, elapsed
            assert _reloads(store) == before  # served through the runtime API alone
            answers = {get(haproxy.port, HOST) for _ in range(6)}
            assert answers == {(200, "green"), (200, "green2")}
            applied = _applied(store)
            assert int(applied["revision"]) < other_written  # type: ignore[call-overload]
            assert applied["runtime"]["revision"] >= switched  # type: ignore[index]
            assert f"backends/{OTHER}" in applied["runtime"]["pending"]  # type: ignore[index]

            # The reload comes with the interval and covers everything.
            everything = store.wait_applied(switched, 30)
            assert everything, everything.problem
            assert _reloads(store) == before + 1
            assert get(haproxy.port, HOST)[0] == 200
            assert "runtime" not in _applied(store)
    finally:
        for pod in (blue, green, green2, other):
            pod.stop()


def test_a_route_to_a_backend_waiting_for_its_reload_waits_for_that_reload(
    store: EtcdStore, haproxy: Server
) -> None:
    blue, other = Pod("blue"), Pod("other")
    try:
        sync = ProxySync(store, target(haproxy), min_reload_interval=INTERVAL)
        with running(sync):
            first = store.put_route(HOST, BLUE, [blue.server_entry()])
            assert store.wait_applied(first, 30)
            reloaded_at = sync._last_reload_started

            # The frontend points at a backend the running worker does not have yet.
            switched = store.put_route(HOST, OTHER, [other.server_entry()])
            early = store.wait_applied(
                switched, INTERVAL / 3, records=[f"frontends/{HOST}", f"backends/{OTHER}"]
            )
            if time.monotonic() < reloaded_at + INTERVAL:
                assert not early  # no request may reach a backend HAProxy does not have
                assert get(haproxy.port, HOST) == (200, "blue")
                pending = _applied(store).get("runtime", {}).get("pending", [])  # type: ignore[union-attr]
                assert f"frontends/{HOST}" in pending

            late = store.wait_applied(
                switched, 30, records=[f"frontends/{HOST}", f"backends/{OTHER}"]
            )
            assert late, late.problem
            assert time.monotonic() >= reloaded_at + INTERVAL
            assert get(haproxy.port, HOST) == (200, "other")
    finally:
        blue.stop()
        other.stop()
