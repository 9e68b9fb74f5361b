"""Who may call the API: bearer tokens, and a Host header naming this server.

Pods run as host processes, so whoever can create one can run commands on the
machine. Every request therefore needs a bearer token, as kube-apiserver's
token authenticators require
(staging/src/k8s.io/apiserver/pkg/authentication/request/bearertoken): the
state dir's own token, which the emitted kubeconfig carries, or one from
``--token-auth-file`` (kube-apiserver's static token CSV). Only /livez, /readyz
and /version answer without one, the paths kube-apiserver shows anonymous
users. A wrong token is refused everywhere, as it is there.

A Host header that does not name the address a request arrived on is refused
before anything else: a web page the developer visits may resolve its own
name to 127.0.0.1 (DNS rebinding), but it cannot make the browser send our
address as the Host.
"""

from __future__ import annotations

import csv
import hashlib
import ipaddress
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from .errors import BadRequest, Unauthorized
from .private_files import create_once

log = logging.getLogger("localcluster.auth")

TOKEN_FILE = "token"
PUBLIC_PATHS = frozenset({"/livez", "/readyz", "/version"})
MAX_HOST_SHOWN = 100


@dataclass(frozen=True)
class User:
    """An authenticated identity (user.Info: name, uid, groups)."""

    name: str
    uid: str
    groups: tuple[str, ...] = ()


# The kubeconfig's identity: a cluster admin, as kubeadm's admin.conf is.
ADMIN = User("localcluster-admin", "localcluster-admin", ("system:masters",))


def state_token(state_dir: Path) -> str:
    """The state dir's token: made once, in a file only its owner can read, then reused."""
    path = state_dir / TOKEN_FILE
    token = create_once(path, lambda: secrets.token_urlsafe(32).encode() + b"\n").decode().strip()
    if not token:
        raise SystemExit(f"{path} is empty; delete it and localcluster makes a new token")
    return token


def read_token_file(path: Path) -> dict[str, User]:
    """Parse a --token-auth-file (``token,user,uid,"group1,group2"`` per line) as kube-apiserver does."""
    tokens: dict[str, User] = {}
    with path.open(newline="") as fh:
        for number, record in enumerate(csv.reader(fh), start=1):
            if not record:
                continue
            if len(record) < 3:
                raise ValueError(
                    f"token file '{path}' must have at least 3 columns (token, user name, user uid), found {len(record)}"
                )
            token, name, uid = record[0], record[1], record[2]
            if not token:
                log.warning("empty token in token file '%s', record number '%d'", path, number)
                continue
            if token in tokens:
                log.warning("duplicate token in token file '%s', record number '%d'", path, number)
            groups = tuple(g for g in record[3].split(",") if g) if len(record) > 3 else ()
            tokens[token] = User(name, uid, groups)
    return tokens


def _digest(token: str) -> bytes:
    # Tokens are looked up by digest, so a lookup's timing says nothing about a token's prefix.
    return hashlib.sha256(token.encode()).digest()


class Guard:
    """Checks the Host header and the bearer token of every request."""

    def __init__(self, tokens: Iterable[tuple[str, User]]) -> None:
        self._users = {_digest(token): user for token, user in tokens if token}

    def check(self, request: web.Request) -> User | None:
        """The caller; BadRequest for a foreign Host, Unauthorized without a valid token."""
        check_host(request)
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            user = self._users.get(_digest(token))
            if user is None:
                raise Unauthorized("Unauthorized")
            return user
        # No credentials: the anonymous user, who may only ask whether the server is up.
        if request.method in ("GET", "HEAD") and request.path in PUBLIC_PATHS:
            return None
        raise Unauthorized("Unauthorized")


def check_host(request: web.Request) -> None:
    """BadRequest unless Host names the address and port the connection arrived on."""
    host = request.headers.get("Host", "")
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not host or not sockname or not host_allowed(host, str(sockname[0]), int(sockname[1])):
        shown = host[:MAX_HOST_SHOWN]
        raise BadRequest(
            f'the Host header "{shown}" does not name this server: use the server address from its kubeconfig'
        )


def host_allowed(host: str, local_ip: str, local_port: int) -> bool:
    """Whether ``host`` is ``<local_ip>:<local_port>``, or ``localhost:<port>`` on a loopback address."""
    try:
        parts = urlsplit(f"//{host}")
        port = parts.port
    except ValueError:
        return False
    name = parts.hostname
    if name is None or parts.username is not None or parts.path or parts.query:
        return False
    if (port if port is not None else 80) != local_port:
        return False
    local = ipaddress.ip_address(local_ip.split("%")[0])
    if name == "localhost":
        return local.is_loopback
    try:
        named = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(local, ipaddress.IPv6Address) and local.ipv4_mapped is not None:
        local = local.ipv4_mapped
    return named == local
