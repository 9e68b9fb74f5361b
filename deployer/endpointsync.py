"""Keeps each live backend's servers equal to its version's pods while pods are replaced.

Runs beside proxysync (same process, its own thread): one watch on Greenlight-managed
pods in every namespace; when a pod of a live version (one a frontend points at) becomes
ready, is deleted or fails, the backend record in etcd gets the new server list and
proxysync renders it. A listed pod that is merely not ready yet is kept: HAProxy's own
per-server checks cover that, and an empty list would take the app offline.
A pod on the record's ``leaving`` list (see deployer.rotation) is never listed again;
the name is dropped from that list once the pod is gone.

Every proxysync of the fleet runs one, but only one of them works at a time: the holder
of the leader key ``<prefix>/endpointsync-leader``, under an etcd lease it refreshes.
Compare-and-swap alone would keep duplicate writers correct only when every one of them
sees the same pods at the same time; one whose pod watch lags (a slow process, a
reconnecting watch) would read the up-to-date record, compare it with its stale pods
and write it back without a pod that just became ready, or with one that is gone, and
nothing would correct it until that pod's next event. It would also multiply the etcd
reads and the attempted writes by the number of load balancers. So the others wait:
when the leader stops (or its process dies), its lease expires and one of them claims
the key, lists the pods afresh and reconciles every live backend. Each write is fenced
on the leader key in the same transaction, so a leader that lost its key without
noticing yet cannot write.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from typing import Any

from deployer import k8s
from deployer.cluster import MANAGED_BY, MANAGER
from deployer.errors import BackendError, StoreError
from deployer.etcdstore import EtcdStore, Lease
from deployer.pods import PodInfo, pod_info
from deployer.rotation import LEAVING

logger = logging.getLogger(__name__)

LEADER = "endpointsync-leader"

PodKey = tuple[str, str]  # (namespace, pod name)
VersionKey = tuple[str, str, int]  # (namespace, app, version)


def desired_servers(
    current: list[dict[str, Any]],
    pods: list[PodInfo],
    port: int,
    leaving: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Ready pods, plus listed pods that still run; never empty while ``current`` is not.

    Pods being deleted or ``leaving`` are never servers.
    """
    running = {
        p.name: p
        for p in pods
        if not p.deleting and p.phase == "Running" and p.ip and p.name not in leaving
    }
    keep = {s["name"] for s in current if s["name"] in running}
    names = keep | {p.name for p in running.values() if p.ready}
    servers = [{"name": name, "address": running[name].ip, "port": port} for name in sorted(names)]
    return servers or list(current)


