"""Watches on the store: backlog from the history, live events through per-watch queues.

Semantics follow https://kubernetes.io/docs/reference/using-api/api-concepts/
(resourceVersion unset or "0": synthetic ADDED for the current state; N: every
change after N, or 410 Expired once N has left the history).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TypedDict, Unpack

from .errors import BadRequest, Expired
from .records import Entry, Event, HistoryRecord, Obj, Watcher, dumps
from .resources import Resource, ResourceRef, lookup
from .selectors import Query, compile_query

Pair = tuple[str, str]


class WatchQuery(TypedDict, total=False):
    """Which objects a watch follows, and from which resourceVersion on."""

    label_selector: str | Mapping[str, str] | None
    field_selector: str | None
    resource_version: str | None


class WatcherSet:
    """The watches of one resource, indexed by a label each one requires.

    A watch whose label selector requires one value of a key (``app=web``) is filed under
    that pair; a change is offered only to the watches filed under one of its object's labels
    (before or after the change) and to the unfiled ones, so a change costs the watches that
    may want it rather than every watch of the resource.
    """

    def __init__(self) -> None:
        self._all: set[Watcher] = set()
        self._unfiled: set[Watcher] = set()
        self._by_pair: dict[Pair, set[Watcher]] = {}

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[Watcher]:
        return iter(list(self._all))

    def add(self, watcher: Watcher) -> None:
        """Register a watch."""
        self._all.add(watcher)
        if watcher.pair is None:
            self._unfiled.add(watcher)
        else:
            self._by_pair.setdefault(watcher.pair, set()).add(watcher)

    def discard(self, watcher: Watcher) -> None:
        """Unregister a watch (absent is fine)."""
        if watcher not in self._all:
            return
        self._all.discard(watcher)
        if watcher.pair is None:
            self._unfiled.discard(watcher)
            return
        filed = self._by_pair.get(watcher.pair)
        if filed is not None:
            filed.discard(watcher)
            if not filed:
                del self._by_pair[watcher.pair]

    def candidates(self, obj: Obj, old: Obj | None) -> list[Watcher]:
        """The watches that may want a change of ``obj`` (previously ``old``)."""
        if not self._by_pair:
            return list(self._unfiled)
        found = list(self._unfiled)
        seen: set[Pair] = set()
        for version in (obj, old):
            if version is None:
                continue
            for pair in (version["metadata"].get("labels") or {}).items():
                if pair in seen:
                    continue
                seen.add(pair)
                filed = self._by_pair.get(pair)
                if filed:
                    found.extend(filed)
        return found


def _filing_pair(query: Query) -> Pair | None:
    # Only a single required value is a key every matching object carries.
    for key, op, values in query.labels:
        if op in ("=", "in") and len(values) == 1:
            return (key, next(iter(values)))
    return None


def _needles(query: Query) -> list[bytes]:
    """Byte strings that the serialized form of every object ``query`` matches contains.

    Stored objects are serialized by ``records.dumps``: a label the selector requires is
    ``"key":"value"`` in the bytes, and the namespace ``"namespace":"ns"``. A version
    without them cannot match, so the history replay skips it without decoding it.
    """
    needles = []
    pair = _filing_pair(query)
    if pair is not None:
        needles.append(dumps({pair[0]: pair[1]})[1:-1])
    if query.namespace:
        needles.append(dumps({"namespace": query.namespace})[1:-1])
    return needles


def _holds(raw: bytes, needles: list[bytes]) -> bool:
    return all(needle in raw for needle in needles)


def new_watcher(res: Resource, query: Query) -> Watcher:
    """A watcher for ``query``, filed under a label its selector requires when there is one."""
    return Watcher(res, query.match, _filing_pair(query))


class WatchMixin:
    """The watch half of the Store (it supplies ``select``, the history and the watcher sets)."""

    history: deque[HistoryRecord]
    history_floor: int
    watchers: dict[str, WatcherSet]
    select_query: Callable[..., list[Entry]]

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
        query = compile_query(
            res, namespace if res.namespaced else None, label_selector, field_selector
        )
        backlog: list[tuple[str, Obj, bytes]] = []
        if resource_version in (None, "", "0"):
            for e in self.select_query(res, query):
                backlog.append(("ADDED", e.obj, e.raw))
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise BadRequest(f'invalid resource version "{resource_version}"') from None
            if since < self.history_floor:
                raise Expired(f"too old resource version: {since} ({self.history_floor + 1})")
            # The history is in rv order: walk back from the newest to ``since`` only, and
            # decode only the records whose bytes may match (see ``_needles``).
            needles = _needles(query)
            missed: list[HistoryRecord] = []
            for rec in reversed(self.history):
                if rec.rv <= since:
                    break
                if rec.resource == res.key and (
                    _holds(rec.raw, needles)
                    or (rec.old_raw is not None and _holds(rec.old_raw, needles))
                ):
                    missed.append(rec)
            probe = new_watcher(res, query)
            for rec in reversed(missed):
                old = json.loads(rec.old_raw) if rec.old_raw is not None else None
                probe.offer(
                    Event(rec.rv, rec.type, rec.resource, json.loads(rec.raw), rec.raw, old)
                )
            while not probe.queue.empty():
                item = probe.queue.get_nowait()
                assert item is not None
                backlog.append(item)
        watcher = new_watcher(res, query)
        self.watchers[res.key].add(watcher)
        return watcher, backlog

    def close_watch(self, watcher: Watcher) -> None:
        """Unregister a watcher."""
        self.watchers[watcher.resource.key].discard(watcher)

    async def watch(
        self,
        resource: ResourceRef,
        namespace: str | None = None,
        *,
        timeout_seconds: float | None = None,
        **query: Unpack[WatchQuery],
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Yield (event_type, object copy) for ADDED/MODIFIED/DELETED; raises Expired for a too-old rv.

        The watch is registered at the first ``__anext__``; pass the resourceVersion of a
        previous ``list`` to miss nothing. Ends after ``timeout_seconds`` if given.
        """
        watcher, backlog = self.open_watch(resource, namespace, **query)
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

    def shutdown_watchers(self) -> None:
        """End every open watch (used at server shutdown)."""
        for ws in self.watchers.values():
            for w in ws:
                w.queue.put_nowait(None)
