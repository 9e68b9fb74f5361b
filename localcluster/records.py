"""Plain records shared by the store, the watch machinery and the REST layer."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import BadRequest
from .resources import Resource

Obj = dict[str, Any]
ObjKey = tuple[str, str]
# Events a watch may have pending; more than the history holds, so replays always fit.
MAX_PENDING = 50000


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


@dataclass(slots=True)
class HistoryRecord:
    """A change as the watch history keeps it: serialized object and previous version."""

    rv: int
    type: str
    resource: str
    raw: bytes
    old_raw: bytes | None


class Watcher:
    """A registered watch: matching events are pushed to its queue as they happen."""

    def __init__(
        self,
        resource: Resource,
        match: Callable[[Mapping[str, Any]], bool],
        pair: tuple[str, str] | None = None,
    ) -> None:
        self.resource = resource
        self.match = match
        # A label every object this watch matches carries (for the store's watcher index).
        self.pair = pair
        self.queue: asyncio.Queue[tuple[str, Obj, bytes] | None] = asyncio.Queue()
        self.closed = False

    def _put(self, item: tuple[str, Obj, bytes]) -> None:
        if self.closed:
            return
        if self.queue.qsize() >= MAX_PENDING:
            # A consumer this far behind is ended, as kube-apiserver ends slow watchers;
            # it re-lists and watches again.
            self.closed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(item)

    def offer(self, ev: Event) -> None:
        """Queue ``ev`` if it concerns this watch, as ADDED/MODIFIED/DELETED from its point of view."""
        new_match = self.match(ev.obj)
        if ev.type == "DELETED":
            if new_match:
                self._put(("DELETED", ev.obj, ev.raw))
            return
        old_match = ev.old is not None and self.match(ev.old)
        if new_match and old_match:
            self._put(("MODIFIED", ev.obj, ev.raw))
        elif new_match:
            self._put(("ADDED", ev.obj, ev.raw))
        elif old_match:
            # An object leaving the selector is a deletion from this watch's view.
            self._put(("DELETED", ev.obj, ev.raw))


def encode_continue(rv: str, start: ObjKey) -> str:
    """A continue token in kube-apiserver's format (base64 JSON of rv and start key)."""
    token = {"v": "meta.k8s.io/v1", "rv": int(rv), "start": f"{start[0]}/{start[1]}\x00"}
    return base64.b64encode(dumps(token)).decode()


def decode_continue(token: str) -> tuple[str, ObjKey]:
    """Parse a continue token; BadRequest when it is not one of ours."""
    try:
        data = json.loads(base64.b64decode(token + "=" * (-len(token) % 4)))
        start = data["start"].rstrip("\x00")
        ns, _, name = start.partition("/")
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError
        return str(data["rv"]), (ns, name)
    except (ValueError, KeyError, TypeError, binascii.Error, AttributeError):
        raise BadRequest("continue key is not valid: illegal base64 data or token") from None
