"""Renders a complete haproxy.cfg from the frontend and backend records kept in etcd."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.-]+$")
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


def render_config(
    *,
    lb_port: int,
    stats_port: int,
    frontends: Sequence[Mapping[str, Any]],
    backends: Mapping[str, Mapping[str, Any]],
    bind_host: str = "127.0.0.1",
    revision: int | None = None,
) -> str:
    """Return haproxy.cfg text: one HTTP frontend routing by Host header to one backend each.

    Records that could not be rendered safely (a hostname or path with characters
    HAProxy would interpret) are skipped with a comment rather than breaking the file.
    ``revision`` is served at ``REVISION_PATH`` on the stats port, so that proxysync can
    tell when the new worker answers.
    """
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
    used: list[str] = []
    for frontend in sorted(frontends, key=lambda item: str(item["hostname"])):
        host = str(frontend["hostname"]).lower()
        backend = str(frontend["backend"])
        if not _HOST.match(host) or backend not in backends:
            lines.append(f"    # skipped frontend {safe_name(host)}: invalid or no backend")
            continue
        used.append(backend)
        lines.append(f"    use_backend {safe_name(backend)} if {{ var(txn.host) -m str {host} }}")
    lines += [
        "    default_backend no_route",
        "",
        "backend no_route",
        '    http-request return status 503 content-type text/plain string "No application is'
        ' deployed at this address."',
        "",
    ]
    # One backend per frontend: records no frontend points at (a warm old version) stay out.
    for name in sorted(set(used)):
        lines += _backend(name, backends[name])
    return "\n".join(lines) + "\n"


def _backend(name: str, record: Mapping[str, Any]) -> list[str]:
    lines = [f"backend {safe_name(name)}", "    balance roundrobin"]
    timeout = record.get("timeout_server")
    if timeout:
        lines.append(f"    timeout server {_seconds(timeout, '30s')}")
    check_path = record.get("check_path")
    check = ""
    if isinstance(check_path, str) and _PATH.match(check_path):
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
