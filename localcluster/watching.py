"""Watches on the store: backlog from the history, live events through per-watch queues.

Semantics follow https://kubernetes.io/docs/reference/using-api/api-concepts/
(resourceVersion unset or "0": synthetic ADDED for the current state; N: every
change after N, or 410 Expired once N has left the history).
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TypedDict, Unpack

from .errors import BadRequest, Expired
from .records import Entry, Event, HistoryRecord, Obj, Watcher
from .resources import ResourceRef, lookup
from .selectors import make_matcher


class WatchQuery(TypedDict, total=False):
    """Which objects a watch follows, and from which resourceVersion on."""

    label_selector: str | Mapping[str, str] | None
    field_selector: str | None
    resource_version: str | None


class WatchMixin:
    """The watch half of the Store (it supplies ``select``, the history and the watcher sets)."""

    history: deque[HistoryRecord]
    history_floor: int
    watchers: dict[str, set[Watcher]]
    select: Callable[..., list[Entry]]

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
            for rec in self.history:
                if rec.rv > since and rec.resource == res.key:
                    old = json.loads(rec.old_raw) if rec.old_raw is not None else None
                    probe.offer(
                        Event(rec.rv, rec.type, rec.resource, json.loads(rec.raw), rec.raw, old)
                    )
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
