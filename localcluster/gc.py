"""Garbage collection of owner references, deletion finalizers, and namespace termination.

Mirrors pkg/controller/garbagecollector (Background, Foreground, Orphan) and
pkg/controller/namespace (delete a Terminating namespace's content, then the
namespace). It runs inside the API process, driven by store events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from .errors import StatusError
from .resources import BY_KIND, RESOURCES, lookup
from .store import Event, Store

log = logging.getLogger("localcluster.gc")

NAMESPACE_DELAY = 1.5


class GarbageCollector:
    """Reacts to store changes: deletes orphaned dependents and completes finalizer work."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        # Terminating namespaces whose cleanup is scheduled, and those it has started for.
        self._ns_seen: set[str] = set()
        self._ns_active: set[str] = set()

    def start(self) -> None:
        """Subscribe to the store and start processing (also sweeps what a restart left)."""
        self.store.listeners.append(self._on_event)
        self.task = asyncio.get_running_loop().create_task(self._run())
        self._sweep()

    async def stop(self) -> None:
        """Stop processing."""
        if self._on_event in self.store.listeners:
            self.store.listeners.remove(self._on_event)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    def _on_event(self, ev: Event) -> None:
        self.queue.put_nowait(ev)

    async def _run(self) -> None:
        while True:
            ev = await self.queue.get()
            if ev is None:
                return
            try:
                self.process(ev)
            except Exception:
                log.exception("garbage collection of %s failed", ev.resource)

    def _sweep(self) -> None:
        for entry in list(self.store.objects["namespaces"].values()):
            if not entry.obj["metadata"].get("deletionTimestamp"):
                self._default_service_account(entry.obj["metadata"]["name"])
        for res in RESOURCES:
            for entry in list(self.store.objects[res.key].values()):
                meta = entry.obj["metadata"]
                if meta.get("deletionTimestamp"):
                    self._finalize(res.key, entry.obj)
                if meta.get("ownerReferences"):
                    self._check_dependent(res.key, entry.obj)

    # ------------------------------------------------------------------ core

    def process(self, ev: Event) -> None:
        """Handle one change synchronously (no awaits: the store cannot change under us)."""
        meta = ev.obj["metadata"]
        uid = meta.get("uid", "")
        if ev.type == "DELETED" and ev.resource == "namespaces":
            self._ns_seen.discard(meta.get("name", ""))
            self._ns_active.discard(meta.get("name", ""))
        if ev.resource == "namespaces" and ev.type == "ADDED":
            self._default_service_account(meta["name"])
        if ev.type == "DELETED":
            for dep in list(self.store.owners.get(uid, ())):
                obj = self.store.peek(dep[0], dep[1] or None, dep[2])
                if obj is not None:
                    self._check_dependent(dep[0], obj)
            # A dependent going away may unblock its owner's foreground deletion.
            for ref in meta.get("ownerReferences") or []:
                owner = self._owner(ref, meta.get("namespace", ""))
                if owner is not None and owner[1]["metadata"].get("deletionTimestamp"):
                    self._finalize(owner[0], owner[1])
            if ev.resource != "namespaces" and meta.get("namespace"):
                ns = self.store.peek("namespaces", None, meta["namespace"])
                if ns is not None and ns["metadata"].get("deletionTimestamp"):
                    self._finalize("namespaces", ns)
            return
        if meta.get("deletionTimestamp"):
            self._finalize(ev.resource, ev.obj)

    def _owner(self, ref: dict[str, Any], namespace: str) -> tuple[str, dict[str, Any]] | None:
        res = BY_KIND.get((ref.get("apiVersion", ""), ref.get("kind", "")))
        if res is None:
            return None
        obj = self.store.peek(res, namespace if res.namespaced else None, ref.get("name", ""))
        if obj is None or obj["metadata"].get("uid") != ref.get("uid"):
            return None
        return res.key, obj

    def _check_dependent(self, key: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        refs = meta.get("ownerReferences") or []
        alive = []
        foreground = False
        for ref in refs:
            if (ref.get("apiVersion", ""), ref.get("kind", "")) not in BY_KIND:
                # An owner kind this server does not serve cannot be resolved; the real
                # garbage collector leaves such dependents alone rather than guess.
                alive.append(ref)
                continue
            owner = self._owner(ref, meta.get("namespace", ""))
            if owner is None:
                continue
            ometa = owner[1]["metadata"]
            if ometa.get("deletionTimestamp") and "foregroundDeletion" in (
                ometa.get("finalizers") or []
            ):
                foreground = True
                continue
            alive.append(ref)
        if len(alive) == len(refs):
            return
        ns = meta.get("namespace") or None
        if not alive:
            if meta.get("deletionTimestamp"):
                return
            policy = "Foreground" if foreground else "Background"
            self._delete(key, ns, meta["name"], policy)
            return
        # Some owners remain: drop only the dangling references.
        live_uids = {r.get("uid") for r in alive}
        self._strip_refs(
            key,
            obj,
            lambda r: (
                r.get("uid") in live_uids or self._owner(r, meta.get("namespace", "")) is not None
            ),
        )

    def _strip_refs(self, key: str, obj: dict[str, Any], keep: Any) -> None:
        meta = obj["metadata"]
        new = json.loads(json.dumps(obj))
        new["metadata"]["ownerReferences"] = [
            r for r in meta.get("ownerReferences") or [] if keep(r)
        ]
        if not new["metadata"]["ownerReferences"]:
            del new["metadata"]["ownerReferences"]
        try:
            self.store.update_sync(key, meta.get("namespace") or None, meta["name"], new)
        except StatusError as err:
            log.debug("could not update owner references of %s: %s", meta["name"], err)

    def _delete(self, key: str, ns: str | None, name: str, policy: str) -> None:
        try:
            self.store.delete_sync(key, ns, name, None, policy)
        except StatusError as err:
            log.debug("could not delete dependent %s %s: %s", key, name, err)

    def _remove_finalizer(self, key: str, obj: dict[str, Any], finalizer: str) -> None:
        new = json.loads(json.dumps(obj))
        new["metadata"]["finalizers"] = [
            f for f in obj["metadata"].get("finalizers") or [] if f != finalizer
        ]
        try:
            self.store.update_sync(
                key, obj["metadata"].get("namespace") or None, obj["metadata"]["name"], new
            )
        except StatusError as err:
            log.debug("could not remove finalizer %s: %s", finalizer, err)

    def _finalize(self, key: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        uid = meta.get("uid", "")
        finalizers = meta.get("finalizers") or []
        if key == "namespaces":
            name = meta["name"]
            if name in self._ns_active:
                self._namespace(obj)
            elif name not in self._ns_seen:
                # The real namespace controller acts after a discovery pass, not in the same
                # instant; clients such as `kubectl delete -f` rely on content outliving the
                # namespace's DELETE call for a moment.
                self._ns_seen.add(name)
                asyncio.get_running_loop().call_later(NAMESPACE_DELAY, self._namespace_later, name)
            return
        if "orphan" in finalizers:
            for dep in list(self.store.owners.get(uid, ())):
                dobj = self.store.peek(dep[0], dep[1] or None, dep[2])
                if dobj is not None:
                    self._strip_refs(dep[0], dobj, lambda r: r.get("uid") != uid)
            current = self.store.peek(key, meta.get("namespace") or None, meta["name"])
            if current is not None:
                self._remove_finalizer(key, current, "orphan")
            return
        if "foregroundDeletion" in finalizers:
            deps = list(self.store.owners.get(uid, ()))
            for dep in deps:
                dobj = self.store.peek(dep[0], dep[1] or None, dep[2])
                if dobj is not None and not dobj["metadata"].get("deletionTimestamp"):
                    self._delete(dep[0], dep[1] or None, dep[2], "Foreground")
            if not self.store.owners.get(uid):
                current = self.store.peek(key, meta.get("namespace") or None, meta["name"])
                if current is not None:
                    self._remove_finalizer(key, current, "foregroundDeletion")

    def _default_service_account(self, namespace: str) -> None:
        # pkg/controller/serviceaccount: every namespace gets a "default" ServiceAccount.
        if self.store.peek("serviceaccounts", namespace, "default") is not None:
            return
        try:
            self.store.create_sync("serviceaccounts", namespace, {"metadata": {"name": "default"}})
        except StatusError as err:
            log.debug("no default service account in %s: %s", namespace, err)

    def _namespace_later(self, name: str) -> None:
        ns = self.store.peek("namespaces", None, name)
        if ns is None:
            self._ns_seen.discard(name)
            return
        self._ns_active.add(name)
        try:
            self._namespace(ns)
        except Exception:
            log.exception("namespace %s cleanup failed", name)

    def _namespace(self, ns: dict[str, Any]) -> None:
        name = ns["metadata"]["name"]
        for res in RESOURCES:
            if not res.namespaced:
                continue
            for entry in self.store.select(res, name):
                if not entry.obj["metadata"].get("deletionTimestamp"):
                    self._delete(res.key, name, entry.obj["metadata"]["name"], "Background")
        still = sum(len(self.store.select(r, name)) for r in RESOURCES if r.namespaced)
        if still == 0 and "kubernetes" in (ns.get("spec") or {}).get("finalizers", []):
            current = self.store.peek("namespaces", None, name)
            if current is None:
                return
            new = json.loads(json.dumps(current))
            new["spec"]["finalizers"] = [f for f in new["spec"]["finalizers"] if f != "kubernetes"]
            try:
                self.store.update_sync(lookup("namespaces"), None, name, new, "finalize")
            except StatusError as err:
                log.debug("could not finalize namespace %s: %s", name, err)
