"""Renders a complete haproxy.cfg from the frontend and backend records kept in etcd."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(value: str) -> str:
    """An identifier HAProxy accepts as a backend or server name."""
    return _SAFE.sub("_", value)


def render_config(
    *,
    lb_port: int,
    stats_port: int,
    frontends: Sequence[Mapping[str, Any]],
    backends: Mapping[str, Mapping[str, Any]],
    bind_host: str = "127.0.0.1",
) -> str:
    """Return haproxy.cfg text: one HTTP frontend routing by Host header to one backend each."""
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
        "    stats enable",
        "    stats uri /stats",
        "    stats refresh 5s",
        "",
        "frontend http",
        f"    bind {bind_host}:{lb_port}",
        "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower",
    ]
    for frontend in sorted(frontends, key=lambda item: str(item["hostname"])):
        host = str(frontend["hostname"]).lower()
        backend = safe_name(str(frontend["backend"]))
        lines.append(f"    use_backend {backend} if {{ var(txn.host) -m str {host} }}")
    lines += [
        "    default_backend no_route",
        "",
        "backend no_route",
        '    http-request return status 503 content-type text/plain string "No application is'
        ' deployed at this address."',
        "",
    ]
    for name in sorted(backends):
        record = backends[name]
        lines.append(f"backend {safe_name(name)}")
        lines.append("    balance roundrobin")
        check_path = record.get("check_path")
        if check_path:
            lines.append(f"    option httpchk GET {check_path}")
            lines.append("    http-check expect status 200-299")
        for server in record.get("servers", []):
            check = " check" if check_path else ""
            lines.append(
                f"    server {safe_name(str(server['name']))} "
                f"{server['address']}:{int(server['port'])}{check}"
            )
        lines.append("")
    return "\n".join(lines) + "\n"
