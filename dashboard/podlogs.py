"""A pod's own output, followed live: the page and the socket that relays the Kubernetes log stream.

``/ws/apps/<app>/pods/<pod>/logs/?previous=1&timestamps=1&tail=N`` reads
``pods/<pod>/log`` with ``follow`` through the kubernetes client in a thread and relays
its lines in the deploy log's shapes (``{"type": "lines", "lines": [{"seq", "time",
"level", "message"}]}``), then one ``{"type": "status", "status": "ended" | "gone" |
"error", "message"}`` when the stream stops, and closes. What is kept between the
Kubernetes stream and the browser is bounded (BUFFER_LINES); lines beyond it are dropped
and counted (``{"type": "dropped", "count": n}``). The relay sends at most RELAY_LINES
lines every RELAY_INTERVAL seconds. Closing the socket closes the Kubernetes stream.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.views.apps import _app_for as app_for
from deployer import k8s, permissions
from deployer.bounds import LOG_LINE_CHARS, cut_bytes
from deployer.cluster import MANAGED_BY, MANAGER
from deployer.errors import NotFound
from deployer.livelog import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from deployer.models import App

# Lines waiting between the Kubernetes stream and the browser; older ones are dropped past it.
BUFFER_LINES = 5000
# The relay's pace: at most RELAY_LINES lines every RELAY_INTERVAL seconds.
RELAY_INTERVAL = 0.2
RELAY_LINES = 500
# The most lines ``tail`` may ask for, and what the page keeps (lines and bytes).
MAX_TAIL = 5000
DEFAULT_TAIL = 200
PAGE_LINES = 2000
PAGE_BYTES = 1024 * 1024
CHUNK = 64 * 1024
# Each followed log holds a thread and a connection to the API server: at most this many
# per web process.
MAX_STREAMS = 64
_open = [0]
_open_lock = threading.Lock()


def pod_of_app(app: App, pod_name: str) -> dict[str, Any] | None:
    """The pod ``pod_name`` in the app's namespace when its labels make it one of the app's, else None."""
    try:
        with k8s.translated():
            pod = k8s.core_v1().read_namespaced_pod(
                pod_name, app.namespace, _preload_content=False, _request_timeout=10
            )
    except NotFound:
        return None
    try:
        data = json.loads(pod.data)
    finally:
        pod.release_conn()
    labels = (data.get("metadata") or {}).get("labels") or {}
    if labels.get("app") != app.name or labels.get(MANAGED_BY) != MANAGER:
        return None
    return data


def containers_of(pod: dict[str, Any]) -> list[str]:
    """The names of the pod's containers, in spec order."""
    return [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]


def options_from_query(query: dict[str, list[str]]) -> dict[str, Any]:
    """previous, timestamps, tail (0..MAX_TAIL, DEFAULT_TAIL when absent or garbage) and container."""

    def flag(name: str) -> bool:
        return query.get(name, [""])[0].lower() in ("1", "true", "on", "yes")

    try:
        tail = min(max(0, int(query.get("tail", [""])[0])), MAX_TAIL)
    except ValueError:
        tail = DEFAULT_TAIL
    return {
        "previous": flag("previous"),
        "timestamps": flag("timestamps"),
        "tail": tail,
        "container": query.get("container", [""])[0],
    }


@require_GET
def pod_log_page(request: HttpRequest, pk: int, pod: str) -> HttpResponse:
    """The log viewer of one pod of the app (404 unless the pod carries the app's labels)."""
    app = app_for(request, pk)
    try:
        data = pod_of_app(app, pod)
    except k8s.KubeError as exc:
        return render(
            request,
            "dashboard/pod_logs.html",
            {"app": app, "pod": pod, "error": str(exc), "containers": []},
            status=503,
        )
    if data is None:
        raise Http404("No such pod.")
    options = options_from_query({k: request.GET.getlist(k) for k in request.GET})
    labels = (data.get("metadata") or {}).get("labels") or {}
    return render(
        request,
        "dashboard/pod_logs.html",
        {
            "app": app,
            "pod": pod,
            "version": labels.get("version", ""),
            "containers": containers_of(data),
            "options": options,
            "page_lines": PAGE_LINES,
            "page_bytes": PAGE_BYTES,
            "max_tail": MAX_TAIL,
        },
    )


