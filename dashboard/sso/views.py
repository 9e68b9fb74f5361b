"""Sign-in pages: the username and password form (when allowed) and the OpenID Connect flow."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth import user_login_failed
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.decorators import method_decorator
from django.utils.http import urlencode
from django.views import View
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
)

from dashboard.sso.backend import FAILURE_ATTRIBUTE
from dashboard.sso.discovery import DiscoveryError, provider

logger = logging.getLogger(__name__)

LOCAL_LOGIN_OFF = (
    "Signing in with a username and password is turned off here (GREENLIGHT_LOCAL_LOGIN=0): "
    "sign in with {name}."
)


def _client(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR", "?"))


def _require_sso() -> None:
    if not settings.OIDC_ENABLED:
        raise Http404("Single sign-on is not configured: set GREENLIGHT_OIDC_ISSUER to use it.")


class SignInView(auth_views.LoginView):
    """Django's sign-in form, refused when local sign-in is off, with the single sign-on link."""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        """The form's context plus whether each way of signing in is offered."""
        context = super().get_context_data(**kwargs)
        context.update(
            local_login=settings.LOCAL_LOGIN,
            sso_enabled=settings.OIDC_ENABLED,
            sso_name=settings.OIDC_PROVIDER_NAME,
            sso_url=reverse("oidc-authenticate")
            + (f"?{urlencode({'next': context['next']})}" if context.get("next") else ""),
        )
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """Sign in with a username and password, or 403 when that is turned off."""
        if not settings.LOCAL_LOGIN:
            username = request.POST.get("username", "")
            logger.warning(
                "refused a username and password sign-in for %r from %s: local sign-in is off",
                username,
                _client(request),
            )
            user_login_failed.send(
                sender=__name__, credentials={"username": username}, request=request
            )
            context = self.get_context_data(
                refused=LOCAL_LOGIN_OFF.format(name=settings.OIDC_PROVIDER_NAME)
            )
            return self.render_to_response(context, status=403)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: Any) -> HttpResponse:
        """Log the failed attempt (who, from where, why) and show the form's error."""
        reasons = "; ".join(str(error) for error in form.non_field_errors()) or "missing fields"
        logger.warning(
            "failed sign-in for %r from %s: %s",
            form.data.get("username", ""),
            _client(self.request),
            reasons,
        )
        return super().form_invalid(form)


@login_not_required
def admin_login(request: HttpRequest) -> HttpResponseBase:
    """The admin site's sign-in: Django's while local sign-in is on, else the dashboard's."""
    if settings.LOCAL_LOGIN:
        return admin.site.login(request)
    if request.method == "POST":
        logger.warning(
            "refused a username and password sign-in to the admin site for %r from %s: "
            "local sign-in is off",
            request.POST.get("username", ""),
            _client(request),
        )
        context = {
            "refused": LOCAL_LOGIN_OFF.format(name=settings.OIDC_PROVIDER_NAME),
            "local_login": False,
            "sso_enabled": True,
            "sso_name": settings.OIDC_PROVIDER_NAME,
            "sso_url": reverse("oidc-authenticate"),
        }
        return render(request, "registration/login.html", context, status=403)
    target = reverse("login")
    next_url = request.GET.get("next")
    return redirect(f"{target}?{urlencode({'next': next_url})}" if next_url else target)


@method_decorator(login_not_required, name="dispatch")
class OidcStartView(OIDCAuthenticationRequestView):
    """Send the browser to the provider's authorization endpoint."""

    def __init__(self, **kwargs: Any) -> None:
        """Skip the parent's settings lookup: the endpoint is discovered per request."""
        View.__init__(self, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        """Redirect to the provider, or back to the sign-in page saying why it is unavailable."""
        _require_sso()
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider().authorization_endpoint
        except DiscoveryError as error:
            logger.error("single sign-on could not start: %s", error)
            messages.error(
                request,
                f"Signing in with {settings.OIDC_PROVIDER_NAME} is unavailable: {error}.",
            )
            return redirect("login")
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


@method_decorator(login_not_required, name="dispatch")
class OidcCallbackView(OIDCAuthenticationCallbackView):
    """Where the provider sends the browser back: sign in, or say in words what went wrong."""

    reason = ""
    # The provider's own words, for the log only: anyone can put a link with them in a page.
    detail = ""

    def get(self, request: HttpRequest) -> HttpResponse:
        """Finish the code flow; every failure lands on the sign-in page with its reason."""
        _require_sso()
        error = request.GET.get("error")
        if error:
            self.detail = f" ({error}: {request.GET.get('error_description', '')[:500]!r})"
            self.reason = (
                "you or the provider declined the sign-in"
                if error == "access_denied"
                else "the provider refused it"
            )
        elif "code" not in request.GET or "state" not in request.GET:
            self.reason = "the provider's answer had no code and state"
        elif "oidc_states" not in request.session:
            self.reason = "this browser's sign-in had expired or was started elsewhere; try again"
        try:
            return super().get(request)
        except SuspiciousOperation:
            self.reason = "the answer does not match a sign-in started here; try again"
            return self.login_failure()

    def login_failure(self) -> HttpResponse:
        """Log the failure with its reason and show it on the sign-in page."""
        request = self.request
        reason = getattr(request, FAILURE_ATTRIBUTE, "") or self.reason
        user = getattr(self, "user", None)
        if not reason and user is not None and not user.is_active:
            reason = f"the account {user.get_username()} is deactivated"
        reason = reason or "the provider's answer could not be used"
        logger.warning(
            "failed single sign-on from %s through %s: %s",
            _client(request),
            settings.OIDC_ISSUER,
            reason + self.detail,
        )
        if not hasattr(request, FAILURE_ATTRIBUTE):
            # Django's authenticate() announced the other failures already.
            user_login_failed.send(
                sender=__name__, credentials={"sso": settings.OIDC_ISSUER}, request=request
            )
        messages.error(request, f"Signing in with {settings.OIDC_PROVIDER_NAME} failed: {reason}.")
        return redirect("login")
