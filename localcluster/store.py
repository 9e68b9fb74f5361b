"""The object store: one global resourceVersion, persistence, watch history.

This is the in-process API the controllers and the kubelet use directly (no
HTTP); the REST server in ``server.py`` is a thin layer over it.

Resources are named by key: ``"pods"``, ``"nodes"``, ``"deployments.apps"``,
``"poddisruptionbudgets.policy"``, ``"endpointslices.discovery.k8s.io"`` (see
``resources.py``; a ``Resource`` object is accepted wherever a key is). Cluster-
scoped resources take ``namespace=None`` (or ""). Objects are plain dicts in the
wire format; every dict returned is a private copy the caller may mutate.

The async API (each call runs without yielding, so it is atomic on the loop):

* ``await create(resource, namespace, obj) -> dict`` (generateName, defaults, validation)
* ``await get(resource, namespace, name) -> dict``
* ``await list(resource, namespace=None, label_selector=None, field_selector=None)
  -> (items, resourceVersion)``; selectors use kube syntax (a dict means matchLabels)
* ``await update(resource, namespace, name, obj, subresource=None) -> dict``;
  Conflict when ``metadata.resourceVersion`` is given and stale; ``subresource="status"``
  changes only ``status``
* ``await mutate(resource, namespace, name, fn, subresource=None) -> dict``: ``fn``
  edits a fresh copy; read and write happen in one step, so it never conflicts
* ``await patch(resource, namespace, name, patch, patch_type=STRATEGIC, subresource=None)``
* ``await delete(resource, namespace, name, grace_period_seconds=None,
  propagation_policy=None, preconditions=None) -> dict`` (the object's last state)
* ``watch(resource, namespace=None, label_selector=None, field_selector=None,
  resource_version=None, timeout_seconds=None)`` -> async iterator of
  ``(event_type, obj)``; raises ``Expired`` for a resourceVersion older than the history
* ``listeners``: callables run synchronously with every committed ``Event``
  (rv, type, resource, obj, raw, old); ``peek``/``select`` read without copying
  (treat the dicts as read-only), as do the indexed lookups of ``lookups.py``
  (``controlled_by``, ``orphans``, ``selecting``).

Errors are ``errors.StatusError`` subclasses carrying the Status the HTTP layer
sends: ``NotFound``, ``AlreadyExists``, ``Conflict``, ``Invalid``, ``Forbidden``,
``BadRequest``, ``Expired`` (410, watch from a compacted resourceVersion),
``TooManyRequests`` (eviction blocked by a PodDisruptionBudget).

Deletion follows kube-apiserver (staging/src/k8s.io/apiserver/pkg/registry/
generic/registry/store.go and pkg/registry/core/pod/strategy.go):

* a pod with ``spec.nodeName`` deleted with a grace period > 0 (default
  ``spec.terminationGracePeriodSeconds``) only gets ``metadata.deletionTimestamp``
  and ``deletionGracePeriodSeconds``; the kubelet stops its containers and then
  calls ``delete(..., grace_period_seconds=0)``, which removes it. Unscheduled or
  terminal (Succeeded/Failed) pods, and grace 0, go at once;
* an object with ``metadata.finalizers`` stays, with a deletionTimestamp, until
  an update empties the list;
* ``propagation_policy`` "Orphan" / "Foreground" add the ``orphan`` /
  ``foregroundDeletion`` finalizers; "Background" (the default) removes the
  owner at once. Owner references are honoured by the garbage collector in
  ``gc.py``, which the API layer runs (the runtime needs none of its own), as is
  the namespace lifecycle (Terminating, then contents deleted).

Pod logs: the kubelet writes each container's output to
``store.log_path(namespace, pod, container)`` =
``<state-dir>/logs/<namespace>/<pod>/<container>.log`` (and the previous
instance's to ``log_path(..., previous=True)`` = ``<container>.previous.log``).
Lines are either raw text or CRI format ``<RFC3339Nano> <stdout|stderr> <F|P>
<text>``; CRI lines give ``timestamps=true`` their real times. ``pods/log``
with ``follow=true`` tails the file until the container is terminated
(``status.containerStatuses[].state.terminated``) or the pod is gone.
"""

from __future__ import annotations

import copy
import json
import logging
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Unpack