class _Stream:
    """The Kubernetes log stream read in a thread into a bounded buffer of lines."""

    def __init__(self, app: App, pod: str, container: str, options: dict[str, Any]) -> None:
        self.app, self.pod, self.container, self.options = app, pod, container, options
        self.lines: collections.deque[str] = collections.deque()
        self.dropped = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error = ""
        self.response: Any = None
        self.closed = False
        self.thread = threading.Thread(target=self._run, name=f"podlog-{pod}", daemon=True)

    def _push(self, raw: bytes) -> None:
        text = cut_bytes(raw, LOG_LINE_CHARS)
        with self.lock:
            if len(self.lines) >= BUFFER_LINES:
                self.lines.popleft()
                self.dropped += 1
            self.lines.append(text)

    def _run(self) -> None:
        try:
            kwargs: dict[str, Any] = {
                "follow": not self.options["previous"],
                "previous": self.options["previous"],
                "timestamps": self.options["timestamps"],
                "tail_lines": self.options["tail"],
                "_preload_content": False,
            }
            if self.container:
                kwargs["container"] = self.container
            with k8s.translated():
                response = k8s.core_v1().read_namespaced_pod_log(
                    self.pod, self.app.namespace, **kwargs
                )
            self.response = response
            if self.closed:
                return
            pending = b""
            for chunk in response.stream(CHUNK, decode_content=False):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._push(line)
                if len(pending) > LOG_LINE_CHARS:
                    self._push(pending)
                    pending = b""
            if pending:
                self._push(pending)
        except k8s.KubeError as exc:
            self.error = str(exc)
        except Exception as exc:  # a stream cut by close() or by the server
            if not self.closed:
                self.error = f"The log stream broke: {exc}"
        finally:
            if self.response is not None:
                # Closed, not returned to the pool: a followed stream may have more to send.
                with contextlib.suppress(Exception):
                    self.response.close()
            with _open_lock:
                _open[0] -= 1
            self.done.set()

    def take(self, limit: int) -> tuple[list[str], int]:
        """Up to ``limit`` buffered lines, and how many were dropped since the last call."""
        with self.lock:
            out = [self.lines.popleft() for _ in range(min(limit, len(self.lines)))]
            dropped, self.dropped = self.dropped, 0
        return out, dropped

    def close(self) -> None:
        """Close the Kubernetes stream: the thread's blocked read returns."""
        self.closed = True
        response = self.response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()
            with contextlib.suppress(Exception):
                response.close()


class PodLogConsumer(AsyncJsonWebsocketConsumer):
    """Relays one pod's log stream (followed) to the browser until the stream or the socket ends."""

    stream: _Stream | None = None
    relay: asyncio.Task[None] | None = None
    seq = 0

    async def connect(self) -> None:
        """Refuse anonymous users, users who may not see the app and pods not of the app."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        kwargs = self.scope["url_route"]["kwargs"]
        app = await database_sync_to_async(App.objects.filter(pk=int(kwargs["pk"])).first)()
        if app is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        if not await database_sync_to_async(permissions.can_view_app)(user, app):
            await self.close(code=CLOSE_FORBIDDEN)
            return
        try:
            pod = await asyncio.to_thread(pod_of_app, app, kwargs["pod"])
        except k8s.KubeError as exc:
            await self.accept()
            await self.send_json({"type": "status", "status": "error", "message": str(exc)})
            await self.close()
            return
        if pod is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        options = options_from_query(
            parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        )
        container = options["container"]
        if container and container not in containers_of(pod):
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.uid = (pod.get("metadata") or {}).get("uid")
        await self.accept()
        with _open_lock:
            full = _open[0] >= MAX_STREAMS
            if not full:
                _open[0] += 1
        if full:
            message = "Too many pod logs are being followed on this server; try again later."
            await self.send_json({"type": "status", "status": "error", "message": message})
            await self.close()
            return
        self.stream = _Stream(app, kwargs["pod"], container or containers_of(pod)[0], options)
        self.stream.thread.start()
        self.relay = asyncio.ensure_future(self._relay(app, kwargs["pod"]))

    async def _relay(self, app: App, pod: str) -> None:
        stream = self.stream
        assert stream is not None
        while True:
            finished = stream.done.is_set()
            lines, dropped = stream.take(RELAY_LINES)
            if dropped:
                await self.send_json({"type": "dropped", "count": dropped})
            if lines:
                payload = []
                for text in lines:
                    self.seq += 1
                    payload.append({"seq": self.seq, "time": "", "level": "info", "message": text})
                await self.send_json({"type": "lines", "lines": payload})
            if finished and not stream.lines:
                break
            await asyncio.sleep(RELAY_INTERVAL)
        if stream.closed:
            return
        await self.send_json(await asyncio.to_thread(self._end_status, app, pod, stream))
        await self.close()

    def _end_status(self, app: App, pod: str, stream: _Stream) -> dict[str, Any]:
        if stream.error:
            return {"type": "status", "status": "error", "message": stream.error}
        try:
            now = pod_of_app(app, pod)
        except k8s.KubeError:
            now = {}
        if now is None or (now.get("metadata") or {}).get("uid") != self.uid:
            return {"type": "status", "status": "gone", "message": "The pod is gone."}
        if stream.options["previous"]:
            return {
                "type": "status",
                "status": "ended",
                "message": "End of the previous container's output.",
            }
        return {"type": "status", "status": "ended", "message": "The container ended."}

    async def disconnect(self, code: int) -> None:
        """Close the Kubernetes stream and stop relaying."""
        if self.stream is not None:
            self.stream.close()
        if self.relay is not None and not self.relay.done():
            self.relay.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The socket is one-way; whatever the browser sends is ignored."""
