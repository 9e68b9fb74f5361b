"""The one module that talks to etcd: frontend and backend records, the load balancer fleet."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Unpack

# etcd3 0.12 ships protobuf code generated for protoc < 3.19; the C++ protobuf runtime
# refuses it, the pure-Python one accepts it. This must happen before protobuf is first
# imported anywhere, which is why it lives here, at import of the etcd seam.
os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
if "google.protobuf" in sys.modules:
    from google.protobuf.internal import api_implementation

    if api_implementation.Type() != "python":
        raise ImportError(
            "protobuf was imported before deployer.etcdstore with its C implementation; "
            "set PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python in the environment"
        )

import etcd3  # noqa: E402
import etcd3.events  # noqa: E402
import etcd3.exceptions  # noqa: E402
import grpc  # noqa: E402
from django.conf import settings  # noqa: E402

from deployer.errors import StoreError  # noqa: E402
from deployer.lbconfig import preview_backend  # noqa: E402
from deployer.lbfleet import (  # noqa: E402
    FleetWait,
    Lease,
    LoadBalancer,
    Member,
    RouteOptions,
    ServerEntry,
    WaitOptions,
    haproxy_accepts,
    reaches,
    refuse_unknown,
)

__all__ = [
    "EtcdStore",
    "FleetWait",
    "Lease",
    "LoadBalancer",
    "Member",
    "Snapshot",
    "event_key",
]

logger = logging.getLogger(__name__)

# The fleet's records, a key per load balancer in each folder: ``lbs`` its registration
# (under its proxysync's lease), ``applied`` and ``drained`` the revisions it reached,
# ``members`` its membership (no lease: it outlives a proxysync that died).
FLEET_FOLDERS = ("lbs", "applied", "drained", "members")


@dataclass(frozen=True)
class Snapshot:
    """Every frontend and backend record under the prefix at one etcd revision."""

    revision: int
    frontends: dict[str, dict[str, Any]] = field(default_factory=dict)
    backends: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Backend name -> mod revision, for compare-and-swap writes (see put_backend_if_unchanged).
    backend_revisions: dict[str, int] = field(default_factory=dict)
    # Records that are not JSON: key relative to the prefix -> why they were left out.
    unreadable: dict[str, str] = field(default_factory=dict)
    # How many writes changed a frontend or backend record so far (the ``changed`` key's
    # version): a load balancer that applied this snapshot is that many changes along.
    changes: int = 0
    # Backend record name -> its preview (deployer.preview): extra routes to that backend.
    previews: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Changes:
    """Watches of key prefixes from a revision on; :meth:`wait` returns at the first change.

    The watches start at the first wait and carry on between waits, so nothing written
    after the revision given then is missed; a failed watch is started again from the
    revision the next wait gives.
    """

    def __init__(self, client: Any, prefixes: list[str]) -> None:
        self._client = client
        self._prefixes = prefixes
        self._ids: list[Any] = []
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def wait(self, start_revision: int, timeout: float) -> None:
        """Block until something changed under a prefix, or ``timeout`` seconds."""
        if not self._ids:
            try:
                for prefix in self._prefixes:
                    self._ids.append(
                        self._client.add_watch_prefix_callback(
                            prefix, self._events.put, start_revision=start_revision
                        )
                    )
            except (etcd3.exceptions.Etcd3Exception, grpc.RpcError, ValueError):
                logger.warning("watching %s failed; reading again", self._prefixes, exc_info=True)
                self.close()
                time.sleep(min(0.05, timeout))
                return
        try:
            first = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        arrived = [first]
        while True:
            try:
                arrived.append(self._events.get_nowait())
            except queue.Empty:
                break
        if any(isinstance(item, Exception) for item in arrived):
            logger.warning("a watch of %s ended; reading again", self._prefixes)
            self.close()

    def close(self) -> None:
        """Cancel the watches."""
        ids, self._ids = self._ids, []
        for watch_id in ids:
            with contextlib.suppress(Exception):
                self._client.cancel_watch(watch_id)


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except StoreError:
        raise
    except (etcd3.exceptions.Etcd3Exception, grpc.RpcError, ValueError) as exc:
        raise StoreError(f"etcd {what} failed: {exc}") from exc


def _parse_endpoint(endpoint: str) -> tuple[str, int]:
    endpoint = endpoint.removeprefix("http://")
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise StoreError(f"etcd endpoint must be host:port, got {endpoint!r}")
    return host, int(port)


class EtcdStore:
    """Frontend and backend records under ``prefix`` (default settings.ETCD_PREFIX)."""

    def __init__(self, endpoint: str | None = None, prefix: str | None = None) -> None:
        host, port = _parse_endpoint(endpoint or settings.ETCD_ENDPOINT)
        self.prefix = (prefix or settings.ETCD_PREFIX).rstrip("/")
        self._closed = False
        with _translated("connect"):
            self._client = etcd3.client(host=host, port=port, timeout=10)
        self._contain_watch_thread()

    def _contain_watch_thread(self) -> None:
        """Let etcd3's watch thread end quietly when this store closes its channel.

        The thread loops forever re-opening its stream; once the channel is closed it
        dies with "Cannot invoke RPC: Channel closed!" (or a CANCELLED RpcError). That
        is the normal end of a watch here, so it is swallowed after close().
        """
        watcher = self._client.watcher
        run = watcher._run

        def run_until_closed() -> None:
            try:
                run()
            except (ValueError, grpc.RpcError) as exc:
                if not self._closed:
                    logger.error("etcd watch thread failed: %s", exc)
                    raise
                logger.debug("etcd watch thread ended after close: %s", exc)

        watcher._run = run_until_closed

    # keys
    def frontend_key(self, hostname: str) -> str:
        """The key of the frontend record for ``hostname``."""
        return f"{self.prefix}/frontends/{hostname}"

    def backend_key(self, backend: str) -> str:
        """The key of the backend record ``backend``."""
        return f"{self.prefix}/backends/{backend}"

    def preview_key(self, backend: str) -> str:
        """The key of the preview of backend record ``backend`` (deployer.preview)."""
        return f"{self.prefix}/previews/{backend}"

    def fleet_prefix(self, folder: str) -> str:
        """The prefix of one folder of the fleet's records (one of ``FLEET_FOLDERS``)."""
        if folder not in FLEET_FOLDERS:
            raise ValueError(f"no fleet folder {folder!r}; one of {', '.join(FLEET_FOLDERS)}")
        return f"{self.prefix}/{folder}/"

    def fleet_key(self, folder: str, lb_id: str) -> str:
        """Load balancer ``lb_id``'s record in the fleet folder ``folder``."""
        return f"{self.fleet_prefix(folder)}{lb_id}"

    def applied_key_of(self, lb_id: str) -> str:
        """The key load balancer ``lb_id``'s proxysync writes after applying a revision."""
        return self.fleet_key("applied", lb_id)

    def drained_key_of(self, lb_id: str) -> str:
        """The key load balancer ``lb_id``'s proxysync writes once no older worker runs."""
        return self.fleet_key("drained", lb_id)

    @property
    def changed_key(self) -> str:
        """Written with every change of a frontend or backend record, in the same transaction.

        Its mod revision is the last routing change; its version counts the changes, so
        that a load balancer's lag is the number of changes it has not applied yet.
        """
        return f"{self.prefix}/changed"

    def close(self) -> None:
        """Close the gRPC channel (watch threads end quietly)."""
        self._closed = True
        with contextlib.suppress(Exception):
            self._client.close()

    def __enter__(self) -> EtcdStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # reads
    def snapshot(self) -> Snapshot:
        """Every frontend, backend and preview record and the revision they were read at, atomically."""
        prefix = f"{self.prefix}/"
        ops = self._client.transactions
        ranges = [f"{prefix}frontends/", f"{prefix}backends/"]
        previews_range = f"{prefix}previews/"
        # One transaction: the ranges and the change count at one revision, without the
        # fleet's own records.
        response = self._txn_response(
            [ops.get(r, etcd3.utils.increment_last_byte(r.encode())) for r in ranges]
            + [ops.get(self.changed_key)]
            + [ops.get(previews_range, etcd3.utils.increment_last_byte(previews_range.encode()))]
        )
        changed_reply = response.responses[2].response_range.kvs
        changes = int(changed_reply[0].version) if changed_reply else 0
        frontends: dict[str, dict[str, Any]] = {}
        backends: dict[str, dict[str, Any]] = {}
        revisions: dict[str, int] = {}
        unreadable: dict[str, str] = {}
        previews: dict[str, dict[str, Any]] = {}
        for kv in response.responses[3].response_range.kvs:
            name = kv.key.decode(errors="replace")[len(previews_range) :]
            try:
                previews[name] = json.loads(kv.value)
            except (ValueError, RecursionError):
                unreadable[f"previews/{name}"] = "the value is not JSON"
        for kv in (kv for reply in response.responses[:2] for kv in reply.response_range.kvs):
            key = kv.key.decode(errors="replace")
            rest = key[len(prefix) :]
            try:
                value = json.loads(kv.value)
            except (ValueError, RecursionError):
                logger.warning("ignoring %s: not JSON", key)
                unreadable[rest] = "the value is not JSON"
                continue
            if rest.startswith("frontends/"):
                frontends[rest.removeprefix("frontends/")] = value
            else:
                backends[rest.removeprefix("backends/")] = value
                revisions[rest.removeprefix("backends/")] = int(kv.mod_revision)
        return Snapshot(
            int(response.header.revision),
            frontends,
            backends,
            revisions,
            unreadable,
            changes,
            previews,
        )

    def get(self, key: str) -> tuple[dict[str, Any] | None, int]:
        """The JSON value at ``key`` (None when absent) and its mod revision (0 when absent)."""
        with _translated("get"):
            value, meta = self._client.get(key)
        if value is None:
            return None, 0
        return json.loads(value), int(meta.mod_revision)

    def get_frontend(self, hostname: str) -> dict[str, Any] | None:
        """The frontend record for ``hostname``, or None."""
        return self.get(self.frontend_key(hostname))[0]

    def get_backend(self, backend: str) -> dict[str, Any] | None:
        """The backend record ``backend``, or None."""
        return self.get(self.backend_key(backend))[0]

    def load_balancers(self) -> list[LoadBalancer]:
        """Every live load balancer (registered under ``lbs/``), sorted by id, read atomically.

        Applied and drained records of an id that is not registered are left out: they
        belong to a load balancer whose lease is being revoked.
        """
        return self._load_balancers_at()[0]

    def fleet(self) -> tuple[list[LoadBalancer], list[Member], int]:
        """The live load balancers, every member, and the revision they were read at (atomically)."""
        return self._fleet_at()

    def members(self) -> list[Member]:
        """Every member of the fleet, sorted by id, and whether it has a live lease now."""
        return self._fleet_at()[1]

    def changes(self) -> tuple[int, int]:
        """How many routing changes were written so far, and the revision of the last one."""
        with _translated("get"):
            value, meta = self._client.get(self.changed_key)
        if value is None:
            return 0, 0
        return int(meta.version), int(meta.mod_revision)

    def _load_balancers_at(self) -> tuple[list[LoadBalancer], int]:
        """The live load balancers and the etcd revision they were read at."""
        balancers, _, revision = self._fleet_at()
        return balancers, revision

    def _fleet_at(self) -> tuple[list[LoadBalancer], list[Member], int]:
        """The live load balancers, every member, and the etcd revision they were read at."""
        ops = self._client.transactions
        prefixes = [self.fleet_prefix(folder) for folder in FLEET_FOLDERS]
        # One transaction: the four folders are read at the same revision.
        response = self._txn_response(
            [ops.get(p, etcd3.utils.increment_last_byte(p.encode())) for p in prefixes]
        )
        revision = int(response.header.revision)
        parts: list[dict[str, dict[str, Any]]] = []
        for reply in response.responses:
            records: dict[str, dict[str, Any]] = {}
            for kv in reply.response_range.kvs:
                key = kv.key.decode(errors="replace")
                try:
                    value = json.loads(kv.value)
                except (ValueError, RecursionError):
                    logger.warning("ignoring %s: not JSON", key)
                    continue
                if isinstance(value, dict):
                    records[key.rpartition("/")[2]] = value
            parts.append(records)
        registered, applied, drained, members = parts
        balancers = [
            LoadBalancer(lb_id, registered[lb_id], applied.get(lb_id), drained.get(lb_id))
            for lb_id in sorted(registered)
        ]
        # A live load balancer registered before membership records existed is one too.
        known = {**registered, **members}
        fleet = [
            Member(
                lb_id,
                str(known[lb_id].get("address", "")),
                known[lb_id].get("registered_at"),
                lb_id in registered,
            )
            for lb_id in sorted(known)
        ]
        return balancers, fleet, revision

    def current_revision(self) -> int:
        """etcd's current revision (the header revision of a read)."""
        with _translated("get"):
            response = self._client.get_response(self.fleet_prefix("lbs"))
        return int(response.header.revision)

    def applied_revision(self, lb_id: str) -> int:
        """The etcd revision load balancer ``lb_id`` last applied to HAProxy (0 when never)."""
        value, _ = self.get(self.applied_key_of(lb_id))
        return int(value.get("revision", 0)) if value else 0

    # writes
    def _txn(self, success: list[Any], compare: list[Any] | None = None) -> int:
        """Run a transaction; its revision, or 0 when ``compare`` failed and nothing was written."""
        response = self._txn_response(success, compare)
        return int(response.header.revision) if response.succeeded else 0

    def _txn_response(self, success: list[Any], compare: list[Any] | None = None) -> Any:
        """Run a transaction and return etcd's whole response."""
        # etcd3's transaction() drops the response header; the revision is what the
        # workflow waits for proxysync to apply, so the request is sent here directly.
        with _translated("transaction"):
            request = etcd3.etcdrpc.TxnRequest(
                compare=[c.build_message() for c in compare or []],
                success=self._client._ops_to_requests(success),
                failure=[],
            )
            response = self._client.kvstub.Txn(
                request,
                self._client.timeout,
                credentials=self._client.call_credentials,
                metadata=self._client.metadata,
            )
        return response

    def put_route(
        self, hostname: str, backend: str, servers: list[ServerEntry], **route: Unpack[RouteOptions]
    ) -> int:
        """Write the backend and point the frontend at it in one transaction; return the revision."""
        refuse_unknown(route, RouteOptions)
        ops = self._client.transactions
        backend_record = {"servers": servers, **(route.get("backend_options") or {})}
        frontend_record = {
            "hostname": hostname,
            "backend": backend,
            "options": route.get("frontend_options") or {},
        }
        return self._txn(
            [
                ops.put(self.backend_key(backend), json.dumps(backend_record)),
                ops.put(self.frontend_key(hostname), json.dumps(frontend_record)),
                self._changed(),
            ]
        )

    def put_backend(self, backend: str, record: dict[str, Any]) -> int:
        """Replace one backend record; return the revision."""
        ops = self._client.transactions
        return self._txn([ops.put(self.backend_key(backend), json.dumps(record)), self._changed()])

    def _changed(self) -> Any:
        """The put of the ``changed`` key that goes with every routing write."""
        return self._client.transactions.put(self.changed_key, "{}")

    def put_backend_if_unchanged(
        self,
        backend: str,
        record: dict[str, Any],
        mod_revision: int,
        *,
        holding: tuple[str, str] | None = None,
    ) -> int:
        """Replace a backend record only if nobody wrote it since ``mod_revision``.

        With ``holding`` (key, holder), also only while ``holder`` holds that leader key
        (see :meth:`claim_leader`). Returns the revision of the write, or 0 when someone
        else wrote first (or the leadership is gone).
        """
        key = self.backend_key(backend)
        ops = self._client.transactions
        compare = [ops.mod(key) == mod_revision]
        if holding is not None:
            compare.append(ops.value(holding[0]) == holding[1])
        return self._txn([ops.put(key, json.dumps(record)), self._changed()], compare)

    def claim_leader(self, key: str, holder: str, lease: Lease) -> bool:
        """Hold ``key`` as ``holder`` under ``lease`` if nobody holds it; whether ``holder`` does.

        The key vanishes with the lease, so a leader that stops refreshing it makes room
        for another within the lease's TTL.
        """
        ops = self._client.transactions
        if self._txn([ops.put(key, holder, lease=lease.id)], [ops.create(key) == 0]):
            return True
        with _translated("get"):
            value, _ = self._client.get(key)
        return value is not None and value.decode(errors="replace") == holder

    def leader_key(self, name: str) -> str:
        """The key of the leader of the task ``name`` (e.g. ``endpointsync-leader``)."""
        return f"{self.prefix}/{name}"

    def point_frontend(
        self, hostname: str, backend: str, options: dict[str, Any] | None = None
    ) -> int:
        """Point ``hostname`` at an existing backend record; return the revision."""
        ops = self._client.transactions
        record = {"hostname": hostname, "backend": backend, "options": options or {}}
        return self._txn(
            [ops.put(self.frontend_key(hostname), json.dumps(record)), self._changed()]
        )

    def _deletes_of(self, backend: str) -> list[Any]:
        """The deletes of a backend record, its preview, and its preview backend's two records."""
        ops = self._client.transactions
        extra = preview_backend(backend)
        return [
            ops.delete(self.backend_key(backend)),
            ops.delete(self.preview_key(backend)),
            ops.delete(self.backend_key(extra)),
            ops.delete(self.preview_key(extra)),
        ]

    def delete_backend(self, backend: str) -> int:
        """Delete one backend record and its preview (both kinds, see preview_backend).

        Returns the revision.
        """
        return self._txn([*self._deletes_of(backend), self._changed()])

    def delete_route(self, hostname: str, backends: list[str]) -> int:
        """Delete the frontend and the given backends (and their previews) in one transaction.

        Returns the revision.
        """
        ops = self._client.transactions
        deletes = [ops.delete(self.frontend_key(hostname))]
        for name in backends:
            deletes += self._deletes_of(name)
        return self._txn([*deletes, self._changed()])

    def put_preview(self, backend: str, record: dict[str, Any]) -> int:
        """Write the preview of backend record ``backend`` (deployer.preview); return the revision.

        It goes when the backend record does (delete_backend, delete_route).
        """
        ops = self._client.transactions
        return self._txn([ops.put(self.preview_key(backend), json.dumps(record)), self._changed()])

    def get_preview(self, backend: str) -> dict[str, Any] | None:
        """The preview of backend record ``backend``, or None."""
        return self.get(self.preview_key(backend))[0]

    def delete_preview(self, backend: str) -> int:
        """Delete the preview of backend record ``backend``; return the revision."""
        ops = self._client.transactions
        return self._txn([ops.delete(self.preview_key(backend)), self._changed()])

    def put_applied(
        self,
        revision: int,
        *,
        lb_id: str,
        lease: Lease | None = None,
        registration: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        """Record that load balancer ``lb_id``'s HAProxy runs the configuration of ``revision``.

        The record is attached to ``lease`` (the load balancer's registration), so it
        vanishes with the load balancer. ``registration``, when given, is written to
        ``lbs/<id>`` in the same transaction: nobody sees one without the other.
        """
        ops = self._client.transactions
        lease_id = None if lease is None else lease.id
        record = json.dumps({"revision": revision, **extra})
        puts = [ops.put(self.applied_key_of(lb_id), record, lease=lease_id)]
        if registration is not None:
            puts.append(
                ops.put(self.fleet_key("lbs", lb_id), json.dumps(registration), lease=lease_id)
            )
            puts.append(self._member_put(lb_id, registration))
        self._txn(puts)

    def _member_put(self, lb_id: str, registration: dict[str, Any]) -> Any:
        """The put of ``members/<id>`` (no lease) that goes with every registration."""
        member = {
            "id": lb_id,
            "address": registration.get("address", ""),
            "registered_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        return self._client.transactions.put(self.fleet_key("members", lb_id), json.dumps(member))

    # leases: a load balancer's registration lives as long as its proxysync refreshes it
    def grant_lease(self, ttl: int) -> Lease:
        """A new etcd lease of ``ttl`` seconds."""
        with _translated("lease grant"):
            granted = self._client.lease(ttl)
        return Lease(int(granted.id), int(granted.ttl))

    def refresh_lease(self, lease: Lease) -> bool:
        """Keep ``lease`` alive for another TTL; False when it already expired (or was revoked)."""
        with _translated("lease refresh"):
            responses = list(self._client.refresh_lease(lease.id))
        return bool(responses) and int(responses[-1].TTL) > 0

    def revoke_lease(self, lease: Lease) -> None:
        """End ``lease`` now: every key attached to it is deleted."""
        with _translated("lease revoke"):
            self._client.revoke_lease(lease.id)

    def register_lb(self, lb_id: str, record: dict[str, Any], lease: Lease) -> None:
        """Write load balancer ``lb_id``'s registration under ``lease``, and its membership."""
        ops = self._client.transactions
        self._txn(
            [
                ops.put(self.fleet_key("lbs", lb_id), json.dumps(record), lease=lease.id),
                self._member_put(lb_id, record),
            ]
        )

    def leave_fleet(self, lb_id: str, lease: Lease | None) -> None:
        """Load balancer ``lb_id`` stops for good: end its lease and delete its membership.

        Only for a clean stop, when its HAProxy stops with its proxysync: a member whose
        proxysync merely died keeps its record, so that nothing it may still route to stops.
        """
        if lease is not None:
            with contextlib.suppress(StoreError):
                self.revoke_lease(lease)
        with _translated("delete"):
            self._client.delete(self.fleet_key("members", lb_id))

    def forget_member(self, lb_id: str) -> bool:
        """Delete the membership record of a load balancer that is gone for good.

        False when there was none. Refused (StoreError) while ``lb_id`` is registered:
        its proxysync runs and would only register it again.
        """
        ops = self._client.transactions
        key = self.fleet_key("members", lb_id)
        response = self._txn_response(
            [ops.delete(key)], [ops.version(self.fleet_key("lbs", lb_id)) == 0]
        )
        if not response.succeeded:
            raise StoreError(
                f"load balancer {lb_id} is registered (its proxysync runs); stop it first"
            )
        return bool(response.responses[0].response_delete_range.deleted)

    # watches
    def wait_applied(
        self, revision: int, timeout: float, **options: Unpack[WaitOptions]
    ) -> FleetWait:
        """Block until every live load balancer applied ``revision`` (watching, not polling).

        Live: registered under ``lbs/`` now; one whose lease ends during the wait drops out,
        one that registers joins. Falsy on timeout, cancellation, with no load balancer
        registered at the deadline, or when one refused a configuration including the
        write (``refused_by`` names it). ``options``: see WaitOptions.

        A member without a live lease (its proxysync is down) is left out and named in
        ``absent``: it keeps its previous routes, which is safe for a switch, and
        :meth:`wait_drained`, which comes before anything stops, waits for it.
        """
        return self._wait_fleet("applied", revision, timeout, options)

    def wait_drained(
        self, revision: int, timeout: float, **options: Unpack[WaitOptions]
    ) -> FleetWait:
        """Block until nothing older than ``revision`` runs in any load balancer that serves.

        Nothing older: no old worker, no session on a server removed at ``revision`` or
        before (each proxysync's ``drained/<id>`` record; ``timed_out`` lists servers it
        gave up on). Falsy on timeout or with no load balancer registered.

        This wait comes before pods stop, so it includes every member whose HAProxy still
        accepts connections although its proxysync is down (a TCP connect to its address,
        at each look): until it is registered again and drained the revision, or its
        HAProxy stops answering. On the deadline, ``held_by`` names those it waited for.
        """
        return self._wait_fleet("drained", revision, timeout, options, serving=True)

    def put_drained(
        self, revision: int, *, lb_id: str, lease: Lease | None = None, **extra: Any
    ) -> None:
        """Record that nothing older than ``revision`` runs in ``lb_id``'s HAProxy (``extra``: figures)."""
        self._put_revision(self.drained_key_of(lb_id), revision, extra, lease)

    def _put_revision(
        self, key: str, revision: int, extra: dict[str, Any], lease: Lease | None
    ) -> None:
        with _translated("put"):
            self._client.put(
                key,
                json.dumps({"revision": revision, **extra}),
                lease=None if lease is None else lease.id,
            )

    def _wait_fleet(
        self,
        kind: str,
        revision: int,
        timeout: float,
        options: WaitOptions,
        tick: float = 0.5,
        *,
        serving: bool = False,
    ) -> FleetWait:
        refuse_unknown(options, WaitOptions)
        cancelled = options.get("cancelled", lambda: False)
        since = options.get("since")
        started = time.monotonic()
        origin = started if since is None else since
        deadline = started + timeout
        seen: dict[str, float] = {}  # load balancer -> seconds from origin to reaching it
        pending: list[str] = []
        balancers: list[LoadBalancer] = []
        absent: list[Member] = []  # members without a live lease
        held: list[Member] = []  # ... whose HAProxy still accepts connections
        watch = _Changes(
            self._client,
            [self.fleet_prefix(kind), self.fleet_prefix("lbs"), self.fleet_prefix("members")],
        )
        try:
            while True:
                read_at = 0
                try:
                    balancers, members, read_at = self._fleet_at()
                except StoreError:
                    logger.warning("reading the load balancers failed; retrying", exc_info=True)
                else:
                    absent = [m for m in members if not m.registered]
                    held = [m for m in absent if serving and haproxy_accepts(m.address)]
                    now = time.monotonic()
                    pending = [m.id for m in held]
                    for balancer in balancers:
                        record = balancer.applied if kind == "applied" else balancer.drained
                        if reaches(record, revision, options.get("records")):
                            seen.setdefault(balancer.id, now - origin)
                            continue
                        rejected = (balancer.applied or {}).get("rejected") or {}
                        if kind == "applied" and int(rejected.get("revision", 0)) >= revision:
                            return FleetWait(
                                False,
                                revision,
                                {},
                                tuple(balancers),
                                refused_by=balancer.id,
                                absent=tuple(m.id for m in absent),
                                problem=(
                                    f"load balancer {balancer.id} refused the configuration "
                                    f"of revision {rejected.get('revision')}: "
                                    f"{rejected.get('error', 'no reason given')}"
                                ),
                            )
                        pending.append(balancer.id)
                    if balancers and not pending:
                        times = {balancer.id: seen[balancer.id] for balancer in balancers}
                        return FleetWait(
                            True,
                            revision,
                            times,
                            tuple(balancers),
                            absent=tuple(m.id for m in absent),
                        )
                remaining = deadline - time.monotonic()
                if remaining <= 0 or cancelled():
                    if cancelled():
                        problem = "the wait was cancelled"
                    elif not read_at:
                        problem = "etcd could not be read"
                    elif held:
                        problem = "; ".join(
                            f"{m.id} is not registered (its proxysync does not answer) but its "
                            f"HAProxy at {m.address} still accepts connections"
                            for m in held
                        )
                        if late := [i for i in pending if i not in {m.id for m in held}]:
                            problem += f"; {', '.join(late)} did not report it"
                        problem += f" (waited {timeout:.0f}s)"
                    elif not balancers:
                        problem = "no load balancer is registered"
                    else:
                        problem = f"{', '.join(pending)} did not report it within {timeout:.0f}s"
                    times = {b.id: seen[b.id] for b in balancers if b.id in seen}
                    return FleetWait(
                        False,
                        revision,
                        times,
                        tuple(balancers),
                        problem=problem,
                        absent=tuple(m.id for m in absent),
                        held_by=tuple(m.id for m in held),
                    )
                if not read_at:
                    time.sleep(min(0.1, remaining))  # etcd unreachable: short backoff, then read
                    continue
                # Watched from just after what was read, so no write in between is missed; the
                # wait is cut into ticks to notice cancellation.
                watch.wait(read_at + 1, min(tick, remaining))
        finally:
            watch.close()

    def watch_prefix(self, start_revision: int) -> tuple[Iterator[Any], Callable[[], None]]:
        """Watch responses (``header.revision``, ``events``) under the prefix, and a cancel function."""
        with _translated("watch"):
            responses, cancel = self._client.watch_prefix_response(
                f"{self.prefix}/", start_revision=start_revision
            )
        return responses, cancel


def event_key(event: Any) -> str:
    """The key of a watch event."""
    return bytes(event.key).decode()
