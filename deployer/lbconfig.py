"""Renders haproxy.cfg and its frontends map from the frontend and backend records kept in etcd.

The configuration holds every backend record and routes by Host through the map file,
so that pointing a frontend at an existing backend changes only the map: proxysync
can apply that through HAProxy's runtime API, without a reload.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.-]+$")
_MAP_PATH = re.compile(r"^/[A-Za-z0-9._/+-]+$")
REVISION_PATH = "/greenlight/revision"


def safe_name(value: str) -> str:
    """An identifier HAProxy accepts as a backend or server name."""
    return _SAFE.sub("_", value)


def _seconds(value: Any, default: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return f"{max(1, int(number * 1000))}ms" if number > 0 else default


def render_map(
    frontends: Sequence[Mapping[str, Any]], backends: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
    """Hostname -> HAProxy backend name for every frontend that can be routed safely."""
    routes: dict[str, str] = {}
    for frontend in frontends:
        host = str(frontend["hostname"]).lower()
        backend = str(frontend["backend"])
        if _HOST.match(host) and backend in backends:
            routes[host] = safe_name(backend)
    return dict(sorted(routes.items()))


def map_text(routes: Mapping[str, str]) -> str:
    """The map file for ``routes`` (one ``<hostname> <backend>`` line each)."""
    lines = ["# Rendered by Greenlight proxysync; edits are overwritten."]
    lines += [f"{host} {backend}" for host, backend in sorted(routes.items())]
    return "\n".join(lines) + "\n"


def checked_servers(name: str, record: Mapping[str, Any]) -> list[str]:
    """``<backend>/<server>`` of the servers HAProxy health-checks in backend ``name``."""
    if not _checked(record):
        return []
    return [
        f"{safe_name(name)}/{safe_name(str(server.get('name', '')))}"
        for server in record.get("servers", [])
        if _ADDRESS.match(str(server.get("address", "")))
    ]


def render_config(
    *,
    lb_port: int,
    stats_port: int,
    backends: Mapping[str, Mapping[str, Any]],
    map_path: str | None = None,
    bind_host: str = "127.0.0.1",
    revision: int | None = None,
) -> str:
    """Return haproxy.cfg text: one HTTP frontend routing by Host through ``map_path``.

    Every backend record is rendered, routed to or not, so that a switch between
    existing backends is a map change. Without ``map_path`` nothing is routed (the
    initial configuration, before proxysync wrote a map). Records that could not be
    rendered safely are skipped with a comment rather than breaking the file.
    ``revision`` is served at ``REVISION_PATH`` on the stats port, so that proxysync can
    tell when the new worker answers.
    """
    if map_path is not None and not _MAP_PATH.match(map_path):
        raise ValueError(f"the map path {map_path!r} has characters HAProxy would interpret")
    lines = [
        "# Rendered by Greenlight proxysync; edits are overwritten.",
        "global",
        "    maxconn 4096",
        "    log stderr format short local0 notice",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option idle-close-on-response",
        "    option redispatch",
        "    retries 2",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout http-keep-alive 5s",
        "    timeout http-request 10s",
        "    default-server inter 1s fall 2 rise 1",
        "",
        "frontend stats",
        f"    bind {bind_host}:{stats_port}",
        "    http-request return status 200 content-type text/plain string ok if { path /healthz }",
    ]
    if revision is not None:
        lines.append(
            f"    http-request return status 200 content-type text/plain string {int(revision)}"
            f" if {{ path {REVISION_PATH} }}"
        )
    lines += [
        "    stats enable",
        "    stats uri /stats",
        "    stats refresh 5s",
        "",
        "frontend http",
        f"    bind {bind_host}:{lb_port}",
        "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower",
    ]
    if map_path is not None:
        # A name the map yields that is no backend falls through to default_backend.
        lines.append(f"    use_backend %[var(txn.host),map({map_path},no_route)]")
    lines += [
        "    default_backend no_route",
        "",
        "backend no_route",
        '    http-request return status 503 content-type text/plain string "No application is'
        ' deployed at this address."',
        "",
    ]
    # Unrouted records too (a version about to go live, a warm old one): routing to
    # them later is then a map change, not a reload.
    for name in sorted(backends):
        lines += _backend(name, backends[name])
    return "\n".join(lines) + "\n"


def _backend(name: str, record: Mapping[str, Any]) -> list[str]:
    lines = [f"backend {safe_name(name)}", "    balance roundrobin"]
    timeout = record.get("timeout_server")
    if timeout:
        lines.append(f"    timeout server {_seconds(timeout, '30s')}")
    check_path = record.get("check_path")
    check = ""
    if _checked(record):
        lines.append(f"    option httpchk GET {check_path}")
        lines.append("    http-check expect status 200-299")
        check = " check"
        if record.get("check_port"):
            check += f" port {int(record['check_port'])}"
    for server in record.get("servers", []):
        if not _ADDRESS.match(str(server.get("address", ""))):
            lines.append(
                f"    # skipped server {safe_name(str(server.get('name', '')))}: bad address"
            )
            continue
        lines.append(
            f"    server {safe_name(str(server['name']))} "
            f"{server['address']}:{int(server['port'])}{check}"
        )
    lines.append("")
    return lines


def _checked(record: Mapping[str, Any]) -> bool:
    check_path = record.get("check_path")
    return isinstance(check_path, str) and bool(_PATH.match(check_path))
