"""The provider's endpoints, read once from its discovery document and kept for the process."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache

import jwt
import requests
from django.conf import settings

logger = logging.getLogger(__name__)

WELL_KNOWN = "/.well-known/openid-configuration"
ENDPOINTS = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri")


class DiscoveryError(Exception):
    """The issuer's discovery document could not be read or lacks what sign-in needs."""


@dataclass(frozen=True)
class Provider:
    """What the sign-in flow needs from the provider's discovery document."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str
    jwks_uri: str


_cache: dict[str, Provider] = {}
_lock = threading.Lock()


def provider() -> Provider:
    """The configured issuer's endpoints, fetched on first use; raise DiscoveryError if unreadable.

    A failure is not kept: the next sign-in reads the document again, so a provider that
    was down when Greenlight started is used as soon as it answers.
    """
    issuer = settings.OIDC_ISSUER
    found = _cache.get(issuer)
    if found is not None:
        return found
    with _lock:
        found = _cache.get(issuer)
        if found is None:
            found = _cache[issuer] = fetch(issuer, timeout=settings.OIDC_TIMEOUT)
    return found


def fetch(issuer: str, *, timeout: float) -> Provider:
    """Read ``issuer``'s discovery document; raise DiscoveryError saying what is wrong."""
    url = issuer + WELL_KNOWN
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException as error:
        raise DiscoveryError(
            f"the issuer's discovery document {url} could not be read: {error}"
        ) from error
    if response.status_code != 200:
        raise DiscoveryError(
            f"the issuer's discovery document {url} answered HTTP {response.status_code}"
        )
    try:
        document = response.json()
    except ValueError:
        raise DiscoveryError(f"the issuer's discovery document {url} is not JSON") from None
    if not isinstance(document, dict):
        raise DiscoveryError(f"the issuer's discovery document {url} is not a JSON object")
    missing = [name for name in ENDPOINTS if not isinstance(document.get(name), str)]
    if missing:
        raise DiscoveryError(f"the issuer's discovery document {url} lacks {', '.join(missing)}")
    if str(document.get("issuer", "")).rstrip("/") != issuer:
        raise DiscoveryError(
            f"the discovery document {url} names the issuer {document.get('issuer')!r}, "
            f"not {issuer!r}: set GREENLIGHT_OIDC_ISSUER to the provider's issuer exactly"
        )
    algorithms = document.get("id_token_signing_alg_values_supported")
    if isinstance(algorithms, list) and settings.OIDC_RP_SIGN_ALGO not in algorithms:
        raise DiscoveryError(
            f"the provider does not sign ID tokens with {settings.OIDC_RP_SIGN_ALGO} "
            f"(it offers {', '.join(map(str, algorithms))})"
        )
    return Provider(
        issuer=issuer,
        authorization_endpoint=document["authorization_endpoint"],
        token_endpoint=document["token_endpoint"],
        userinfo_endpoint=document["userinfo_endpoint"],
        jwks_uri=document["jwks_uri"],
    )


@lru_cache(maxsize=4)
def signing_keys(jwks_uri: str) -> jwt.PyJWKClient:
    """The provider's key set, cached; a token signed with an unknown key id refetches it."""
    return jwt.PyJWKClient(jwks_uri, timeout=settings.OIDC_TIMEOUT)


def check_at_startup() -> None:
    """Read the discovery document when the web process starts; log an error if it cannot."""
    if not settings.OIDC_ENABLED:
        return
    try:
        found = provider()
    except DiscoveryError as error:
        logger.error(
            "Single sign-on is unavailable until the provider answers: %s "
            "(GREENLIGHT_OIDC_ISSUER=%s); each sign-in tries again",
            error,
            settings.OIDC_ISSUER,
        )
        return
    logger.info("Single sign-on through %s (%s)", found.issuer, settings.OIDC_PROVIDER_NAME)
