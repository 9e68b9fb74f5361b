"""Reads of the store through its indexes: selector queries, owners, orphans, selectors.

The lookup half of the Store (it supplies the objects, their owners and their indexes);
every answer is in key order, as etcd orders keys, and holds the stored entries themselves
(read-only, no copies).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .indexes import ResourceIndex
from .records import Entry, ObjKey
from .resources import Resource, ResourceRef, lookup
from .selectors import LabelSelector, Query, compile_query


class LookupMixin:
    """Queries over the Store's objects that use its indexes instead of scanning."""

    objects: dict[str, dict[ObjKey, Entry]]
    owners: dict[str, set[tuple[str, str, str]]]
    indexes: dict[str, ResourceIndex]

    def select(
        self,
        resource: ResourceRef,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | LabelSelector | None = None,
        field_selector: str | None = None,
        *,
        ordered: bool = True,
    ) -> list[Entry]:
        """Return matching entries sorted by (namespace, name), as etcd orders keys; no copies.

        ``label_selector`` may also be parsed requirements (``selectors.LabelSelector``);
        ``ordered=False`` skips the sort when the caller does not need the order.
        """
        res = lookup(resource)
        query = compile_query(
            res, namespace if res.namespaced else None, label_selector, field_selector
        )
        return self.select_query(res, query, ordered=ordered)

    def select_query(self, res: Resource, query: Query, *, ordered: bool = True) -> list[Entry]:
        """``select`` with a compiled query: the indexes narrow the candidates, the query decides."""
        entries = self.objects[res.key]
        keys = self.indexes[res.key].candidates(query)
        candidates: Any = entries if keys is None else keys
        if ordered:
            candidates = sorted(candidates)
        match = query.match
        if keys is None and not ordered:
            return [e for e in entries.values() if match(e.obj)]
        return [entries[k] for k in candidates if match(entries[k].obj)]

    def controlled_by(self, resource: ResourceRef, owner_uid: str) -> list[Entry]:
        """Objects of ``resource`` whose controller ownerReference names ``owner_uid``, in key order."""
        res = lookup(resource)
        entries = self.objects[res.key]
        found = []
        for key, namespace, name in sorted(self.owners.get(owner_uid, ())):
            if key != res.key:
                continue
            entry = entries.get((namespace, name))
            if entry is None:
                continue
            for ref in entry.obj["metadata"].get("ownerReferences") or []:
                if ref.get("controller") and ref.get("uid") == owner_uid:
                    found.append(entry)
                    break
        return found

    def orphans(self, resource: ResourceRef, namespace: str | None) -> list[Entry]:
        """Objects of ``resource`` in ``namespace`` without a controller, in key order."""
        res = lookup(resource)
        entries = self.objects[res.key]
        keys = self.indexes[res.key].orphans
        return [entries[k] for k in sorted(keys) if namespace is None or k[0] == (namespace or "")]

    def selecting(
        self, resource: ResourceRef, namespace: str | None, labels: Mapping[str, str]
    ) -> list[Entry]:
        """Candidates among ``resource`` in ``namespace`` whose own selector may match ``labels``.

        Every object that does match is among them, in key order; the caller matches exactly.
        """
        res = lookup(resource)
        entries = self.objects[res.key]
        keys = self.indexes[res.key].selecting(labels)
        ns = namespace or ""
        return [entries[k] for k in sorted(keys) if k[0] == ns]
