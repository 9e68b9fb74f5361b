"""A load balancer of the fleet: its registration under ``<prefix>/lbs/<id>``, on an etcd lease.

Each proxysync+HAProxy pair is one load balancer. Its proxysync registers it once its
HAProxy serves an applied configuration::

    {"id", "address", "stats_address", "haproxy_version", "started_at", "last_reload_at",
     "reloads", "healthy", "error"}

(``stats_address``: where the worker reads its HAProxy's stats page, ``<stats_address>/stats;csv``,
for the guard after the switch, deployer.guard; null when unknown)

``applies`` (since proxysync started) times each apply, for the metrics endpoint
(dashboard.metrics.fleet): ``{"runtime" | "reload": {"count", "sum", "buckets": {"<le>": n}}}``,
the seconds from the apply's start until HAProxy served it, counted at most ``le``
seconds per bucket bound of ``APPLY_BUCKETS`` (cumulative, as a Prometheus histogram).

(times in ISO 8601 UTC; ``reloads`` counts since proxysync started; ``error`` is the last
refusal or failed reload, null once a configuration applied again). Its ``applied/<id>``
and ``drained/<id>`` records are attached to the same lease, so the three vanish
together. Every registration also writes ``<prefix>/members/<id>`` (``{"id", "address",
"registered_at"}``, no lease), which stays when the lease ends: a proxysync that dies or
hangs leaves a HAProxy that still serves its last routes, and the fleet's waits before
pods stop hold for such a member while its HAProxy accepts connections
(deployer.lbfleet). The membership is deleted only when proxysync stops cleanly
(SIGTERM, SIGINT, ``--once``), as its HAProxy stops with it. The lease is refreshed about every third of its TTL, and only while HAProxy's
master socket answers: when HAProxy is gone the lease is revoked and the load balancer
drops out of the fleet, so no switch waits for it; when HAProxy answers again,
proxysync applies the current configuration with a reload and registers again, on a
new lease. A lease that expired anyway (etcd unreachable for longer than the TTL) is
replaced the same way.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deployer.errors import StoreError
from deployer.etcdstore import EtcdStore, Lease
from deployer.haproxycli import master_command

logger = logging.getLogger(__name__)

# Bucket bounds of the apply timings in the registration (seconds): a runtime update takes
# milliseconds, a reload tens to hundreds of them.
APPLY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def haproxy_version(master_socket: Path) -> str | None:
    """The version the running HAProxy reports (``show info``), or None when it does not answer.

    An answer of any kind means the master socket answers; the version is "" when the
    worker did not say (between a reload's two workers).
    """
    try:
        answer = master_command(master_socket, "@1 show info", timeout=2.0, retry_for=1.0)
    except OSError:
        return None
    for line in answer.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "Version":
            return value.strip()
    return ""


@dataclass(frozen=True)
class Identity:
    """Who this load balancer is: its id, where users' traffic enters it, its lease's TTL.

    ``stats_address``: where its HAProxy's stats page is reached from the worker
    (``http://host:port``), "" when unknown.
    """

    id: str
    address: str
    lease_seconds: int = 5
    stats_address: str = ""


class Registration:
    """Keeps this load balancer registered while its HAProxy answers; writes its acknowledgements.

    ``reapply`` is called when the load balancer must register (again): proxysync then
    applies the current configuration with a reload, and its acknowledgement registers.
    """

    def __init__(
        self,
        store: EtcdStore,
        identity: Identity,
        master_socket: Path,
        reapply: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.identity = identity
        self.master_socket = master_socket
        self.reapply = reapply
        self._lock = threading.Lock()
        self._granting = threading.Lock()
        self._lease: Lease | None = None
        self._registered = False
        self._record: dict[str, Any] = {
            "id": identity.id,
            "address": identity.address,
            "stats_address": identity.stats_address or None,
            "haproxy_version": None,
            "started_at": _now(),
            "last_reload_at": None,
            "reloads": 0,
            "applies": {},
            "healthy": False,
            "error": None,
        }
        self._written: dict[str, Any] = {}

    @property
    def record(self) -> dict[str, Any]:
        """The registration record as it is now (a copy)."""
        with self._lock:
            return dict(self._record)

    @property
    def registered(self) -> bool:
        """Whether this load balancer is in the fleet now (as far as this process knows)."""
        with self._lock:
            return self._registered

    def note_reload(self) -> None:
        """Count a reload of HAProxy; the record says so with the next acknowledgement."""
        with self._lock:
            self._record["reloads"] += 1
            self._record["last_reload_at"] = _now()

    def note_apply(self, how: str, seconds: float) -> None:
        """Time an apply (``how``: "runtime" or "reload"); the record says so with the next acknowledgement."""
        with self._lock:
            # A new object, not an edit in place: the record last written shares the old one.
            applies = copy.deepcopy(self._record["applies"])
            figures = applies.setdefault(how, {"count": 0, "sum": 0.0, "buckets": {}})
            figures["count"] += 1
            figures["sum"] = round(figures["sum"] + seconds, 6)
            for bound in APPLY_BUCKETS:
                key = repr(bound)
                figures["buckets"][key] = figures["buckets"].get(key, 0) + (seconds <= bound)
            self._record["applies"] = applies

    def note_error(self, error: str | None) -> None:
        """Remember the last refusal or failed reload (None: the last apply succeeded)."""
        with self._lock:
            self._record["error"] = None if error is None else error[:2000]

    def _lease_for_write(self) -> Lease:
        # One grant at a time: two leases would leave records on one that nobody refreshes.
        with self._granting:
            with self._lock:
                lease = self._lease
            if lease is None:
                lease = self.store.grant_lease(self.identity.lease_seconds)
                with self._lock:
                    self._lease = lease
        return lease

    def acknowledge(self, revision: int, record: dict[str, Any]) -> None:
        """Write ``applied/<id>`` for ``revision`` (HAProxy serves it), and the registration.

        Both go in one transaction when the registration is new or changed (a reload
        counted, an error): a load balancer is never in the fleet without an applied
        record, and its figures are never behind its acknowledgement.
        """

        def write(lease: Lease) -> None:
            registration = self._registration_for(lease)
            self.store.put_applied(
                revision,
                lb_id=self.identity.id,
                lease=lease,
                registration=registration,
                at=_now(),
                **record,
            )
            if registration is not None:
                self._registered_with(lease, registration)

        self._write_under_lease(write)

    def drained(self, revision: int, record: dict[str, Any]) -> None:
        """Write ``drained/<id>`` for ``revision`` under the lease."""
        self._write_under_lease(
            lambda lease: self.store.put_drained(
                revision, lb_id=self.identity.id, lease=lease, **record
            )
        )

    def _write_under_lease(self, write: Callable[[Lease], None]) -> Lease:
        """Run ``write`` with the lease; once more with a new one if etcd no longer knows it.

        A lease ends without this process noticing when etcd was out of reach for longer
        than its TTL; the load balancer then registers again on a new one.
        """
        lease = self._lease_for_write()
        try:
            write(lease)
        except StoreError as exc:
            if "lease not found" not in str(exc):
                raise
            self._drop(f"lease {lease.id:x} ended", revoke=False)
            lease = self._lease_for_write()
            write(lease)
        return lease

    def _registration_for(self, lease: Lease) -> dict[str, Any] | None:
        """The registration to write with an acknowledgement: None when etcd has it already."""
        if not self.registered:
            version = haproxy_version(self.master_socket)
            with self._lock:
                self._record["haproxy_version"] = version or self._record["haproxy_version"]
        with self._lock:
            self._record["healthy"] = True
            record = dict(self._record)
            if self._registered and self._lease == lease and record == self._written:
                return None
            return record

    def _registered_with(self, lease: Lease, record: dict[str, Any]) -> None:
        with self._lock:
            first = not self._registered
            self._registered = self._lease == lease
            self._written = record
        if first:
            logger.info(
                "load balancer %s registered at %s (lease %x, %ss)",
                self.identity.id,
                self.identity.address,
                lease.id,
                lease.ttl,
            )

    def _register(self, lease: Lease) -> None:
        """Write the registration alone (its HAProxy version changed)."""
        record = self._registration_for(lease)
        if record is not None:
            self.store.register_lb(self.identity.id, record, lease)
            self._registered_with(lease, record)

    def _drop(self, why: str, *, revoke: bool, forget: bool = False) -> None:
        with self._lock:
            lease, self._lease, self._registered = self._lease, None, False
            self._record["healthy"] = False
        if forget:
            logger.info("load balancer %s leaves the fleet for good: %s", self.identity.id, why)
            try:
                self.store.leave_fleet(self.identity.id, lease)
            except StoreError:
                logger.warning(
                    "could not delete the membership of %s; `manage.py proxysync --forget %s` does",
                    self.identity.id,
                    self.identity.id,
                )
            return
        if lease is None:
            return
        logger.warning("load balancer %s leaves the fleet: %s", self.identity.id, why)
        if revoke:
            try:
                self.store.revoke_lease(lease)
            except StoreError:
                logger.warning("could not revoke lease %x; it expires in %ss", lease.id, lease.ttl)

    def leave(self, why: str) -> None:
        """Take this load balancer out of the fleet for good: its lease, records, membership.

        For a clean stop only: its HAProxy stops too, so nothing waits for it any more.
        """
        self._drop(why, revoke=True, forget=True)

    def check_once(self) -> None:
        """One round: refresh the lease while HAProxy answers, revoke it when it does not."""
        version = haproxy_version(self.master_socket)
        if version is None:
            self._drop(f"HAProxy's master socket {self.master_socket} does not answer", revoke=True)
            return
        with self._lock:
            lease, registered = self._lease, self._registered
            changed = bool(version) and version != self._record["haproxy_version"]
            if changed:
                self._record["haproxy_version"] = version
        if lease is not None and registered:
            if self.store.refresh_lease(lease):
                if changed:
                    self._register(lease)
                return
            self._drop(f"lease {lease.id:x} expired", revoke=False)
        # HAProxy answers and this load balancer is not in the fleet: apply, then register.
        self.reapply()

    def run(self, stop: threading.Event) -> None:
        """Check every third of the lease's TTL until ``stop`` is set; then revoke the lease."""
        interval = max(0.2, self.identity.lease_seconds / 3)
        while not stop.wait(interval):
            try:
                self.check_once()
            except StoreError as exc:
                logger.warning("load balancer %s: etcd unavailable (%s)", self.identity.id, exc)
        self.leave("proxysync stops")
