"""Secondary indexes of the store, so that lists, watches and controllers do not scan.

Every stored object is indexed by namespace, by each of its labels, by ``spec.nodeName``
(pods), by the (key, value) pair its own label selector requires (workloads, Services,
budgets: who selects a pod with these labels) and, when it has no controller, as an orphan
(what a workload may adopt). A lookup gives candidate keys; callers still match each
candidate exactly, so an index only ever narrows a scan, never decides a match.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from .records import Obj, ObjKey
from .selectors import Query, required_pairs

# Resources whose spec.selector is a plain label map rather than a metav1.LabelSelector.
MAP_SELECTORS = frozenset({"services", "replicationcontrollers"})
# Field selectors with an index of their own: (resource key, field path).
FIELD_INDEXES = {("pods", "spec.nodeName")}

Pair = tuple[str, str]


def selector_pair(resource: str, obj: Obj) -> Pair | None:
    """The smallest (key, value) pair that an object's own spec.selector requires, if any.

    Objects without a selector, or whose selector requires no single label value, give None:
    they are candidates for every set of labels.
    """
    spec = obj.get("spec")
    selector = spec.get("selector") if isinstance(spec, dict) else None
    if not isinstance(selector, dict):
        return None
    pairs = selector if resource in MAP_SELECTORS else selector.get("matchLabels")
    if not isinstance(pairs, dict) or not pairs:
        return None
    return min((str(k), str(v)) for k, v in pairs.items())


def _controlled(obj: Obj) -> bool:
    return any(ref.get("controller") for ref in obj["metadata"].get("ownerReferences") or [])


def _node(obj: Obj) -> str:
    spec = obj.get("spec")
    return str((spec.get("nodeName") if isinstance(spec, dict) else None) or "")


class ResourceIndex:
    """The indexes of one resource's objects."""

    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.namespaces: defaultdict[str, set[ObjKey]] = defaultdict(set)
        self.labels: defaultdict[Pair, set[ObjKey]] = defaultdict(set)
        self.nodes: defaultdict[str, set[ObjKey]] = defaultdict(set)
        self.selectors: defaultdict[Pair, set[ObjKey]] = defaultdict(set)
        # Objects whose selector needs a scan: no selector, or no single required value.
        self.unselective: set[ObjKey] = set()
        self.orphans: set[ObjKey] = set()

    def add(self, okey: ObjKey, obj: Obj) -> None:
        """Index a stored object."""
        self.namespaces[okey[0]].add(okey)
        for pair in (obj["metadata"].get("labels") or {}).items():
            self.labels[pair].add(okey)
        if self.resource == "pods":
            self.nodes[_node(obj)].add(okey)
        pair = selector_pair(self.resource, obj)
        if pair is None:
            self.unselective.add(okey)
        else:
            self.selectors[pair].add(okey)
        if not _controlled(obj):
            self.orphans.add(okey)

    def remove(self, okey: ObjKey, obj: Obj) -> None:
        """Forget an object as it was indexed (``obj`` is the version that was stored)."""
        _discard(self.namespaces, okey[0], okey)
        for pair in (obj["metadata"].get("labels") or {}).items():
            _discard(self.labels, pair, okey)
        if self.resource == "pods":
            _discard(self.nodes, _node(obj), okey)
        pair = selector_pair(self.resource, obj)
        if pair is None:
            self.unselective.discard(okey)
        else:
            _discard(self.selectors, pair, okey)
        self.orphans.discard(okey)

    def candidates(self, query: Query) -> Collection[ObjKey] | None:
        """The smallest indexed set that holds every match of ``query``; None: scan everything."""
        best: Collection[ObjKey] | None = None
        if query.namespace:
            best = self.namespaces.get(query.namespace, ())
        for pairs in required_pairs(query.labels):
            found = self._union(self.labels, pairs)
            if best is None or len(found) < len(best):
                best = found
        for key, op, value in query.fields:
            if op == "=" and (self.resource, key) in FIELD_INDEXES:
                found = self.nodes.get(value, ())
                if best is None or len(found) < len(best):
                    best = found
        return best

    def selecting(self, labels: Mapping[str, str]) -> set[ObjKey]:
        """Objects whose selector may match ``labels`` (all that do, and a few that do not)."""
        found = set(self.unselective)
        for pair in labels.items():
            keys = self.selectors.get(pair)
            if keys:
                found |= keys
        return found

    @staticmethod
    def _union(index: Mapping[Pair, set[ObjKey]], pairs: Iterable[Pair]) -> Collection[ObjKey]:
        sets = [index[p] for p in pairs if p in index]
        if len(sets) == 1:
            return sets[0]
        return set().union(*sets)


def _discard(index: dict[Any, set[ObjKey]], key: Any, okey: ObjKey) -> None:
    keys = index.get(key)
    if keys is not None:
        keys.discard(okey)
        if not keys:
            del index[key]
