"""DRF authentication by API token: ``Authorization: Bearer glt_...`` (or ``Token glt_...``).

A request with a valid token acts as the token's owner, with ``request.user.greenlight_token``
set to the token so that every permission check can cap the owner by its scopes and
namespaces; ``request.auth`` is the token too. An unknown, expired or revoked token is a 401
that says which. ``Token <key>`` headers whose key is not of this form are left to DRF's
``TokenAuthentication`` (the older one-per-user tokens).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions, status
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from dashboard.tokens.models import PREFIX, ApiToken, split
from dashboard.tokens.scopes import refusal

CHALLENGE = 'Bearer realm="api"'


class TokenRefused(exceptions.APIException):
    """401 for a token that is unknown, expired or revoked.

    Not an ``AuthenticationFailed``: DRF turns those into 403 when the first authentication
    class (the session) sends no challenge, and a CI job must see that its token is the problem.
    """

    status_code = status.HTTP_401_UNAUTHORIZED
    default_code = "token_refused"
    auth_header = f'{CHALLENGE}, error="invalid_token"'


class ApiTokenAuthentication(BaseAuthentication):
    """Authenticate ``Bearer <token>`` (and ``Token glt_...``) against ``ApiToken``, then cap it."""

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        """(owner, token), None when the header is not ours, TokenRefused when the token is bad."""
        parts = get_authorization_header(request).split()
        if len(parts) != 2:
            if parts and parts[0].lower() == b"bearer":
                raise TokenRefused("Send the header as 'Authorization: Bearer <token>'.")
            return None
        keyword, credential = parts[0].lower(), parts[1]
        if keyword not in (b"bearer", b"token"):
            return None
        try:
            raw = credential.decode("ascii")
        except UnicodeDecodeError:
            raise TokenRefused("The token holds characters a token never has.") from None
        if keyword == b"token" and not raw.startswith(PREFIX):
            return None
        token = self._token(raw)
        user = token.user
        if not user.is_active:
            raise TokenRefused(f"The owner of the token {token.name!r} is inactive.")
        token.mark_used()
        user.greenlight_token = token
        # The scope check runs here rather than in each view's permission_classes: every DRF
        # route authenticates through this class, so no route can leave it out.
        reason = refusal(token, request)
        if reason is not None:
            raise exceptions.PermissionDenied(reason)
        return user, token

    def authenticate_header(self, request: Request) -> str:
        """The challenge of a 401."""
        return CHALLENGE

    @staticmethod
    def _token(raw: str) -> ApiToken:
        parts = split(raw)
        token = None
        if parts is not None:
            token = ApiToken.objects.select_related("user").filter(prefix=parts[0]).first()
        if token is None or parts is None or not token.matches(parts[1]):
            raise TokenRefused("Invalid token: no token has this value.")
        if token.revoked_at is not None:
            raise TokenRefused(
                f"Token revoked at {token.revoked_at:%Y-%m-%d %H:%M:%S} UTC: the token "
                f"{token.name!r} no longer works; create a new one on the Tokens page."
            )
        if token.expired(timezone.now()):
            raise TokenRefused(
                f"Token expired at {token.expires_at:%Y-%m-%d %H:%M:%S} UTC: the token "
                f"{token.name!r} no longer works; create a new one on the Tokens page."
            )
        return token


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """The schema's security scheme for ``ApiTokenAuthentication``: an HTTP bearer token."""

    target_class = ApiTokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        """HTTP bearer, described."""
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API token (glt_...) from the Tokens page or manage.py create_token.",
        }
