"""Two load balancers registered in a real etcd, as their proxysyncs register them, for page and API tests."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from deployer.etcdstore import EtcdStore, Lease
from tests.servers import Server

STARTED = "2026-12-01T09:00:00.000Z"
RELOADED = "2026-12-01T09:30:00.000Z"
VERSION = "3.0.11-1"
REFUSAL = "[ALERT] config : parsing [haproxy.cfg:42] : unknown keyword 'bogus'"


def _unanswered_port() -> tuple[socket.socket, int]:
    """A loopback port held bound and never listened on: a connection to it is refused."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    return held, held.getsockname()[1]


# The registered load balancers' addresses: no HAProxy (nor anything else) answers there.
_HELD = [_unanswered_port(), _unanswered_port()]
LB0 = f"http://127.0.0.1:{_HELD[0][1]}"
LB1 = f"http://127.0.0.1:{_HELD[1][1]}"


@dataclass
class Fleet:
    """The store of a prefix of the test's own, and what was registered in it."""

    store: EtcdStore
    leases: dict[str, Lease]
    applied: dict[str, int]
    revision: int
    # The revision of the routing change lb-1 refused (it is one change behind).
    refused: int


@contextlib.contextmanager
def own_prefix(etcd: Server, settings: Any) -> Iterator[EtcdStore]:
    """The store of an etcd prefix of the test's own, configured for the dashboard."""
    settings.ETCD_ENDPOINT = str(etcd.extra["endpoint"])
    settings.ETCD_PREFIX = f"/fleet-{uuid.uuid4().hex[:8]}"
    with EtcdStore() as store:
        yield store


def register(store: EtcdStore, lb_id: str, address: str, **fields: Any) -> Lease:
    """Register ``lb_id`` under a lease of its own, as its proxysync does."""
    lease = store.grant_lease(30)
    record = {
        "id": lb_id,
        "address": address,
        "haproxy_version": VERSION,
        "started_at": STARTED,
        "last_reload_at": None,
        "reloads": 0,
        "healthy": True,
        "error": None,
        **fields,
    }
    store.register_lb(lb_id, record, lease)
    return lease


def register_fleet(store: EtcdStore) -> Fleet:
    """lb-0 current (it applied both routing changes) and lb-1 one change behind (it refused it).

    Both route hello.localhost; lb-0 left a broken record out. Each acknowledgement says
    how many routing changes it includes, as proxysync writes it, so the lags are exact:
    0 and 1.
    """
    store.put_route(
        "hello.localhost",
        "default.hello-v1",
        [{"name": "hello-v1-abc", "address": "127.1.0.5", "port": 8080}],
        backend_options={"version": 1},
    )
    leases = {
        "lb-0": register(store, "lb-0", LB0, reloads=3, last_reload_at=RELOADED),
        "lb-1": register(store, "lb-1", LB1, healthy=False, error=f"revision 9 refused: {REFUSAL}"),
    }
    behind = store.current_revision()
    store.put_applied(behind, lb_id="lb-1", lease=leases["lb-1"], at=STARTED, changes=1)
    refused = store.put_backend("default.junk-v1", {"servers": "x"})
    store.put_applied(
        behind,
        lb_id="lb-1",
        lease=leases["lb-1"],
        at=STARTED,
        changes=1,
        rejected={"revision": refused, "error": REFUSAL},
    )
    store.put_drained(behind, lb_id="lb-0", lease=leases["lb-0"], servers={})
    # The write of lb-0's acknowledgement is the last one: its revision is the current one.
    current = store.current_revision() + 1
    store.put_applied(
        current,
        lb_id="lb-0",
        lease=leases["lb-0"],
        at=RELOADED,
        reloaded=False,
        changes=2,
        runtime_seconds=0.002,
        skipped={"backends/default.junk-v1": "servers must be a list, not str"},
    )
    assert store.current_revision() == current
    return Fleet(store, leases, {"lb-0": current, "lb-1": behind}, current, refused)
