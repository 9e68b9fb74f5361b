"""The object store: one global resourceVersion, persistence, watch history.

This is the in-process API the controllers and the kubelet use directly (no
HTTP); the REST server in ``server.py`` is a thin layer over it.

Resources are named by key: ``"pods"``, ``"nodes"``, ``"deployments.apps"``,
``"poddisruptionbudgets.policy"``, ``"endpointslices.discovery.k8s.io"`` (see
``resources.py``; a ``Resource`` object is accepted wherever a key is). Cluster-
scoped resources take ``namespace=None`` (or ""). Objects are plain dicts in the
wire format; every dict returned is a private copy the caller may mutate.

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

import asyncio
import base64
import binascii
import copy
import json
import os
import secrets
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import validation
from .errors import (
    BadRequest,
    Expired,
    Forbidden,
    already_exists,
    conflict,
    not_found,
)
from .resources import RESOURCES, Resource, lookup
from .selectors import make_matcher

Obj = dict[str, Any]
ObjKey = tuple[str, str]
ResourceRef = str | Resource

HISTORY_SIZE = 20000
COMPACT_EVERY = 5000
BOOKMARK_INTERVAL = 15.0


def dumps(obj: Any) -> bytes:
    """Serialize compactly, as the wire format."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def now_rfc3339(delta_seconds: float = 0) -> str:
    """Return the current UTC time (plus a delta) as an RFC 3339 string with second precision."""
    t = datetime.now(UTC) + timedelta(seconds=delta_seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(slots=True)
class Entry:
    """A stored object and its serialized form (never mutated once stored)."""

    obj: Obj
    raw: bytes


@dataclass(slots=True)
class Event:
    """One change in the history: the object after it (before it, for DELETED)."""

    rv: int
    type: str
    resource: str
    obj: Obj
    raw: bytes
    old: Obj | None


class Watcher:
    """A registered watch: matching events are pushed to its queue as they happen."""

    def __init__(self, resource: Resource, match: Callable[[Mapping[str, Any]], bool]) -> None:
        self.resource = resource
        self.match = match
        self.queue: asyncio.Queue[tuple[str, Obj, bytes] | None] = asyncio.Queue()

    def offer(self, ev: Event) -> None:
        """Queue ``ev`` if it concerns this watch, as ADDED/MODIFIED/DELETED from its point of view."""
        new_match = self.match(ev.obj)
        if ev.type == "DELETED":
            if new_match:
                self.queue.put_nowait(("DELETED", ev.obj, ev.raw))
            return
        old_match = ev.old is not None and self.match(ev.old)
        if new_match and old_match:
            self.queue.put_nowait(("MODIFIED", ev.obj, ev.raw))
        elif new_match:
            self.queue.put_nowait(("ADDED", ev.obj, ev.raw))
        elif old_match:
            # An object leaving the selector is a deletion from this watch's view.
            self.queue.put_nowait(("DELETED", ev.obj, ev.raw))


class Store:
    """All objects of the cluster with a single resourceVersion sequence."""

    def __init__(
        self, state_dir: str | Path | None = None, history_size: int = HISTORY_SIZE
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir else None
        self.rv = 0
        self.objects: dict[str, dict[ObjKey, Entry]] = {r.key: {} for r in RESOURCES}
        self.history: deque[Event] = deque(maxlen=history_size)
        # Events at or before this rv are not in the history (restart or compaction).
        self.history_floor = 0
        self.watchers: dict[str, set[Watcher]] = {r.key: set() for r in RESOURCES}
        self.listeners: list[Callable[[Event], None]] = []
        self.owners: dict[str, set[tuple[str, str, str]]] = {}
        self._journal: Any = None
        self._journal_count = 0
        self._ip_counter = 0
        self.cluster_ip_base = "10.96"

    # ----------------------------------------------------------------- persistence

    def load(self) -> None:
        """Load the snapshot and journal from the state dir, then compact them."""
        if self.state_dir is None:
            self._bootstrap()
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        snap = self.state_dir / "state.json"
        journal = self.state_dir / "journal.jsonl"
        if snap.exists():
            data = json.loads(snap.read_text())
            self.rv = int(data.get("resourceVersion", 0))
            for key, items in data.get("objects", {}).items():
                if key in self.objects:
                    for obj in items:
                        self._put_entry(key, obj)
        if journal.exists():
            with journal.open("rb") as fh:
                for line in fh:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        break  # a torn last line after a crash
                    key = rec["r"]
                    if key not in self.objects:
                        continue
                    self.rv = max(self.rv, int(rec["rv"]))
                    if rec["op"] == "put":
                        self._put_entry(key, rec["obj"])
                    else:
                        self._drop_entry(key, (rec["ns"], rec["name"]))
        self._ip_counter = len(self.objects["services"])
        self._write_snapshot()
        self._bootstrap()
        # Like a compacted etcd: changes before start-up are not replayed to watches.
        self.history.clear()
        self.history_floor = self.rv

    def _bootstrap(self) -> None:
        # The namespaces every cluster has; created once, then persisted.
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            if ("", ns) not in self.objects["namespaces"]:
                self._create_sync(lookup("namespaces"), None, {"metadata": {"name": ns}})

    def _write_snapshot(self) -> None:
        if self.state_dir is None:
            return
        if self._journal is not None:
            self._journal.close()
        snap = self.state_dir / "state.json"
        tmp = snap.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(b'{"resourceVersion":' + str(self.rv).encode() + b',"objects":{')
            first = True
            for key, entries in self.objects.items():
                if not first:
                    fh.write(b",")
                first = False
                fh.write(dumps(key) + b":[" + b",".join(e.raw for e in entries.values()) + b"]")
            fh.write(b"}}")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, snap)
        self._journal = (self.state_dir / "journal.jsonl").open("wb")
        self._journal_count = 0

    def _journal_write(self, ev: Event, key: ObjKey) -> None:
        if self._journal is None:
            return
        if ev.type == "DELETED":
            line = dumps({"rv": ev.rv, "op": "del", "r": ev.resource, "ns": key[0], "name": key[1]})
        else:
            line = b'{"rv":%d,"op":"put","r":%s,"obj":%s}' % (ev.rv, dumps(ev.resource), ev.raw)
        self._journal.write(line + b"\n")
        # Flushed to the OS per write: survives a SIGKILL of localcluster.
        self._journal.flush()
        self._journal_count += 1
        if self._journal_count >= COMPACT_EVERY:
            self._write_snapshot()

    def close(self) -> None:
        """Write a final snapshot and close the journal."""
        if self.state_dir is not None and self._journal is not None:
            self._write_snapshot()
            self._journal.close()
            self._journal = None

    # ----------------------------------------------------------------- internals

    def _put_entry(self, key: str, obj: Obj) -> Entry:
        meta = obj["metadata"]
        okey = (meta.get("namespace", ""), meta["name"])
        old = self.objects[key].get(okey)
        if old is not None:
            self._index_owners(key, old.obj, remove=True)
        entry = Entry(obj, dumps(obj))
        self.objects[key][okey] = entry
        self._index_owners(key, obj)
        return entry

    def _drop_entry(self, key: str, okey: ObjKey) -> None:
        old = self.objects[key].pop(okey, None)
        if old is not None:
            self._index_owners(key, old.obj, remove=True)

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
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        meta = obj["metadata"]
        okey = (meta.get("namespace", ""), meta["name"])
        if etype == "DELETED":
            self._drop_entry(res.key, okey)
            entry = Entry(obj, dumps(obj))
        else:
            entry = self._put_entry(res.key, obj)
        ev = Event(self.rv, etype, res.key, obj, entry.raw, old)
        self.history.append(ev)
        if len(self.history) == self.history.maxlen:
            self.history_floor = self.history[0].rv - 1
        self._journal_write(ev, okey)
        for w in self.watchers[res.key]:
            w.offer(ev)
        for listener in self.listeners:
            listener(ev)
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
        """Return an unused 10.96.x.y address for a Service."""
        used = {e.obj.get("spec", {}).get("clusterIP") for e in self.objects["services"].values()}
        while True:
            self._ip_counter += 1
            ip = f"{self.cluster_ip_base}.{(self._ip_counter >> 8) & 255}.{self._ip_counter & 255}"
            if ip not in used and not ip.endswith(".0"):
                return ip

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
        validation.default(res, obj, self)
        validation.validate(res, obj, None)
        name = meta["name"]
        if (meta.get("namespace", ""), name) in self.objects[res.key]:
            raise already_exists(res.plural, res.group, name)
        self._check_namespace(res, meta.get("namespace"), name)
        return self._commit(res, "ADDED", obj, None)

    def _update_sync(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        obj: Obj,
        subresource: str | None = None,
    ) -> Entry:
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
            new = copy.deepcopy(old)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        elif subresource == "finalize":
            new = copy.deepcopy(old)
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

    def _delete_sync(
        self,
        res: Resource,
        namespace: str | None,
        name: str,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> tuple[Obj, bool]:
        """Delete or mark for deletion; returns (object, removed_now)."""
        entry = self._entry(res, namespace, name)
        old = entry.obj
        if preconditions:
            if preconditions.get("uid") and preconditions["uid"] != old["metadata"].get("uid"):
                raise conflict(
                    res.plural,
                    res.group,
                    name,
                    f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object meta: {old['metadata'].get('uid')}",
                )
            if (
                preconditions.get("resourceVersion")
                and preconditions["resourceVersion"] != old["metadata"]["resourceVersion"]
            ):
                raise conflict(
                    res.plural,
                    res.group,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}, ResourceVersion in object meta: {old['metadata']['resourceVersion']}",
                )
        new = copy.deepcopy(old)
        meta = new["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if propagation_policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        elif propagation_policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        if (
            propagation_policy in ("Orphan", "Foreground")
            and "orphan" in finalizers
            and "foregroundDeletion" in finalizers
        ):
            finalizers.remove(
                "orphan" if propagation_policy == "Foreground" else "foregroundDeletion"
            )
        period = 0
        if res.key == "pods":
            if grace_period_seconds is not None:
                period = int(grace_period_seconds)
            else:
                period = int(new.get("spec", {}).get("terminationGracePeriodSeconds", 30) or 0)
            if not new.get("spec", {}).get("nodeName"):
                period = 0
            if new.get("status", {}).get("phase") in ("Failed", "Succeeded"):
                period = 0
            if period < 0:
                period = 1
        elif res.key == "namespaces" and (
            "kubernetes" in (new.get("spec", {}).get("finalizers") or []) or finalizers
        ):
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now_rfc3339()
                meta["deletionGracePeriodSeconds"] = 0
            new.setdefault("status", {})["phase"] = "Terminating"
            if finalizers:
                meta["finalizers"] = finalizers
            if new == old:
                return new, False
            return self._commit(res, "MODIFIED", new, old).obj, False
        if meta.get("deletionTimestamp"):
            current = meta.get("deletionGracePeriodSeconds")
            if (
                current is not None
                and period >= int(current)
                and finalizers == (meta.get("finalizers") or [])
            ):
                # Already being deleted at least as fast: nothing changes.
                if not finalizers and int(current) == 0:
                    return self._commit(res, "DELETED", new, old).obj, True
                return new, False
        if period > 0:
            if not meta.get("deletionTimestamp") or period < int(
                meta.get("deletionGracePeriodSeconds") or 0
            ):
                meta["deletionTimestamp"] = now_rfc3339(period)
                meta["deletionGracePeriodSeconds"] = period
                if res.has_generation or "generation" in meta:
                    meta["generation"] = int(meta.get("generation", 0)) + 1
            if finalizers:
                meta["finalizers"] = finalizers
            return self._commit(res, "MODIFIED", new, old).obj, False
        if finalizers:
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now_rfc3339()
                if "generation" in meta:
                    meta["generation"] = int(meta["generation"]) + 1
            meta["deletionGracePeriodSeconds"] = 0
            meta["finalizers"] = finalizers
            if new == old:
                return new, False
            return self._commit(res, "MODIFIED", new, old).obj, False
        if res.key == "pods":
            meta.setdefault("deletionTimestamp", now_rfc3339())
            meta["deletionGracePeriodSeconds"] = 0
        return self._commit(res, "DELETED", new, old).obj, True

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

    def select(
        self,
        resource: ResourceRef,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
    ) -> list[Entry]:
        """Return matching entries sorted by (namespace, name), as etcd orders keys; no copies."""
        res = lookup(resource)
        match = make_matcher(
            res, namespace if res.namespaced else None, label_selector, field_selector
        )
        entries = self.objects[res.key]
        keys = sorted(entries)
        if namespace and res.namespaced:
            keys = [k for k in keys if k[0] == namespace]
        return [entries[k] for k in keys if match(entries[k].obj)]

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
            rv, start = _decode_continue(continue_token)
            entries = [
                e
                for e in entries
                if (e.obj["metadata"].get("namespace", ""), e.obj["metadata"]["name"]) > start
            ]
        if limit and limit > 0 and len(entries) > limit:
            last = entries[limit - 1].obj["metadata"]
            token = _encode_continue(rv, (last.get("namespace", ""), last["name"]))
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
    ) -> Obj:
        """Apply ``fn`` to a fresh copy (it may mutate in place or return a new dict) and store it; NotFound if gone.

        Never conflicts: the read and the write happen without yielding to the loop.
        """
        res = lookup(resource)
        current = json.loads(self._entry(res, namespace, name).raw)
        result = fn(current)
        new = current if result is None else result
        return json.loads(self._update_sync(res, namespace, name, new, subresource).raw)

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
        from .patch import apply_patch

        res = lookup(resource)
        current = json.loads(self._entry(res, namespace, name).raw)
        target = current if subresource != "status" else current
        new = apply_patch(res, target, patch, patch_type)
        return json.loads(self._update_sync(res, namespace, name, new, subresource).raw)

    async def delete(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> Obj:
        """Delete (or mark for deletion, see the module docstring) and return the object's last state; NotFound."""
        obj, _ = self._delete_sync(
            lookup(resource),
            namespace,
            name,
            grace_period_seconds,
            propagation_policy,
            preconditions,
        )
        return copy.deepcopy(obj)

    def delete_sync(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> tuple[Obj, bool]:
        """Like ``delete`` but returns (stored object, removed_now) without copying, for the HTTP layer."""
        return self._delete_sync(
            lookup(resource),
            namespace,
            name,
            grace_period_seconds,
            propagation_policy,
            preconditions,
        )

    def create_sync(self, resource: ResourceRef, namespace: str | None, obj: Obj) -> Entry:
        """Like ``create`` but returns the stored Entry, for the HTTP layer."""
        return self._create_sync(lookup(resource), namespace, obj)

    def update_sync(
        self,
        resource: ResourceRef,
        namespace: str | None,
        name: str,
        obj: Obj,
        subresource: str | None = None,
    ) -> Entry:
        """Like ``update`` but returns the stored Entry, for the HTTP layer."""
        return self._update_sync(lookup(resource), namespace, name, obj, subresource)

    # ----------------------------------------------------------------- watch

    def open_watch(
        self,
        resource: ResourceRef,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
    ) -> tuple[Watcher, list[tuple[str, Obj, bytes]]]:
        """Register a watcher; return it with the backlog to send first. Expired if the rv is too old.

        Unset or "0" resourceVersion: synthetic ADDED for every matching object;
        N: every change after N from the history.
        """
        res = lookup(resource)
        match = make_matcher(
            res, namespace if res.namespaced else None, label_selector, field_selector
        )
        backlog: list[tuple[str, Obj, bytes]] = []
        if resource_version in (None, "", "0"):
            for e in self.select(res, namespace, label_selector, field_selector):
                backlog.append(("ADDED", e.obj, e.raw))
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise BadRequest(f'invalid resource version "{resource_version}"') from None
            if since < self.history_floor:
                raise Expired(f"too old resource version: {since} ({self.history_floor + 1})")
            probe = Watcher(res, match)
            for ev in self.history:
                if ev.rv > since and ev.resource == res.key:
                    probe.offer(ev)
            while not probe.queue.empty():
                item = probe.queue.get_nowait()
                assert item is not None
                backlog.append(item)
        watcher = Watcher(res, match)
        self.watchers[res.key].add(watcher)
        return watcher, backlog

    def close_watch(self, watcher: Watcher) -> None:
        """Unregister a watcher."""
        self.watchers[watcher.resource.key].discard(watcher)

    async def watch(
        self,
        resource: ResourceRef,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        timeout_seconds: float | None = None,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Yield (event_type, object copy) for ADDED/MODIFIED/DELETED; raises Expired for a too-old rv.

        The watch is registered at the first ``__anext__``; pass the resourceVersion of a
        previous ``list`` to miss nothing. Ends after ``timeout_seconds`` if given.
        """
        watcher, backlog = self.open_watch(
            resource, namespace, label_selector, field_selector, resource_version
        )
        try:
            for etype, _obj, raw in backlog:
                yield etype, json.loads(raw)
            loop = asyncio.get_running_loop()
            deadline = None if timeout_seconds is None else loop.time() + timeout_seconds
            while True:
                if deadline is None:
                    item = await watcher.queue.get()
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return
                    try:
                        item = await asyncio.wait_for(watcher.queue.get(), remaining)
                    except TimeoutError:
                        return
                if item is None:
                    return
                yield item[0], json.loads(item[2])
        finally:
            self.close_watch(watcher)

    # ----------------------------------------------------------------- logs

    def log_path(self, namespace: str, pod: str, container: str, previous: bool = False) -> Path:
        """Where the kubelet writes a container's output (see the module docstring)."""
        base = self.state_dir if self.state_dir is not None else Path(".")
        suffix = ".previous.log" if previous else ".log"
        return base / "logs" / namespace / pod / f"{container}{suffix}"

    def shutdown_watchers(self) -> None:
        """End every open watch (used at server shutdown)."""
        for ws in self.watchers.values():
            for w in ws:
                w.queue.put_nowait(None)


def _encode_continue(rv: str, start: ObjKey) -> str:
    token = {"v": "meta.k8s.io/v1", "rv": int(rv), "start": f"{start[0]}/{start[1]}\x00"}
    return base64.b64encode(dumps(token)).decode()


def _decode_continue(token: str) -> tuple[str, ObjKey]:
    try:
        data = json.loads(base64.b64decode(token + "=" * (-len(token) % 4)))
        start = data["start"].rstrip("\x00")
        ns, _, name = start.partition("/")
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError
        return str(data["rv"]), (ns, name)
    except (ValueError, KeyError, TypeError, binascii.Error, AttributeError):
        raise BadRequest("continue key is not valid: illegal base64 data or token") from None
