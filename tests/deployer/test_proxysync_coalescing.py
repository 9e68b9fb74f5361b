"""Bursts of changes coalesce into at most one HAProxy reload per interval per load balancer."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator

import pytest

from deployer.etcdstore import EtcdStore
from deployer.proxysync import ProxySync
from tests.deployer.lbkit import Pod, get, running, target
from tests.servers import Server


@pytest.fixture
def store(etcd: Server) -> Iterator[EtcdStore]:
    """An EtcdStore on a prefix of its own."""
    with EtcdStore(str(etcd.extra["endpoint"]), f"/burst-{uuid.uuid4().hex[:8]}") as store:
        yield store


def _reloads(store: EtcdStore) -> int:
    [balancer] = store.load_balancers()
    return int(balancer.record["reloads"])


def test_a_burst_of_new_backends_is_applied_in_few_reloads(
    store: EtcdStore, haproxy: Server
) -> None:
    pod = Pod("pod-0")
    try:
        with running(ProxySync(store, target(haproxy))):
            assert store.wait_applied(store.current_revision(), 20)
            before = _reloads(store)

            started = time.monotonic()
            revision = 0
            for number in range(40):
                revision = store.put_route(
                    f"app{number}.localhost",
                    f"default.app{number}-v1",
                    [pod.server_entry()],
                    backend_options={"app": f"app{number}", "version": 1},
                )
                time.sleep(0.0125)  # 40 writes over about half a second
            waited = store.wait_applied(revision, 30)
            elapsed = time.monotonic() - started

            assert waited, waited.problem
            reloads = _reloads(store) - before
            print(f"40 new backends in {elapsed:.3f}s: {reloads} reloads")  # noqa: T201
            assert 1 <= reloads <= math.ceil(elapsed / 0.1) + 1, (reloads, elapsed)
            assert reloads < 40
            # Everything arrived: every app answers through HAProxy.
            for number in range(40):
                assert get(haproxy.port, f"app{number}.localhost") == (200, "pod-0")
    finally:
        pod.stop()


def test_a_switch_is_a_runtime_update_even_right_after_a_reload(
    store: EtcdStore, haproxy: Server
) -> None:
    blue, green = Pod("blue"), Pod("green")
    try:
        with running(ProxySync(store, target(haproxy))):
            store.put_backend("default.hello-v2", {"servers": [green.server_entry()]})
            revision = store.put_route("hello.localhost", "default.hello-v1", [blue.server_entry()])
            assert store.wait_applied(revision, 20)
            before = _reloads(store)

            switched = store.point_frontend("hello.localhost", "default.hello-v2")
            waited = store.wait_applied(switched, 20)

            assert waited
            assert waited.seconds["lb-0"] < 0.1  # no wait for the reload interval
            assert _reloads(store) == before
            assert (store.get(store.applied_key_of("lb-0"))[0] or {})["reloaded"] is False
            assert get(haproxy.port, "hello.localhost") == (200, "green")
    finally:
        blue.stop()
        green.stop()
