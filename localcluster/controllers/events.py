"""Event recorder: core/v1 Events with the real reasons, counted like client-go's correlator."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import logging
import secrets
import time
from typing import Any

from ..errors import StatusError
from ..store import Store, now_rfc3339

log = logging.getLogger(__name__)

# Events for cluster-scoped objects (nodes) go to "default", as client-go's recorder does.
CLUSTER_EVENT_NAMESPACE = "default"


def _ref(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    ref = {
        "kind": obj.get("kind", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "apiVersion": obj.get("apiVersion", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if meta.get("namespace"):
        ref["namespace"] = meta["namespace"]
    return ref


class EventRecorder:
    """Writes Events about objects; repeats of the same event bump ``count`` instead of piling up."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._seen: dict[tuple[str, ...], tuple[str, str]] = {}

    def record(
        self,
        obj: dict[str, Any],
        event_type: str,
        reason: str,
        message: str,
        component: str,
        host: str | None = None,
        field_path: str | None = None,
    ) -> None:
        """Record one event about ``obj`` (Normal or Warning) from ``component``; never raises."""
        try:
            involved = _ref(obj)
            if field_path:
                involved["fieldPath"] = field_path
            namespace = involved.get("namespace") or CLUSTER_EVENT_NAMESPACE
            key = (
                namespace,
                involved["uid"],
                involved["kind"],
                reason,
                message,
                component,
                event_type,
            )
            now = now_rfc3339()
            seen = self._seen.get(key)
            if seen is not None:
                existing = self.store.peek("events", namespace, seen[0])
                if existing is not None:
                    event = copy.deepcopy(existing)
                    event["count"] = int(event.get("count") or 1) + 1
                    event["lastTimestamp"] = now
                    self.store.update_sync("events", namespace, seen[0], event)
                    return
            source: dict[str, str] = {"component": component}
            if host:
                source["host"] = host
            name = f"{involved['name']}.{time.time_ns():x}{secrets.token_hex(1)}"
            event = {
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "source": source,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "type": event_type,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": host or "",
            }
            self.store.create_sync("events", namespace, event)
            self._seen[key] = (name, now)
            if len(self._seen) > 20000:
                # Old correlation keys only cost a new Event instead of a count bump.
                self._seen.clear()
        except StatusError as exc:
            # An event about an object in a namespace being deleted is refused; that is fine.
            log.debug("event %s %s not recorded: %s", reason, message, exc)


# kube-apiserver's --event-ttl default.
EVENT_TTL = dt.timedelta(hours=1)
SWEEP_SECONDS = 300.0


class EventExpiry:
    """Deletes Events whose last occurrence is older than the TTL, as etcd leases do upstream."""

    def __init__(self, store: Store, ttl: dt.timedelta = EVENT_TTL) -> None:
        self.store = store
        self.ttl = ttl
        self._task: asyncio.Task[None] | None = None

    def sweep(self) -> int:
        """Delete expired events now; return how many went."""
        cutoff = (dt.datetime.now(dt.UTC) - self.ttl).strftime("%Y-%m-%dT%H:%M:%SZ")
        expired = [
            e.obj["metadata"]
            for e in self.store.select("events")
            if (e.obj.get("lastTimestamp") or e.obj["metadata"].get("creationTimestamp") or "")
            < cutoff
        ]
        for meta in expired:
            with contextlib.suppress(StatusError):
                self.store.delete_sync("events", meta.get("namespace"), meta["name"])
        return len(expired)

    def start(self) -> None:
        """Sweep at start and then every few minutes."""
        self._task = asyncio.create_task(self._run(), name="event-expiry")

    async def _run(self) -> None:
        while True:
            try:
                removed = self.sweep()
                if removed:
                    log.info("expired %d events older than %s", removed, self.ttl)
            except Exception:
                log.exception("event expiry failed")
            await asyncio.sleep(SWEEP_SECONDS)  # a TTL sweep, not a wait for a change

    async def stop(self) -> None:
        """Stop sweeping."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
