"""The load balancer fleet in etcd: registrations under leases, per-load-balancer records."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from deployer.errors import StoreError
from deployer.etcdstore import EtcdStore, LoadBalancer
from deployer.lbregistration import Identity, Registration
from deployer.rotation import ServingPod, StillRouted, take_out
from tests.servers import Server


def _store(etcd: Server) -> EtcdStore:
    return EtcdStore(str(etcd.extra["endpoint"]), f"/fleet-{uuid.uuid4().hex[:8]}")


def test_load_balancers_lists_the_registered_ones_with_their_records_sorted(
    etcd: Server,
) -> None:
    with _store(etcd) as store:
        assert store.load_balancers() == []
        first, second = store.grant_lease(5), store.grant_lease(5)
        store.register_lb("lb-1", {"id": "lb-1", "address": "http://127.0.0.1:2"}, second)
        store.register_lb("lb-0", {"id": "lb-0", "address": "http://127.0.0.1:1"}, first)
        revision = store.put_backend("default.a-v1", {"servers": []})
        store.put_applied(revision, lb_id="lb-0", lease=first, skipped={})
        store.put_drained(revision, lb_id="lb-0", lease=first)
        # A record of an id that is not registered is not a load balancer.
        store.put_applied(revision, lb_id="lb-9")

        assert store.load_balancers() == [
            LoadBalancer(
                "lb-0",
                {"id": "lb-0", "address": "http://127.0.0.1:1"},
                {"revision": revision, "skipped": {}},
                {"revision": revision},
            ),
            LoadBalancer("lb-1", {"id": "lb-1", "address": "http://127.0.0.1:2"}, None, None),
        ]
        assert store.current_revision() > revision


def test_a_load_balancer_whose_lease_ends_drops_out_with_its_records(etcd: Server) -> None:
    with _store(etcd) as store:
        kept, revoked, expiring = (store.grant_lease(ttl) for ttl in (5, 5, 1))
        for lb_id, lease in (("lb-0", kept), ("lb-1", revoked), ("lb-2", expiring)):
            store.register_lb(lb_id, {"id": lb_id}, lease)
            store.put_applied(1, lb_id=lb_id, lease=lease)
        assert [lb.id for lb in store.load_balancers()] == ["lb-0", "lb-1", "lb-2"]

        store.revoke_lease(revoked)
        assert [lb.id for lb in store.load_balancers()] == ["lb-0", "lb-2"]
        assert store.get(store.applied_key_of("lb-1")) == (None, 0)

        deadline = time.monotonic() + 10
        while len(store.load_balancers()) > 1 and time.monotonic() < deadline:
            assert store.refresh_lease(kept)
            time.sleep(0.2)
        assert [lb.id for lb in store.load_balancers()] == ["lb-0"]
        assert not store.refresh_lease(expiring)
        assert store.refresh_lease(kept)


def test_current_revision_is_the_revision_of_the_latest_write(etcd: Server) -> None:
    with _store(etcd) as store:
        revision = store.put_backend("default.a-v1", {"servers": []})
        assert store.current_revision() == revision
        assert store.current_revision() == revision
        assert store.point_frontend("a.localhost", "default.a-v1") == revision + 1
        assert store.current_revision() == revision + 1


def test_waiting_with_no_load_balancer_registered_fails_at_the_deadline_and_says_so(
    etcd: Server,
) -> None:
    with _store(etcd) as store:
        revision = store.put_backend("default.a-v1", {"servers": []})
        started = time.monotonic()

        waited = store.wait_applied(revision, 1.0)

        assert not waited
        assert time.monotonic() - started >= 1.0
        assert waited.problem == "no load balancer is registered"
        assert not store.wait_drained(revision, 0.2)


def test_the_wait_ends_when_every_live_load_balancer_applied_and_times_each(
    etcd: Server,
) -> None:
    with _store(etcd) as store:
        first, second = store.grant_lease(5), store.grant_lease(5)
        for lb_id, lease in (("lb-0", first), ("lb-1", second)):
            store.put_applied(0, lb_id=lb_id, lease=lease)
            store.register_lb(lb_id, {"id": lb_id}, lease)
        revision = store.put_backend("default.a-v1", {"servers": []})
        written = time.monotonic()

        def acknowledge() -> None:
            time.sleep(0.2)
            store.put_applied(revision, lb_id="lb-0", lease=first)
            time.sleep(0.3)
            store.put_applied(revision + 5, lb_id="lb-1", lease=second)

        thread = threading.Thread(target=acknowledge)
        thread.start()
        waited = store.wait_applied(revision, 10, since=written)
        thread.join()

        assert waited
        assert set(waited.seconds) == {"lb-0", "lb-1"}
        assert 0.2 <= waited.seconds["lb-0"] < waited.seconds["lb-1"] < 5
        assert waited.summary().startswith("lb-0 in ")
        assert [lb.id for lb in waited.balancers] == ["lb-0", "lb-1"]


def test_a_load_balancer_whose_lease_expires_during_the_wait_drops_out_of_it(
    etcd: Server,
) -> None:
    with _store(etcd) as store:
        kept, expiring = store.grant_lease(5), store.grant_lease(2)
        store.register_lb("lb-0", {"id": "lb-0"}, kept)
        store.register_lb("lb-1", {"id": "lb-1"}, expiring)
        revision = store.put_backend("default.a-v1", {"servers": []})
        store.put_applied(revision, lb_id="lb-0", lease=kept)
        store.put_drained(revision, lb_id="lb-0", lease=kept)

        started = time.monotonic()
        waited = store.wait_applied(revision, 10)

        assert waited
        assert list(waited.seconds) == ["lb-0"]
        assert time.monotonic() - started < 5  # the lease's end, not the deadline
        assert store.wait_drained(revision, 1)


def test_a_refusal_by_one_load_balancer_fails_the_wait_and_names_it(etcd: Server) -> None:
    with _store(etcd) as store:
        first, second = store.grant_lease(5), store.grant_lease(5)
        store.register_lb("lb-0", {"id": "lb-0"}, first)
        store.register_lb("lb-1", {"id": "lb-1"}, second)
        revision = store.put_backend("default.a-v1", {"servers": []})
        store.put_applied(revision, lb_id="lb-0", lease=first)
        store.put_applied(
            revision - 1,
            lb_id="lb-1",
            lease=second,
            rejected={"revision": revision, "error": "haproxy -c refused the configuration"},
        )

        waited = store.wait_applied(revision, 10)

        assert not waited
        assert waited.refused_by == "lb-1"
        assert "lb-1 refused" in waited.problem
        assert "haproxy -c refused the configuration" in waited.problem


def test_a_load_balancer_whose_lease_ended_unnoticed_registers_again_on_a_new_one(
    etcd: Server, tmp_path: Path
) -> None:
    with _store(etcd) as store:
        identity = Identity("lb-0", "http://127.0.0.1:18080", lease_seconds=5)
        registration = Registration(store, identity, tmp_path / "no-haproxy.sock")
        registration.acknowledge(1, {"reloaded": True})
        [first] = store.load_balancers()
        assert (first.id, first.applied["revision"]) == ("lb-0", 1)  # type: ignore[index]
        assert first.record["address"] == "http://127.0.0.1:18080"

        # etcd forgot the lease (it expired while etcd was out of reach, say).
        store.revoke_lease(registration._lease)  # type: ignore[arg-type]
        assert store.load_balancers() == []

        registration.acknowledge(2, {"reloaded": False})
        registration.drained(2, {"servers": {}})

        [again] = store.load_balancers()
        assert again.applied["revision"] == 2  # type: ignore[index]
        assert again.drained == {"revision": 2, "servers": {}}
        assert registration.registered


def test_a_member_outlives_its_lease_and_holds_the_drained_wait_while_its_haproxy_answers(
    etcd: Server,
) -> None:
    with _store(etcd) as store, socket.create_server(("127.0.0.1", 0)) as haproxy:
        live, hung = store.grant_lease(5), store.grant_lease(5)
        address = f"http://127.0.0.1:{haproxy.getsockname()[1]}"
        store.register_lb("lb-0", {"id": "lb-0", "address": "http://127.0.0.1:1"}, live)
        store.register_lb("lb-1", {"id": "lb-1", "address": address}, hung)
        revision = store.put_backend("default.a-v1", {"servers": []})
        for lb_id, lease in (("lb-0", live), ("lb-1", hung)):
            store.put_applied(revision, lb_id=lb_id, lease=lease)
        store.put_drained(revision, lb_id="lb-0", lease=live)
        store.revoke_lease(hung)  # its proxysync stopped refreshing it

        assert [(m.id, m.address, m.registered) for m in store.members()] == [
            ("lb-0", "http://127.0.0.1:1", True),
            ("lb-1", address, False),
        ]
        applied = store.wait_applied(revision, 5)
        assert applied and applied.absent == ("lb-1",)  # a switch goes on without it
        started = time.monotonic()
        drained = store.wait_drained(revision, 1.5)
        assert not drained and drained.held_by == ("lb-1",)
        assert time.monotonic() - started >= 1.4
        assert "lb-1 is not registered (its proxysync does not answer) but its HAProxy at " in (
            drained.problem
        )
    # Its HAProxy is gone: it drops out of the wait at once.
    started = time.monotonic()
    with EtcdStore(str(etcd.extra["endpoint"]), store.prefix) as again:
        assert again.wait_drained(revision, 5)
    assert time.monotonic() - started < 2


def test_only_a_clean_stop_or_forget_removes_a_member_and_forget_refuses_a_live_one(
    etcd: Server,
) -> None:
    with _store(etcd) as store:
        lease = store.grant_lease(5)
        store.register_lb("lb-0", {"id": "lb-0", "address": "http://127.0.0.1:1"}, lease)
        with pytest.raises(StoreError, match="lb-0 is registered"):
            store.forget_member("lb-0")
        store.revoke_lease(lease)
        assert [m.id for m in store.members()] == ["lb-0"]
        assert store.forget_member("lb-0") is True
        assert store.members() == [] and store.forget_member("lb-0") is False

        lease = store.grant_lease(5)
        store.register_lb("lb-1", {"id": "lb-1", "address": "http://127.0.0.1:2"}, lease)
        store.leave_fleet("lb-1", lease)
        assert store.members() == [] and store.load_balancers() == []


def test_every_routing_write_counts_as_a_change_and_nothing_else_does(etcd: Server) -> None:
    with _store(etcd) as store:
        assert store.changes() == (0, 0)
        store.put_route("a.localhost", "default.a-v1", [])
        store.put_backend("default.a-v2", {"servers": []})
        store.point_frontend("a.localhost", "default.a-v2")
        store.delete_backend("default.a-v1")
        last = store.delete_route("a.localhost", ["default.a-v2"])
        lease = store.grant_lease(5)
        store.register_lb("lb-0", {"id": "lb-0"}, lease)
        store.put_applied(last, lb_id="lb-0", lease=lease, changes=5)
        store.put_drained(last, lb_id="lb-0", lease=lease)

        assert store.changes() == (5, last)
        assert store.snapshot().changes == 5


def test_pods_a_member_with_proxysync_down_may_route_to_go_back_into_rotation(
    etcd: Server,
) -> None:
    with _store(etcd) as store, socket.create_server(("127.0.0.1", 0)) as haproxy:
        lease = store.grant_lease(5)
        address = f"http://127.0.0.1:{haproxy.getsockname()[1]}"
        store.register_lb("lb-1", {"id": "lb-1", "address": address}, lease)
        store.revoke_lease(lease)
        servers = [{"name": "a-v1-x", "address": "127.1.0.1", "port": 8080}]
        store.put_backend("default.a-v1", {"servers": servers, "port": 8080})
        lines: list[tuple[str, str]] = []

        with pytest.raises(StillRouted, match="lb-1 .* may still route to a-v1-x; they stay"):
            take_out(
                store,
                [ServingPod("default", "a-v1-x", "a", 1)],
                timeout=1.0,
                log=lambda level, message: lines.append((level, message)),
            )

        record = store.get_backend("default.a-v1")
        assert record is not None
        assert (record["servers"], record["leaving"]) == (servers, [])
        assert any("a-v1-x stay: lb-1 is not registered" in m for _, m in lines), lines
        assert ("info", "a-v1-x stayed; back in rotation of default.a-v1") in lines
