"""mozilla-django-oidc's backend on the discovered endpoints, users keyed by subject."""

from __future__ import annotations

import logging
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from dashboard.sso import accounts
from dashboard.sso.discovery import DiscoveryError, provider, signing_keys

logger = logging.getLogger(__name__)

# Where the backend leaves why a sign-in failed, for the callback page to show.
FAILURE_ATTRIBUTE = "sso_failure"


class OidcBackend(OIDCAuthenticationBackend):
    """The authorization code flow: RS256 ID tokens checked against the provider's key set,
    issuer and client id; the user found by ``sub``; groups from the group claim."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Read the client's settings; the endpoints are discovered at the first sign-in."""
        self.UserModel = get_user_model()
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> AbstractUser | None:
        """The user of the provider's answer on ``request``, or None with the reason on it."""
        if request is None or not request.GET.get("code") or not request.GET.get("state"):
            return None  # a username and password, or no provider answer: not ours
        try:
            found = provider()
            self.OIDC_OP_TOKEN_ENDPOINT = found.token_endpoint
            self.OIDC_OP_USER_ENDPOINT = found.userinfo_endpoint
            self.OIDC_OP_JWKS_ENDPOINT = found.jwks_uri
            user = super().authenticate(request, **kwargs)
        except DiscoveryError as error:
            return self._failed(request, f"the provider could not be reached ({error})")
        except requests.RequestException as error:
            return self._failed(request, f"the provider's token or user endpoint failed: {error}")
        except (SuspiciousOperation, accounts.ClaimsError) as error:
            return self._failed(request, str(error))
        if user is None and not hasattr(request, FAILURE_ATTRIBUTE):
            return self._failed(request, "the provider's answer did not identify a user")
        return user

    def _failed(self, request: HttpRequest, reason: str) -> None:
        setattr(request, FAILURE_ATTRIBUTE, reason)
        return None

    def retrieve_matching_jwk(self, token: str) -> jwt.PyJWK:
        """The key the token names, from the cached key set (refetched for an unknown key);
        a token naming no key is taken only from a provider with one signing key."""
        keys = signing_keys(self.OIDC_OP_JWKS_ENDPOINT)
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            if kid:
                return keys.get_signing_key(kid)
            candidates = keys.get_signing_keys()
            if len(candidates) != 1:
                raise SuspiciousOperation(
                    f"the ID token names no signing key and the provider has {len(candidates)}"
                )
            return candidates[0]
        except jwt.PyJWTError as error:
            raise SuspiciousOperation(
                f"the ID token's signing key was not found: {error}"
            ) from error

    def _verify_jws(self, payload: str, key: Any) -> dict[str, Any]:
        """The token's claims once its RS256 signature, issuer, audience and expiry check out."""
        try:
            return jwt.decode(
                payload,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=provider().issuer,
                leeway=60,
            )
        except jwt.PyJWTError as error:
            raise SuspiciousOperation(f"the ID token was refused: {error}") from error

    def get_userinfo(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        """The ID token's claims with the user endpoint's on top (the group claim may be in
        either); the two must be about the same subject."""
        userinfo = super().get_userinfo(access_token, id_token, payload)
        if not isinstance(userinfo, dict):
            raise SuspiciousOperation("the provider's user endpoint did not answer an object")
        if userinfo.get("sub") != payload.get("sub"):
            raise SuspiciousOperation("the user endpoint and the ID token name different users")
        return {**payload, **userinfo}

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        """Any claims with a subject: an email is not required."""
        return bool(claims.get("sub"))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        """Never match by email: accounts are found by subject in get_or_create_user."""
        return self.UserModel.objects.none()

    def get_or_create_user(
        self, access_token: str, id_token: str, payload: dict[str, Any]
    ) -> AbstractUser | None:
        """The subject's user, created on first sign-in, its groups set from the claim."""
        try:
            claims = self.get_userinfo(access_token, id_token, payload)
            if not self.verify_claims(claims):
                raise SuspiciousOperation("the provider sent no sub claim")
            names = accounts.group_names(
                claims, settings.OIDC_GROUPS_CLAIM, settings.OIDC_GROUP_PREFIX
            )
            with transaction.atomic():
                user = accounts.user_for_claims(claims, issuer=settings.OIDC_ISSUER)
                accounts.sync_groups(user, names, settings.OIDC_GROUP_PREFIX)
        except (SuspiciousOperation, accounts.ClaimsError) as error:
            # mozilla-django-oidc turns a SuspiciousOperation here into a bare None.
            self._failed(self.request, str(error))
            raise
        logger.info(
            "single sign-on: %s (sub %s) signed in with groups %s",
            user.username,
            claims["sub"],
            ", ".join(sorted(names)) or "none",
        )
        return user
