"""Watch streams over HTTP: newline-delimited {"type","object"} events.

Framing, BOOKMARK and ERROR events follow staging/src/k8s.io/apiserver/pkg/
endpoints/handlers/watch.go and https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from . import tables
from .errors import Expired, invalid
from .query import as_bool, as_int
from .resources import Resource
from .store import BOOKMARK_INTERVAL, Store, dumps

JSON = "application/json"


async def watch(
    store: Store,
    request: web.Request,
    res: Resource,
    namespace: str | None,
    extra_field: str | None,
) -> web.StreamResponse:
    """A watch stream: newline-delimited {"type","object"} events, BOOKMARKs when asked."""
    q = request.query
    fs = q.get("fieldSelector")
    if extra_field:
        fs = f"{fs},{extra_field}" if fs else extra_field
    timeout = as_int(q, "timeoutSeconds")
    bookmarks = as_bool(q.get("allowWatchBookmarks"))
    initial = as_bool(q.get("sendInitialEvents"))
    rv = q.get("resourceVersion")
    if initial:
        # apimachinery/pkg/apis/meta/internalversion/validation: streaming lists need both.
        causes = []
        if q.get("resourceVersionMatch") != "NotOlderThan":
            causes.append(
                {
                    "reason": "FieldValueForbidden",
                    "message": "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    "field": "resourceVersionMatch",
                }
            )
        if not bookmarks:
            causes.append(
                {
                    "reason": "FieldValueForbidden",
                    "message": "Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true",
                    "field": "allowWatchBookmarks",
                }
            )
        if causes:
            raise invalid("ListOptions", "meta.k8s.io", "", causes)
    resp = web.StreamResponse(
        status=200, headers={"Content-Type": JSON, "Cache-Control": "no-cache, private"}
    )
    resp.enable_chunked_encoding()
    try:
        watcher, backlog = store.open_watch(
            res, namespace, q.get("labelSelector"), fs, None if initial else rv
        )
    except Expired as err:
        await resp.prepare(request)
        status = err.status()
        status.pop("details", None)
        await resp.write(b'{"type":"ERROR","object":' + dumps(status) + b"}\n")
        await resp.write_eof()
        return resp
    as_table = tables.wants_table(request.headers.get("Accept", ""))
    headers_sent = False

    def line(etype: str, obj: dict[str, Any], raw: bytes) -> bytes:
        nonlocal headers_sent
        if not as_table:
            return _event_line(etype, raw)
        # Column definitions travel with the first Table only, as kube-apiserver does.
        tbl = tables.table(
            res,
            [obj],
            {"resourceVersion": obj["metadata"]["resourceVersion"]},
            not headers_sent,
            include=request.query.get("includeObject", "Metadata"),
        )
        headers_sent = True
        return _event_line(etype, dumps(tbl))

    try:
        await resp.prepare(request)
        if backlog:
            await resp.write(b"".join(line(t, o, raw) for t, o, raw in backlog))
        if initial and bookmarks:
            await resp.write(bookmark(store, res, initial_end=True))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        while True:
            wait = BOOKMARK_INTERVAL
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    break
            try:
                item = await asyncio.wait_for(watcher.queue.get(), wait)
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    break
                if bookmarks and (deadline is None or deadline - loop.time() > 0.1):
                    await resp.write(bookmark(store, res))
                continue
            if item is None:
                break
            lines = [line(*item)]
            while not watcher.queue.empty():
                nxt = watcher.queue.get_nowait()
                if nxt is None:
                    break
                lines.append(line(*nxt))
            await resp.write(b"".join(lines))
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        store.close_watch(watcher)
    return resp


def bookmark(store: Store, res: Resource, initial_end: bool = False) -> bytes:
    """A BOOKMARK event carrying only the current resourceVersion."""
    meta: dict[str, Any] = {"resourceVersion": str(store.rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    obj = {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}
    return b'{"type":"BOOKMARK","object":' + dumps(obj) + b"}\n"


def _event_line(etype: str, raw: bytes) -> bytes:
    return b'{"type":"' + etype.encode() + b'","object":' + raw + b"}\n"
