"""Out of rotation before it stops: pods Greenlight removes leave the load balancer first.

Before Greenlight deletes or evicts a serving pod (scale-down, retiring a version,
undeploy, drains and scale-ins) it calls :func:`take_out`:

1. the pod's server is removed from its backend record and its name added to the
   record's ``leaving`` list (a compare-and-swap write, so that the endpoint sync, which
   never lists a leaving pod, cannot put it back);
2. every load balancer's proxysync sets the server to drain through the runtime API and
   acknowledges the revision (``applied/<id>``, with the sessions each server still had);
3. once no HAProxy worker has a session on it, each proxysync writes ``drained/<id>``;
4. only when every live load balancer drained it is the pod removed. The wait is bounded
   by the pod's grace period: a request still running after it gets the pod's own preStop
   delay and SIGTERM handling.

Step 4 also waits for every member of the fleet whose proxysync is down while its
HAProxy still accepts connections (deployer.lbfleet): that HAProxy still routes to the
pod. If one still does at the deadline, the pods go back into rotation and
:class:`StillRouted` is raised, naming it: nothing is deleted under a load balancer that
may still send it requests.

:func:`put_back` undoes step 1 for pods that stayed after all (a ReplicaSet that chose
another pod, an eviction that was refused).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Unpack

from deployer.cluster import backend_name
from deployer.errors import StoreError
from deployer.lbfleet import FleetWait, LoadBalancer, WaitOptions

logger = logging.getLogger(__name__)


class StillRouted(StoreError):
    """Pods stay: a load balancer whose proxysync is down may still route to them."""


LogFn = Callable[[str, str], None]  # (level, message), as scaling.drain logs
LEAVING = "leaving"
CAS_ATTEMPTS = 20


class RotationStore(Protocol):
    """The etcd calls rotation needs (deployer.etcdstore.EtcdStore)."""

    def backend_key(self, backend: str) -> str: ...
    def get(self, key: str) -> tuple[dict[str, Any] | None, int]: ...
    def put_backend_if_unchanged(
        self, backend: str, record: dict[str, Any], mod_revision: int
    ) -> int: ...
    def wait_applied(
        self, revision: int, timeout: float, **options: Unpack[WaitOptions]
    ) -> FleetWait: ...
    def wait_drained(
        self, revision: int, timeout: float, **options: Unpack[WaitOptions]
    ) -> FleetWait: ...
    def load_balancers(self) -> list[LoadBalancer]: ...


@dataclass(frozen=True)
class ServingPod:
    """A pod that may be a server of its version's backend."""

    namespace: str
    name: str
    app: str
    version: int | None

    @property
    def backend(self) -> str | None:
        """Its version's backend record, or None for a pod Greenlight does not route to."""
        if not self.app or self.version is None:
            return None
        return backend_name(self.namespace, self.app, self.version)


@dataclass
class Removal:
    """What taking pods out of rotation did: their server entries, and what the LB reported."""

    servers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # backend -> entries
    revision: int = 0
    drained: bool = True

    @property
    def pods(self) -> list[str]:
        """The names of the pods that left a backend."""
        return sorted(server["name"] for entries in self.servers.values() for server in entries)


def _by_backend(pods: Iterable[ServingPod]) -> dict[str, set[str]]:
    grouped: dict[str, set[str]] = {}
    for pod in pods:
        if pod.backend is not None:
            grouped.setdefault(pod.backend, set()).add(pod.name)
    return grouped


def _rewrite(
    store: RotationStore,
    backend: str,
    change: Callable[[dict[str, Any]], dict[str, Any] | None],
) -> tuple[dict[str, Any] | None, int]:
    """Apply ``change`` to a backend record with compare-and-swap.

    Returns the record before and the revision of the write (0 when nothing was written).
    ``change`` returns the new record, or None when nothing needs writing. A record that
    does not exist is left alone.
    """
    for _ in range(CAS_ATTEMPTS):
        record, mod_revision = store.get(store.backend_key(backend))
        if record is None:
            return None, 0
        updated = change(record)
        if updated is None:
            return record, 0
        revision = store.put_backend_if_unchanged(backend, updated, mod_revision)
        if revision:
            return record, revision
    raise StoreError(f"backend {backend} kept changing; could not update it")


