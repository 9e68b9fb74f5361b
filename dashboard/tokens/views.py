"""The Tokens page: your API tokens, a form for a new one (its secret shown once), revoke."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from dashboard.audit.service import record, token_facts
from dashboard.tokens import service
from dashboard.tokens.forms import TokenForm
from dashboard.tokens.models import ApiToken


def _page(
    request: HttpRequest, form: TokenForm, *, secret: str = "", status: int = 200
) -> HttpResponse:
    admin = service.is_token_admin(request.user)
    tokens = ApiToken.objects.select_related("user").order_by("-created_at", "-id")
    response = render(
        request,
        "dashboard/tokens.html",
        {
            "form": form,
            "tokens": tokens.filter(user=request.user),
            "others": tokens.exclude(user=request.user) if admin else None,
            "secret": secret,
        },
        status=status,
    )
    if secret:
        # Nothing between the browser and here keeps the one answer that holds the secret.
        add_never_cache_headers(response)
    return response


@require_http_methods(["GET", "POST"])
def token_list(request: HttpRequest) -> HttpResponse:
    """Your tokens (an administrator also sees everyone else's); POST creates one."""
    if request.method != "POST":
        return _page(request, TokenForm(owner=request.user))
    form = TokenForm(request.POST, owner=request.user)
    if not form.is_valid():
        return _page(request, form, status=400)
    data = form.cleaned_data
    try:
        token, secret = service.create(
            request.user, data["name"], data["scopes"], data["namespaces"], data["expires_at"]
        )
    except ValidationError as exc:
        for field, problems in exc.message_dict.items():
            for problem in problems:
                form.add_error(field if field in form.fields else None, problem)
        return _page(request, form, status=400)
    record(request, "token.create", token, **token_facts(token))
    messages.success(request, f"Created the token {token.name}.")
    # The secret goes into this one answer only: not into the session, a message or a redirect.
    return _page(request, TokenForm(owner=request.user), secret=secret, status=201)


@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    """Revoke a token at once: your own, or anyone's for an administrator."""
    token = get_object_or_404(ApiToken.objects.select_related("user"), pk=pk)
    if not service.may_manage(request.user, token):
        raise PermissionDenied("You may revoke only your own tokens.")
    if token.revoke(by=request.user):
        record(request, "token.revoke", token, **token_facts(token))
        messages.success(request, f"Revoked the token {token.name}; it no longer works.")
    else:
        messages.info(request, f"The token {token.name} was revoked already.")
    return redirect("tokens")
