"""Watch streams over HTTP: newline-delimited {"type","object"} events.

Framing, BOOKMARK and ERROR events follow staging/src/k8s.io/apiserver/pkg/
endpoints/handlers/watch.go and https://kubernetes.io/docs/reference/using-api/api-concepts/#watch-bookmarks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from . import tables
from .errors import Expired, invalid
from .query import as_bool, as_int
from .records import Watcher
from .resources import Resource
from .store import BOOKMARK_INTERVAL, Store, dumps

JSON = "application/json"


def _refuse_bad_streaming_list(query: Mapping[str, str], bookmarks: bool) -> None:
    """apimachinery/pkg/apis/meta/internalversion/validation: streaming lists need both options."""
    causes = []
    if query.get("resourceVersionMatch") != "NotOlderThan":
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


async def _expired(resp: web.StreamResponse, request: web.Request, err: Expired) -> None:
    """Answer a watch from a compacted resourceVersion with one ERROR event (410 Gone)."""
    await resp.prepare(request)
    status = err.status()
    status.pop("details", None)
    await resp.write(b'{"type":"ERROR","object":' + dumps(status) + b"}\n")
    await resp.write_eof()


class _EventLines:
    """Encodes events as watch lines: raw objects, or one-row Tables when the client asks."""

    def __init__(self, request: web.Request, res: Resource) -> None:
        self.res = res
        self.as_table = tables.wants_table(request.headers.get("Accept", ""))
        self.include = request.query.get("includeObject", "Metadata")
        self.headers_sent = False

    def __call__(self, etype: str, obj: dict[str, Any], raw: bytes) -> bytes:
        if not self.as_table:
            return _event_line(etype, raw)
        # Column definitions travel with the first Table only, as kube-apiserver does.
        tbl = tables.table(
            self.res,
            [obj],
            {"resourceVersion": obj["metadata"]["resourceVersion"]},
            not self.headers_sent,
            include=self.include,
        )
        self.headers_sent = True
        return _event_line(etype, dumps(tbl))


async def _stream(
    store: Store,
    request: web.Request,
    resp: web.StreamResponse,
    res: Resource,
    watcher: Watcher,
    line: _EventLines,
    timeout: int | None,
    bookmarks: bool,
) -> None:
    """Write queued events until the timeout, the end of the watch or a gone client.

    Events that are already queued go out in one write; a quiet interval sends a BOOKMARK
    when the client allows them.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout else None
    while True:
        wait = BOOKMARK_INTERVAL
        if deadline is not None:
            wait = min(wait, deadline - loop.time())
            if wait <= 0:
                return
        try:
            item = await asyncio.wait_for(watcher.queue.get(), wait)
        except TimeoutError:
            if request.transport is None or request.transport.is_closing():
                return
            if bookmarks and (deadline is None or deadline - loop.time() > 0.1):
                await resp.write(bookmark(store, res))
            continue
        if item is None:
            return
        lines = [line(*item)]
        while not watcher.queue.empty():
            nxt = watcher.queue.get_nowait()
            if nxt is None:
                break
            lines.append(line(*nxt))
        await resp.write(b"".join(lines))


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
    if initial:
        _refuse_bad_streaming_list(q, bookmarks)
    resp = web.StreamResponse(
        status=200, headers={"Content-Type": JSON, "Cache-Control": "no-cache, private"}
    )
    resp.enable_chunked_encoding()
    try:
        watcher, backlog = store.open_watch(
            res,
            namespace,
            q.get("labelSelector"),
            fs,
            None if initial else q.get("resourceVersion"),
        )
    except Expired as err:
        await _expired(resp, request, err)
        return resp
    line = _EventLines(request, res)
    try:
        await resp.prepare(request)
        if backlog:
            await resp.write(b"".join(line(t, o, raw) for t, o, raw in backlog))
        if initial and bookmarks:
            await resp.write(bookmark(store, res, initial_end=True))
        await _stream(store, request, resp, res, watcher, line, timeout, bookmarks)
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