class EndpointSync:
    """Watches managed pods and rewrites the servers of live backends in etcd (when leader)."""

    def __init__(self, store: EtcdStore, lease_seconds: int = 5, holder: str = "") -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leader_key = store.leader_key(LEADER)
        self.pods: dict[PodKey, tuple[str, PodInfo]] = {}  # key -> (namespace, info)
        self._stop = threading.Event()
        self._leading = threading.Event()
        self._lease: Lease | None = None

    def stop(self) -> None:
        """Make :meth:`run` return within a watch window; hand the leadership over."""
        self._stop.set()
        self._leading.set()  # wakes a follower waiting for the leadership

    @property
    def leading(self) -> bool:
        """Whether this one holds the leader key (as of its last refresh)."""
        return self._leading.is_set() and not self._stop.is_set()

    def lead_once(self) -> bool:
        """Claim or keep the leader key; whether this one leads now."""
        try:
            if self._lease is not None and not self.store.refresh_lease(self._lease):
                if self._leading.is_set():
                    logger.warning("endpoint sync: the leader lease expired; claiming again")
                self._lease = None
                self._leading.clear()
            if self._lease is None:
                self._lease = self.store.grant_lease(self.lease_seconds)
            leading = self.store.claim_leader(self.leader_key, self.holder, self._lease)
        except StoreError as exc:
            logger.warning("endpoint sync: etcd unavailable (%s)", exc)
            leading = False
        if leading and not self._leading.is_set():
            logger.info("endpoint sync: %s leads", self.holder)
        if not leading:
            self._leading.clear()
        else:
            self._leading.set()
        return leading

    def release(self) -> None:
        """Give the leadership up now (revoke the lease), so the next leader need not wait."""
        lease, self._lease = self._lease, None
        self._leading.clear()
        if lease is not None:
            try:
                self.store.revoke_lease(lease)
            except StoreError:
                logger.warning("endpoint sync: could not revoke the leader lease")

    def _keep_leading(self) -> None:
        interval = max(0.2, self.lease_seconds / 3)
        while not self._stop.is_set():
            self.lead_once()
            self._stop.wait(interval)
        self.release()

    def run(self) -> None:
        """While leader: list, then watch; relist after any error (HAProxy keeps serving)."""
        keeper = threading.Thread(target=self._keep_leading, name="endpoint-leader", daemon=True)
        keeper.start()
        backoff = 0.5
        try:
            while not self._stop.is_set():
                self._leading.wait()
                if self._stop.is_set():
                    return
                try:
                    self._follow()
                    backoff = 0.5
                except (BackendError, OSError, StoreError) as exc:
                    logger.warning("endpoint sync: %s; relisting in %.1fs", exc, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 10.0)
        finally:
            keeper.join(10)

    def _follow(self) -> None:
        core = k8s.core_v1()
        selector = f"{MANAGED_BY}={MANAGER}"
        listed = k8s.call(core.list_pod_for_all_namespaces, label_selector=selector)
        self.pods = {
            (p.metadata.namespace, p.metadata.name): (p.metadata.namespace, pod_info(p))
            for p in listed.items
        }
        self.reconcile(None)
        resource_version = listed.metadata.resource_version
        while self.leading:
            for event in k8s.stream(
                core.list_pod_for_all_namespaces,
                label_selector=selector,
                resource_version=resource_version,
                timeout_seconds=5,
            ):
                obj = event["object"]
                resource_version = obj.metadata.resource_version or resource_version
                key = (obj.metadata.namespace, obj.metadata.name)
                info = pod_info(obj)
                if event["type"] == "DELETED":
                    self.pods.pop(key, None)
                else:
                    self.pods[key] = (obj.metadata.namespace, info)
                if info.version is not None:
                    self.reconcile((obj.metadata.namespace, info.app, info.version))
                if not self.leading:
                    return

    def reconcile(self, only: VersionKey | None, attempts: int = 5) -> int:
        """Rewrite the live backends (of ``only``, or all) whose servers differ; return how many.

        A record someone else wrote meanwhile (a deploy, a rollback, a pod leaving
        rotation) is read again and reconciled on top of that write.
        """
        written = 0
        for _ in range(attempts):
            done, conflicts = self._reconcile_once(only)
            written += done
            if not conflicts:
                break
        return written

    def _reconcile_once(self, only: VersionKey | None) -> tuple[int, int]:
        snapshot = self.store.snapshot()
        live = {str(f.get("backend")) for f in snapshot.frontends.values()}
        written = conflicts = 0
        for name in sorted(live):
            record = snapshot.backends.get(name)
            if not record or not str(record.get("version", "")).isdigit():
                continue
            if record.get("traffic") == "service":
                continue  # its one server is the app's stable Service (deployer.traffic)
            key = (
                str(record.get("namespace", "")),
                str(record.get("app", "")),
                int(record["version"]),
            )
            if only is not None and key != only:
                continue
            pods = [
                info
                for namespace, info in self.pods.values()
                if (namespace, info.app, info.version) == key
            ]
            current = list(record.get("servers", []))
            port = int(current[0]["port"]) if current else int(record.get("port", 0) or 0)
            if not port:
                continue
            leaving = [str(n) for n in record.get(LEAVING, [])]
            servers = desired_servers(current, pods, port, frozenset(leaving))
            still_leaving = [n for n in leaving if any(p.name == n for p in pods)]
            if servers != current or still_leaving != leaving:
                updated = {**record, "servers": servers, LEAVING: still_leaving}
                if not still_leaving:
                    updated.pop(LEAVING)
                # Compare-and-swap: a deploy, rollback or rotation change that wrote meanwhile wins.
                if not self.store.put_backend_if_unchanged(
                    name,
                    updated,
                    snapshot.backend_revisions.get(name, 0),
                    holding=(self.leader_key, self.holder),
                ):
                    conflicts += 1
                    continue
                written += 1
                logger.info(
                    "backend %s: servers %s -> %s",
                    name,
                    [s["name"] for s in current],
                    [s["name"] for s in servers],
                )
        return written, conflicts
