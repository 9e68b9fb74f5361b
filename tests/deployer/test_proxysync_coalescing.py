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


def test_changes_within_the_reload_interval_wait_for_it_and_share_one_reload(
    store: EtcdStore, haproxy: Server
) -> None:
    pod = Pod("pod-0")
    try:
        sync = ProxySync(store, target(haproxy), min_reload_interval=3.0)
        with running(sync):
            assert store.wait_applied(store.current_revision(), 20)
            # A new backend reloads (after the interval since the start's reload).
            warm = store.put_backend("default.warm-v1", {"servers": [pod.server_entry()]})
            assert store.wait_applied(warm, 20)
            before = _reloads(store)
            reloaded_at = sync._last_reload_started

            revisions = []
            for number in range(5):
                revisions.append(
                    store.put_backend(f"default.app{number}-v1", {"servers": [pod.server_entry()]})
                )
                time.sleep(0.05)
            written = time.monotonic()
            first = store.wait_applied(revisions[0], 20)
            applied_at = time.monotonic()

            assert written < reloaded_at + 3.0, "the writes took longer than the interval"
            assert first
            # Not before the interval since the last reload had passed ...
            assert applied_at >= reloaded_at + 3.0
            # ... and then everything written meanwhile went in with it, in one reload.
            assert (
                int((store.get(store.applied_key_of("lb-0"))[0] or {})["revision"])
                >= (revisions[-1])
            )
            assert _reloads(store) == before + 1
    finally:
        pod.stop()
