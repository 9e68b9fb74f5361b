"""Controller plumbing: keyed work queues fed synchronously by the store's change listener."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..errors import Conflict, NotFound, StatusError
from ..selectors import labels_match, selector_from_label_selector
from ..store import Event, Store
from .events import EventRecorder

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


def obj_key(obj: dict[str, Any]) -> Key:
    """The queue key of a stored object."""
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


class Controller:
    """A level-triggered reconciler: events enqueue keys, one task reconciles them in order.

    Subclasses implement ``keys_for(event)`` (cheap, synchronous: it runs inside the store's
    commit) and ``reconcile(key)``. ``requeue(key, delay)`` schedules a later look, which is how
    deadlines (progressDeadlineSeconds, minReadySeconds, backoffs) are honoured without polling.
    """

    name = "controller"
    component = "controller-manager"
    owns = ""  # the resource whose objects are this controller's keys; "" when none is

    def __init__(self, store: Store, recorder: EventRecorder) -> None:
        self.store = store
        self.recorder = recorder
        self._pending: dict[Key, None] = {}
        self._wake = asyncio.Event()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._task: asyncio.Task[None] | None = None

    def keys_for(self, event: Event) -> Iterable[Key]:
        """The keys a store change concerns: an owned object itself, else ``related_keys``."""
        if self.owns and event.resource == self.owns:
            return [obj_key(event.obj)]
        return self.related_keys(event)

    def related_keys(self, event: Event) -> Iterable[Key]:
        """The owned objects that a change to another resource concerns."""
        return ()

    async def reconcile(self, key: Key) -> None:
        """Bring the world in line with the object named by ``key``."""

    def initial_keys(self) -> Iterable[Key]:
        """Keys to reconcile at start: every object of the resource it owns."""
        return [obj_key(e.obj) for e in self.store.select(self.owns)] if self.owns else ()

    def selecting(
        self, namespace: str, labels: dict[str, str], *, empty_matches_all: bool = False
    ) -> list[Key]:
        """The owned objects in ``namespace`` whose label selector matches ``labels``.

        An absent selector matches nothing. An empty one matches every pod for a budget
        (``empty_matches_all``) but none for a workload, which would otherwise adopt them all.
        """
        keys = []
        for entry in self.store.selecting(self.owns, namespace, labels):
            selector = selector_from_label_selector((entry.obj.get("spec") or {}).get("selector"))
            if selector is None or (not selector and not empty_matches_all):
                continue
            if labels_match(selector, labels):
                keys.append(obj_key(entry.obj))
        return keys

    async def claim(
        self,
        resource: str,
        owner: dict[str, Any],
        adoptable: Callable[[dict[str, Any]], bool],
        adopt: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    ) -> list[dict[str, Any]]:
        """The objects of ``resource`` that ``owner`` controls, in store order (ClaimObjects).

        An orphan that ``adoptable`` accepts is adopted in place; one controlled by another
        owner is left alone.
        """
        uid = owner["metadata"]["uid"]
        namespace = owner["metadata"]["namespace"]
        owned = [
            (obj_key(e.obj), e.obj)
            for e in self.store.controlled_by(resource, uid)
            if e.obj["metadata"].get("namespace") == namespace
        ]
        orphans = [
            (obj_key(e.obj), e.obj)
            for e in self.store.orphans(resource, namespace)
            if adoptable(e.obj)
        ]
        claimed = []
        for _, obj in sorted(owned + orphans, key=lambda item: item[0]):
            if controller_of(obj) is None:
                obj = await adopt(obj)
            claimed.append(obj)
        return claimed

    def on_event(self, event: Event) -> None:
        """Store listener entry point: enqueue the keys of one change."""
        for key in self.keys_for(event):
            self.enqueue(key)

    def enqueue(self, key: Key) -> None:
        """Queue ``key`` for reconciliation (duplicates collapse)."""
        self._pending[key] = None
        self._wake.set()

    def requeue(self, key: Key, delay: float) -> None:
        """Reconcile ``key`` again after ``delay`` seconds (the earliest request wins)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.0)
        timer = self._timers.get(key)
        if timer is not None and not timer.cancelled() and timer.when() <= when:
            return
        if timer is not None:
            timer.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.enqueue(key)

    def start(self) -> None:
        """Start the worker task."""
        for key in self.initial_keys():
            self.enqueue(key)
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop the worker and cancel pending timers."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                key = next(iter(self._pending))
                del self._pending[key]
                try:
                    await self.reconcile(key)
                except (NotFound, Conflict):
                    # The object changed under us; its own event brings us back.
                    self.requeue(key, 0.05)
                except StatusError as exc:
                    log.warning("%s: %s/%s: %s", self.name, key[0], key[1], exc)
                    self.requeue(key, 1.0)
                except Exception:
                    log.exception("%s: reconciling %s/%s failed", self.name, key[0], key[1])
                    self.requeue(key, 1.0)
                # Let the HTTP layer breathe between keys when a burst arrives.
                await asyncio.sleep(0)