from . import validation
from .deletion import DeleteOptions, DeletionMixin
from .errors import (
    BadRequest,
    Forbidden,
    InternalError,
    already_exists,
    conflict,
    not_found,
)
from .indexes import ResourceIndex
from .lookups import LookupMixin
from .patch import apply_patch
from .persistence import StateFiles
from .records import (
    Entry,
    Event,
    HistoryRecord,
    Obj,
    ObjKey,
    Watcher,
    decode_continue,
    dumps,
    encode_continue,
    now_rfc3339,
)
from .resources import RESOURCES, Resource, ResourceRef, lookup
from .watching import WatcherSet, WatchMixin

log = logging.getLogger("localcluster.store")
__all__ = ["Entry", "Event", "Store", "Watcher", "dumps", "now_rfc3339", "BOOKMARK_INTERVAL"]

HISTORY_SIZE = 20000
BOOKMARK_INTERVAL = 15.0


class Store(LookupMixin, WatchMixin, DeletionMixin):
    """All objects of the cluster with a single resourceVersion sequence."""

    def __init__(
        self, state_dir: str | Path | None = None, history_size: int = HISTORY_SIZE
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir else None
        self.rv = 0
        self.objects: dict[str, dict[ObjKey, Entry]] = {r.key: {} for r in RESOURCES}
        self.history: deque[HistoryRecord] = deque(maxlen=history_size)
        # Events at or before this rv are not in the history (restart or compaction).
        self.history_floor = 0
        self.watchers: dict[str, WatcherSet] = {r.key: WatcherSet() for r in RESOURCES}
        self.indexes: dict[str, ResourceIndex] = {r.key: ResourceIndex(r.key) for r in RESOURCES}
        self.listeners: list[Callable[[Event], None]] = []
        self.owners: dict[str, set[tuple[str, str, str]]] = {}
        self.files = StateFiles(self.state_dir) if self.state_dir else None
        self._ip_counter = 0
        self._dry_run = False
        # Service cluster IPs: <base>.1-254, a /24 under 127.0.0.0/8 that no pod or node uses.
        # The runtime's kube-proxy sets it to its pod block's 127.<block>.0 (see kubeproxy).
        self.cluster_ip_base = "127.127.0"

    # ----------------------------------------------------------------- persistence

    def load(self) -> None:
        """Load the state dir (if any), create the standard namespaces, start a fresh history."""
        if self.files is not None:
            self.rv = self.files.load(self._put_entry, self._drop_entry, set(self.objects))
            self._ip_counter = len(self.objects["services"])
            self.files.snapshot(self.rv, self.objects)
        self._bootstrap()
        # Like a compacted etcd: changes before start-up are not replayed to watches.
        self.history.clear()
        self.history_floor = self.rv

    def _bootstrap(self) -> None:
        # The namespaces every cluster has; created once, then persisted.
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            if ("", ns) not in self.objects["namespaces"]:
                self._create_sync(lookup("namespaces"), None, {"metadata": {"name": ns}})

    def close(self) -> None:
        """Write a final snapshot and close the journal."""
        if self.files is not None:
            self.files.snapshot(self.rv, self.objects)
            self.files.close()

    # ----------------------------------------------------------------- internals

    def _put_entry(self, key: str, obj: Obj) -> Entry:
        meta = obj["metadata"]
        okey = (meta.get("namespace", ""), meta["name"])
        old = self.objects[key].get(okey)
        if old is not None:
            self._index_owners(key, old.obj, remove=True)
            self.indexes[key].remove(okey, old.obj)
        entry = Entry(obj, dumps(obj))
        self.objects[key][okey] = entry
        self._index_owners(key, obj)
        self.indexes[key].add(okey, obj)
        return entry

    def _drop_entry(self, key: str, okey: ObjKey) -> None:
        old = self.objects[key].pop(okey, None)
        if old is not None:
            self._index_owners(key, old.obj, remove=True)
            self.indexes[key].remove(okey, old.obj)

    def _index_owners(self, key: str, obj: Obj, remove: bool = False) -> None:
        meta = obj["metadata"]
        for ref in meta.get("ownerReferences") or []:
            uid = ref.get("uid")
            if not uid:
                continue
            dep = (key, meta.get("namespace", ""), meta["name"])
            if remove:
                deps = self.owners.get(uid)
                if deps is not None:
                    deps.discard(dep)
                    if not deps:
                        del self.owners[uid]
            else:
                self.owners.setdefault(uid, set()).add(dep)

    def _commit(self, res: Resource, etype: str, obj: Obj, old: Obj | None) -> Entry:
        """Assign the next resourceVersion, store, journal, record and dispatch one change."""
        if self._dry_run:
            # dryRun=All: everything up to persistence happened; nothing is stored or sent.
            if old is not None:
                obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            else:
                obj["metadata"].pop("resourceVersion", None)
            return Entry(obj, dumps(obj))
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        meta = obj["metadata"]
        okey = (meta.get("namespace", ""), meta["name"])
        previous = self.objects[res.key].get(okey)
        if etype == "DELETED":
            self._drop_entry(res.key, okey)
            entry = Entry(obj, dumps(obj))
        else:
            entry = self._put_entry(res.key, obj)
        ev = Event(self.rv, etype, res.key, obj, entry.raw, old)
        # The history keeps bytes only (the previous version's bytes are shared with its
        # own record), so 20k events cost tens of MB rather than hundreds.
        self.history.append(
            HistoryRecord(
                self.rv,
                etype,
                res.key,
                entry.raw,
                previous.raw if previous and old is not None else None,
            )
        )
        if len(self.history) == self.history.maxlen:
            self.history_floor = self.history[0].rv - 1
        if self.files is not None and self.files.append(ev, okey):
            self.files.snapshot(self.rv, self.objects)
        watchers = self.watchers[res.key]
        if watchers:
            for w in watchers.candidates(obj, old):
                w.offer(ev)
        for listener in self.listeners:
            try:
                listener(ev)
            except Exception:
                # The change is committed; a failing subscriber must not turn it into an API error.
                log.exception("store listener %r failed on %s %s", listener, ev.type, ev.resource)
        return entry

    def _entry(self, res: Resource, namespace: str | None, name: str) -> Entry:
        entry = self.objects[res.key].get((namespace or "", name) if res.namespaced else ("", name))
        if entry is None:
            raise not_found(res.plural, res.group, name)
        return entry

    def _check_namespace(self, res: Resource, namespace: str | None, name: str) -> None:
        if not res.namespaced:
            return
        ns = self.objects["namespaces"].get(("", namespace or ""))
        if ns is None:
            raise not_found("namespaces", "", namespace or "")
        if (
            ns.obj["metadata"].get("deletionTimestamp")
            or ns.obj.get("status", {}).get("phase") == "Terminating"
        ):
            raise Forbidden(
                f'{res.key} "{name}" is forbidden: unable to create new content in namespace {namespace} because it is being terminated',
                name=name,
                group=res.group,
                kind=res.plural,
                causes=[
                    {
                        "reason": "NamespaceTerminating",
                        "message": f"namespace {namespace} is being terminated",
                        "field": "metadata.namespace",
                    }
                ],
            )

    def allocate_cluster_ip(self) -> str:
        """Return an unused ``<cluster_ip_base>.<1-254>`` address for a Service.

        InternalError (as kube-apiserver answers) when every address of the range is taken.
        """
        used = {e.obj.get("spec", {}).get("clusterIP") for e in self.objects["services"].values()}
        for _ in range(254):
            self._ip_counter = self._ip_counter % 254 + 1
            ip = f"{self.cluster_ip_base}.{self._ip_counter}"
            if ip not in used:
                return ip
        raise InternalError(
            "Internal error occurred: failed to allocate a serviceIP: range is full "
            f"({self.cluster_ip_base}.0/24)"
        )

    # ----------------------------------------------------------------- sync core

    def _create_sync(self, res: Resource, namespace: str | None, obj: Obj) -> Entry:
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = res.api_version
        obj["kind"] = res.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise BadRequest("metadata must be an object")
        if res.namespaced:
            ns = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != ns:
                raise BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            for _ in range(20):
                candidate = meta["generateName"] + "".join(
                    secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5)
                )
                if (meta.get("namespace", ""), candidate) not in self.objects[res.key]:
                    meta["name"] = candidate
                    break
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "resourceVersion", "selfLink"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if res.has_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        # Admission (NamespaceLifecycle) runs before validation, storage after it.
        self._check_namespace(res, meta.get("namespace"), str(meta.get("name") or ""))
        validation.default(res, obj, self)
        validation.validate(res, obj, None)
        name = meta["name"]
        if (meta.get("namespace", ""), name) in self.objects[res.key]:
            raise already_exists(res.plural, res.group, name)
        return self._commit(res, "ADDED", obj, None)

    def _update_sync(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        obj: Obj,
        subresource: str | None = None,
        owned: bool = False,
    ) -> Entry:
        # ``owned``: ``obj`` is already a private copy (mutate, patch), no need for another.
        if not owned:
            obj = copy.deepcopy(obj)
        meta = obj.get("metadata")
        if not isinstance(meta, dict):
            obj["metadata"] = meta = {}
        if meta.get("name") and meta["name"] != name:
            raise BadRequest(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if (
            res.namespaced
            and meta.get("namespace")
            and meta["namespace"] != (namespace or "default")
        ):
            raise BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        key = (namespace or "", name) if res.namespaced else ("", name)
        existing = self.objects[res.key].get(key)
        if existing is None:
            if res.create_on_update and subresource is None:
                meta["name"] = name
                return self._create_sync(res, namespace, obj)
            raise not_found(res.plural, res.group, name)
        old = existing.obj
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and str(rv) != old["metadata"]["resourceVersion"]:
            raise conflict(res.plural, res.group, name)
        if subresource == "status":
            # Only status and metadata.resourceVersion change: the rest is shared with the
            # stored version, which nothing mutates once stored.
            new = {**old, "metadata": dict(old["metadata"])}
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        elif subresource == "finalize":
            new = json.loads(existing.raw)
            new["spec"] = obj.get("spec") or {}
        else:
            new = obj
            new["apiVersion"] = res.api_version
            new["kind"] = res.kind
            nmeta = new["metadata"]
            ometa = old["metadata"]
            for k in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
                "generation",
            ):
                if k in ometa:
                    nmeta[k] = ometa[k]
                else:
                    nmeta.pop(k, None)
            nmeta["name"] = name
            if res.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            if res.key == "namespaces":
                # Only the finalize subresource changes a namespace's spec.finalizers.
                new["spec"] = copy.deepcopy(old.get("spec", {}))
            validation.default(res, new, self, old)
            validation.validate(res, new, old)
            if res.has_generation and new.get("spec") != old.get("spec"):
                nmeta["generation"] = int(ometa.get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            # A no-op update keeps the resourceVersion and sends no event, like etcd3 guaranteed updates.
            return existing
        nmeta = new["metadata"]
        if (
            nmeta.get("deletionTimestamp")
            and not nmeta.get("finalizers")
            and not nmeta.get("deletionGracePeriodSeconds")
            and not (res.key == "namespaces" and new.get("spec", {}).get("finalizers"))
        ):
            return self._commit(res, "DELETED", new, old)
        return self._commit(res, "MODIFIED", new, old)

    # ----------------------------------------------------------------- public async API

    async def create(
        self, resource: ResourceRef, namespace: str | None, obj: Mapping[str, Any]
    ) -> Obj:
        """Create ``obj`` (generateName honoured, defaults applied); AlreadyExists, Invalid, NotFound (namespace) or Forbidden."""
        return json.loads(self._create_sync(lookup(resource), namespace, dict(obj)).raw)

    async def get(self, resource: ResourceRef, namespace: str | None, name: str) -> Obj:
        """Return a copy of one object; raises NotFound."""
        return json.loads(self._entry(lookup(resource), namespace, name).raw)

    def get_raw(self, resource: ResourceRef, namespace: str | None, name: str) -> bytes:
        """Return one object's JSON bytes (for the HTTP layer); raises NotFound."""
        return self._entry(lookup(resource), namespace, name).raw

    def peek(self, resource: ResourceRef, namespace: str | None, name: str) -> Obj | None:
        """Return the stored object itself (read-only!) or None; no copy, for hot paths."""
        res = lookup(resource)
        entry = self.objects[res.key].get((namespace or "", name) if res.namespaced else ("", name))
        return entry.obj if entry else None

    async def list(
        self,
        resource: ResourceRef,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
    ) -> tuple[list[Obj], str]:
        """Return (copies of matching objects, the list's resourceVersion); BadRequest for bad selectors."""
        entries = self.select(resource, namespace, label_selector, field_selector)
        return [json.loads(e.raw) for e in entries], str(self.rv)

    def list_page(
        self,
        resource: ResourceRef,
        namespace: str | None,
        label_selector: str | None,
        field_selector: str | None,
        limit: int | None,
        continue_token: str | None,
    ) -> tuple[list[Entry], str, str | None, int | None]:
        """Return one page: (entries, resourceVersion, continue token or None, remainingItemCount)."""
        rv = str(self.rv)
        entries = self.select(resource, namespace, label_selector, field_selector)
        if continue_token:
            rv, start = decode_continue(continue_token)
            entries = [
                e
                for e in entries
                if (e.obj["metadata"].get("namespace", ""), e.obj["metadata"]["name"]) > start
            ]
        if limit and limit > 0 and len(entries) > limit:
            last = entries[limit - 1].obj["metadata"]
            token = encode_continue(rv, (last.get("namespace", ""), last["name"]))
            return entries[:limit], rv, token, len(entries) - limit
        return entries, rv, None, None

    async def update(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        obj: Mapping[str, Any],
        subresource: str | None = None,
    ) -> Obj:
        """Replace an object (``subresource="status"``: only its status); Conflict if metadata.resourceVersion is stale."""
        return json.loads(
            self._update_sync(lookup(resource), namespace, name, dict(obj), subresource).raw
        )

    async def mutate(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        fn: Callable[[Obj], Obj | None],
        subresource: str | None = None,
        *,
        copy_result: bool = True,
    ) -> Obj:
        """Apply ``fn`` to a fresh copy (it may mutate in place or return a new dict) and store it; NotFound if gone.

        Never conflicts: the read and the write happen without yielding to the loop. What
        ``fn`` puts into the object becomes the store's: it must not change it afterwards.
        ``copy_result=False`` returns the stored object itself, read-only, as ``peek`` does.
        """
        res = lookup(resource)
        current = json.loads(self._entry(res, namespace, name).raw)
        result = fn(current)
        new = current if result is None else result
        owned = result is None
        entry = self._update_sync(res, namespace, name, new, subresource, owned)
        return json.loads(entry.raw) if copy_result else entry.obj

    async def patch(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        patch: Any,
        patch_type: str = "application/strategic-merge-patch+json",
        subresource: str | None = None,
    ) -> Obj:
        """Patch an object with a strategic-merge, merge or JSON patch (content type names the kind)."""
        res = lookup(resource)
        current = json.loads(self._entry(res, namespace, name).raw)
        new = apply_patch(res, current, patch, patch_type)
        return json.loads(self._update_sync(res, namespace, name, new, subresource).raw)

    async def delete(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        **options: Unpack[DeleteOptions],
    ) -> Obj:
        """Delete (or mark for deletion, see the module docstring) and return the object's last state; NotFound."""
        obj, _ = self.delete_sync(resource, namespace, name, **options)
        return copy.deepcopy(obj)

    def create_sync(
        self, resource: ResourceRef, namespace: str | None, obj: Obj, dry_run: bool = False
    ) -> Entry:
        """Like ``create`` but returns the stored Entry, for the HTTP layer; ``dry_run`` stores nothing."""
        self._dry_run = dry_run
        try:
            return self._create_sync(lookup(resource), namespace, obj)
        finally:
            self._dry_run = False

    def update_sync(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        obj: Obj,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Entry:
        """Like ``update`` but returns the stored Entry, for the HTTP layer; ``dry_run`` stores nothing."""
        self._dry_run = dry_run
        try:
            return self._update_sync(lookup(resource), namespace, name, obj, subresource)
        finally:
            self._dry_run = False

    # ----------------------------------------------------------------- logs

    def log_path(self, namespace: str, pod: str, container: str, previous: bool = False) -> Path:
        """Where the kubelet writes a container's output (see the module docstring)."""
        base = self.state_dir if self.state_dir is not None else Path(".")
        suffix = ".previous.log" if previous else ".log"
        return base / "logs" / namespace / pod / f"{container}{suffix}"
