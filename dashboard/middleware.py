"""Sign-in for every page; the REST API authenticates on its own (session or token)."""

from __future__ import annotations

from collections.abc import Callable
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
