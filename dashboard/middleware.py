"""Sign-in for every page; the REST API authenticates on its own (session or token)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from inspect import iscoroutinefunction
from typing import Any

from django.conf import settings
from django.contrib.auth.middleware import LoginRequiredMiddleware as DjangoLoginRequired
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.utils.decorators import sync_and_async_middleware


class LoginRequiredMiddleware(DjangoLoginRequired):
    """Django's login-required default, leaving DRF views to DRF's own authentication."""

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        """Skip DRF views (they answer 401/403 with JSON); redirect anonymous users elsewhere."""
        if getattr(view_func, "cls", None) is not None and hasattr(view_func, "initkwargs"):
            return None
        return super().process_view(request, view_func, view_args, view_kwargs)


def _too_large(request: HttpRequest) -> JsonResponse | None:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return JsonResponse({"detail": "Content-Length must be a number."}, status=400)
    if limit is not None and length > limit:
        return JsonResponse(
            {"detail": f"The request body is too large ({length} bytes; at most {limit})."},
            status=413,
        )
    return None


@sync_and_async_middleware
def body_size_limit(get_response: Callable[[HttpRequest], Any]) -> Callable[[HttpRequest], Any]:
    """Refuse a request whose declared body exceeds DATA_UPLOAD_MAX_MEMORY_SIZE with 413.

    Django checks the limit only when a view reads ``request.body`` or ``POST``; DRF's
    parsers stream the body, so the declared length is checked here for every view.
    """
    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> Any:
            return _too_large(request) or await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> Any:
        return _too_large(request) or get_response(request)

    return middleware


async def _refuse(send: Callable[[dict[str, Any]], Awaitable[None]], limit: int) -> None:
    body = json.dumps({"detail": f"The request body is too large (at most {limit} bytes)."})
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


class AsgiBodySizeLimit:
    """ASGI wrapper that refuses an oversized body with 413 before Django buffers it.

    Django's ASGI handler reads the whole body (spooling it to disk) before any
    middleware runs; this checks Content-Length first and counts chunked bodies as
    they arrive, answering 413 and telling Django the client went away.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        """Pass the request through unless its body is over DATA_UPLOAD_MAX_MEMORY_SIZE."""
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if scope["type"] != "http" or limit is None:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _refuse(send, limit)
            return
        received = 0
        refused = False

        async def counting_receive() -> dict[str, Any]:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)
