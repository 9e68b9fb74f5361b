"""A real OpenID Connect provider for sign-in tests: oidc-provider-mock in its own process."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import requests

from tests.servers import Server, free_port, python_command, spawn

CLIENT_ID = "greenlight"
CLIENT_SECRET = "greenlight-client-secret"


@dataclass
class Provider:
    """The running provider: its issuer URL and the users it signs in."""

    server: Server

    @property
    def issuer(self) -> str:
        """The issuer its discovery document names (the URL it is reached at)."""
        return f"http://127.0.0.1:{self.server.port}"

    def set_user(self, sub: str, **claims: Any) -> None:
        """Register (or replace) the claims the provider gives ``sub`` at its next sign-in."""
        response = requests.put(f"{self.issuer}/users/{sub}", json=claims, timeout=10)
        response.raise_for_status()

    def authorize(self, authorization_url: str, sub: str | None) -> str:
        """Answer the provider's authorization page as ``sub`` would (None: deny); return the
        URL the provider sends the browser back to."""
        form = {"sub": sub} if sub is not None else {"action": "deny"}
        response = requests.post(authorization_url, data=form, allow_redirects=False, timeout=10)
        assert response.status_code == 302, (response.status_code, response.text[:500])
        return str(response.headers["Location"])

    def log(self) -> str:
        """What the provider process printed."""
        return (self.server.workdir / "oidc-provider.log").read_text(errors="replace")


@contextlib.contextmanager
def oidc_provider(workdir: Path) -> Iterator[Provider]:
    """oidc-provider-mock on a free loopback port, stopped on exit."""
    port = free_port()
    command = python_command("-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port))
    server = spawn("oidc-provider", command, workdir, port)
    try:
        yield Provider(server)
    finally:
        server.stop()


def query(url: str) -> dict[str, str]:
    """The query parameters of ``url``, one value each."""
    return {key: values[0] for key, values in parse_qs(urlparse(url).query).items()}


def path_and_query(url: str) -> str:
    """``url`` without its scheme and host."""
    parsed = urlparse(url)
    return parsed.path + (f"?{parsed.query}" if parsed.query else "")