def take_out(
    store: RotationStore,
    pods: Sequence[ServingPod],
    *,
    timeout: float,
    log: LogFn,
    cancelled: Callable[[], bool] = lambda: False,
) -> Removal:
    """Take ``pods`` out of every load balancer and wait (up to ``timeout``) until drained.

    Raises :class:`StillRouted`, with the pods back in rotation, when a load balancer whose
    proxysync is down still accepted connections at the deadline.
    """
    removal = Removal()
    for backend, names in sorted(_by_backend(pods).items()):

        def without(record: dict[str, Any], names: set[str] = names) -> dict[str, Any] | None:
            servers = [s for s in record.get("servers", []) if s.get("name") not in names]
            leaving = sorted(set(record.get(LEAVING, [])) | names)
            if servers == record.get("servers", []) and leaving == record.get(LEAVING, []):
                return None
            # The port stays on record, so that pods can join an emptied backend again.
            port = record.get("port") or next(
                (s.get("port") for s in record.get("servers", [])), None
            )
            return {**record, "servers": servers, LEAVING: leaving, "port": port}

        before, revision = _rewrite(store, backend, without)
        if before is None:
            continue
        # Wait for our own write: later revisions may be proxysync's own acknowledgements,
        # which it never applies.
        removal.revision = max(removal.revision, revision)
        entries = [s for s in before.get("servers", []) if s.get("name") in names]
        if entries:
            removal.servers[backend] = entries
    if not removal.servers or not removal.revision:
        return removal
    started = time.monotonic()
    applied = store.wait_applied(removal.revision, timeout, cancelled=cancelled)
    if not applied:
        # One look (no wait): does a member whose proxysync is down still route to them?
        if (held := store.wait_drained(removal.revision, 0.0, cancelled=cancelled)).held_by:
            _still_routed(store, removal, held, log)
        log(
            "warning",
            f"the load balancers did not apply revision {removal.revision} within "
            f"{timeout:.0f}s ({applied.problem}); {', '.join(removal.pods)} may still get "
            "requests until their preStop delay ends",
        )
        removal.drained = False
        return removal
    left = time.monotonic()
    sessions = _left_rotation(applied.balancers)
    for backend, entries in sorted(removal.servers.items()):
        for server in entries:
            count = sessions.get(backend, {}).get(str(server["name"]))
            carried = "?" if count is None else str(count)
            log(
                "info",
                f"pod {server['name']} left rotation of {backend} at revision "
                f"{removal.revision} after {(left - started) * 1000:.0f} ms "
                f"({carried} requests in flight; {applied.summary()})",
            )
    remaining = max(0.0, timeout - (time.monotonic() - started))
    drained = store.wait_drained(removal.revision, remaining, cancelled=cancelled)
    if not drained and drained.held_by:
        _still_routed(store, removal, drained, log)
    removal.drained = bool(drained)
    if removal.drained:
        timed_out = set(_timed_out(drained.balancers))
        late = [
            str(server["name"])
            for backend, entries in sorted(removal.servers.items())
            for server in entries
            if f"{backend}/{server['name']}" in timed_out
        ]
        if late:
            log("warning", f"{', '.join(late)} still had requests when the drain timed out")
        if clean := [name for name in removal.pods if name not in late]:
            log(
                "info",
                f"no requests left on {', '.join(clean)} after "
                f"{(time.monotonic() - left) * 1000:.0f} ms; removing",
            )
    else:
        log(
            "warning",
            f"{', '.join(removal.pods)} still had requests after {timeout:.0f}s "
            f"({drained.problem}); removing anyway (each pod finishes its requests after "
            "SIGTERM)",
        )
    return removal


def _still_routed(store: RotationStore, removal: Removal, waited: FleetWait, log: LogFn) -> None:
    """Put the pods back into rotation and raise StillRouted naming who may still route."""
    held = ", ".join(waited.held_by)
    log(
        "warning",
        f"{', '.join(removal.pods)} stay: {waited.problem}; back in rotation until {held} is "
        "registered again or its HAProxy stops",
    )
    put_back(store, removal, removal.pods, log)
    raise StillRouted(
        f"{held} (proxysync down, HAProxy still answering) may still route to "
        f"{', '.join(removal.pods)}; they stay"
    )


def put_back(store: RotationStore, removal: Removal, names: Iterable[str], log: LogFn) -> None:
    """Return pods that stay after all (named in ``names``) to their backends' rotation."""
    keep = set(names)
    for backend, entries in sorted(removal.servers.items()):
        returning = [s for s in entries if s.get("name") in keep]
        if not returning:
            continue
        back = {str(s["name"]) for s in returning}

        def restored(
            record: dict[str, Any],
            returning: list[dict[str, Any]] = returning,
            back: set[str] = back,
        ) -> dict[str, Any] | None:
            present = {s.get("name") for s in record.get("servers", [])}
            servers = list(record.get("servers", [])) + [
                s for s in returning if s["name"] not in present
            ]
            leaving = [name for name in record.get(LEAVING, []) if name not in back]
            return {
                **record,
                "servers": sorted(servers, key=lambda s: str(s["name"])),
                LEAVING: leaving,
            }

        if _rewrite(store, backend, restored)[0] is not None:
            log("info", f"{', '.join(sorted(back))} stayed; back in rotation of {backend}")


def _left_rotation(balancers: Iterable[LoadBalancer]) -> dict[str, dict[str, int | None]]:
    """Backend -> server -> sessions it had when it left, summed over the load balancers.

    None when a load balancer did not say.
    """
    merged: dict[str, dict[str, int | None]] = {}
    for balancer in balancers:
        raw = (balancer.applied or {}).get("left_rotation") or {}
        if not isinstance(raw, dict):
            continue
        for backend, servers in raw.items():
            if not isinstance(servers, dict):
                continue
            into = merged.setdefault(str(backend), {})
            for name, count in servers.items():
                known = into.get(str(name), 0)
                into[str(name)] = (
                    None if known is None or not isinstance(count, int) else known + count
                )
    return merged


def _timed_out(balancers: Iterable[LoadBalancer]) -> list[str]:
    """The servers some load balancer gave up waiting on (``drained/<id>.timed_out``)."""
    late: set[str] = set()
    for balancer in balancers:
        raw = (balancer.drained or {}).get("timed_out") or []
        if isinstance(raw, list):
            late.update(str(item) for item in raw)
    return sorted(late)


class PodRotation:
    """One pod at a time in and out of rotation, on a store: what node drains use."""

    def __init__(self, store: RotationStore) -> None:
        self.store = store

    def take_out(self, pod: ServingPod, timeout: float, log: LogFn) -> Removal:
        """Take ``pod`` out of every load balancer; wait until drained (bounded)."""
        return take_out(self.store, [pod], timeout=timeout, log=log)

    def put_back(self, removal: Removal, log: LogFn) -> None:
        """Return the pods of ``removal`` to rotation (their eviction did not happen)."""
        put_back(self.store, removal, removal.pods, log)

    def serving(self, pod: ServingPod) -> int | None:
        """How many servers the pod's backend has now (None: Greenlight does not route it)."""
        if pod.backend is None:
            return None
        record, _ = self.store.get(self.store.backend_key(pod.backend))
        return None if record is None else len(record.get("servers", []))
