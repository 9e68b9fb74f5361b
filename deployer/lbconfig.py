"""Renders haproxy.cfg and its frontends map from the frontend and backend records kept in etcd.

The configuration holds every backend record and routes by Host through the map file,
so that pointing a frontend at an existing backend changes only the map: proxysync
can apply that through HAProxy's runtime API, without a reload. Every server line
spells out all of its settings (no ``default-server``), so that the same words add it
to a running worker (``add server``, which ignores ``default-server``): a change of a
backend's servers is a runtime change too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$")
_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.-]+$")
_MAP_PATH = re.compile(r"^/[A-Za-z0-9._/+-]+$")
REVISION_PATH = "/greenlight/revision"
SERVER_LINE = "    server "
# A preview's header: a request for an app's frontend hostname carrying it goes to that
# version, when the version has a preview (see preview_routes).
PREVIEW_HEADER = "X-Greenlight-Version"
# The suffix of a preview backend record (deployer.preview, traffic mode service). A
# version's record is ``<namespace>.<app>-v<N>``, with one dot (namespaces and app names
# are DNS labels), so ``<namespace>.<app>-v<N>.preview`` is never a version's.
PREVIEW_BACKEND_SUFFIX = ".preview"
# A DNS name as a map key may hold it: labels of 1-63 letters, digits and inner dashes.
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

# Settings of every server, in the configuration and in ``add server`` alike:
# - checks every second, down after 2 failures, up after 1 success;
# - ``observe layer4 error-limit 1 on-error mark-down``: one refused or timed-out
#   connection takes the server out of rotation at once, without waiting for two failed
#   checks; its check puts it back within a second once it answers. Retries alone are
#   not enough: a request could spend them all between a dead and a silent server.
#   Layer 4 and not layer 7: at layer 7 one 5xx answer from the application (a bug in
#   one page) would count as an error and take healthy servers out.
# - the pool settings are HAProxy's own defaults for configured servers, which a dynamic
#   server does not get (it would keep no idle connection, a new one per request).
SERVER_SETTINGS = (
    "inter 1s fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down "
    "pool-purge-delay 5s pool-max-conn -1"
)


@dataclass(frozen=True)
class ServerSpec:
    """One server of a backend as rendered: the same words in haproxy.cfg and ``add server``."""

    # HAProxy's name, and the record's (reported back in acknowledgements).
    name: str
    record_name: str
    address: str
    port: int
    settings: str

    @property
    def line(self) -> str:
        """The configuration line."""
        return f"{SERVER_LINE}{self.name} {self.address}:{self.port} {self.settings}"

    def add_command(self, backend: str) -> str:
        """The runtime API command adding this server to ``backend`` (in maintenance)."""
        return f"add server {backend}/{self.name} {self.address}:{self.port} {self.settings}"


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


def is_dns_name(value: object) -> bool:
    """Whether ``value`` is a lowercase DNS name: 1-63 character labels, 253 characters at most."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 253
        and all(_LABEL.match(label) for label in value.split("."))
    )


def preview_backend(backend: str) -> str:
    """The preview backend record of backend record ``backend``; it goes when ``backend`` does."""
    return f"{backend}{PREVIEW_BACKEND_SUFFIX}"


def header_key(frontend: str, version: int) -> str:
    """The map key of the route taken by ``frontend`` requests carrying version ``version``."""
    return f"{frontend}@{version}"


def preview_routes(
    previews: Mapping[str, Mapping[str, Any]],
    hostnames: Iterable[str],
    backends: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, str], dict[str, str]]:
    """Map entries of the previews (backend record name -> preview), and why each other was left out.

    Each preview gives its hostname and ``<frontend>@<version>`` (PREVIEW_HEADER) the HAProxy
    backend of its record. Left out, keyed ``previews/<name>``: one whose backend record is
    not rendered, whose hostname or frontend is no DNS name, whose version is not a number,
    or whose hostname is a frontend's (``hostnames``) or an earlier preview's.
    """
    routes: dict[str, str] = {}
    skipped: dict[str, str] = {}
    taken = {str(host).lower() for host in hostnames}
    for name, preview in sorted(previews.items()):
        key = f"previews/{name}"
        if not isinstance(preview, Mapping):
            skipped[key] = f"a preview must be an object, not {type(preview).__name__}"
            continue
        host, frontend, version = (
            preview.get("hostname"),
            preview.get("frontend"),
            preview.get("version"),
        )
        if name not in backends:
            skipped[key] = f"its backend record {name[:80]!r} is not rendered"
        elif not is_dns_name(host):
            skipped[key] = f"hostname {str(host)[:80]!r} is not a DNS name"
        elif not is_dns_name(frontend):
            skipped[key] = f"frontend {str(frontend)[:80]!r} is not a DNS name"
        elif isinstance(version, bool) or not isinstance(version, int) or not 0 < version < 10**9:
            skipped[key] = f"version must be a positive number, not {str(version)[:20]!r}"
        elif host in taken or host in routes:
            skipped[key] = f"hostname {host} is taken by another route"
        else:
            routes[str(host)] = routes[header_key(str(frontend), version)] = safe_name(name)
    return routes, skipped


def map_text(routes: Mapping[str, str]) -> str:
    """The map file for ``routes`` (one ``<hostname> <backend>`` line each)."""
    lines = ["# Rendered by Greenlight proxysync; edits are overwritten."]
    lines += [f"{host} {backend}" for host, backend in sorted(routes.items())]
    return "\n".join(lines) + "\n"


def backend_servers(record: Mapping[str, Any]) -> list[ServerSpec]:
    """The servers of a backend record that can be rendered safely, in record order."""
    return _servers(record)[0]


def _servers(record: Mapping[str, Any]) -> tuple[list[ServerSpec], list[str]]:
    """The renderable servers, and a comment line for each one skipped."""
    check = "check"
    if _checked(record) and record.get("check_port"):
        check += f" port {int(record['check_port'])}"
    specs: list[ServerSpec] = []
    skipped: list[str] = []
    for server in record.get("servers", []):
        name = safe_name(str(server.get("name", "")))
        address = str(server.get("address", ""))
        if not _ADDRESS.match(address):
            skipped.append(f"    # skipped server {name}: bad address")
        elif any(spec.name == name for spec in specs):
            skipped.append(f"    # skipped server {name}: duplicate name")
        else:
            specs.append(
                ServerSpec(
                    name=name,
                    record_name=str(server.get("name", "")),
                    address=address,
                    port=int(server["port"]),
                    settings=f"{check} {SERVER_SETTINGS}",
                )
            )
    return specs, skipped


def checked_servers(name: str, record: Mapping[str, Any]) -> list[str]:
    """``<backend>/<server>`` of the servers HAProxy health-checks in backend ``name``.

    Every server is checked: an HTTP check when the record names a check path, otherwise
    a TCP connect, which ``observe layer4`` needs to take a dead server out of rotation.
    """
    return [f"{safe_name(name)}/{spec.name}" for spec in backend_servers(record)]


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
        # A request whose server failed it without answering (refused connection, a pod
        # that died or closed mid-request, no response in time) is sent again, each time
        # to another server: a pod that goes away unannounced costs no request. Retrying
        # more than a connection failure makes HAProxy keep a copy of the request
        # (requests larger than tune.bufsize are never retried); non-idempotent methods
        # are excluded in the frontend, since HAProxy itself retries any method.
        # Each failed attempt also marks its server down (observe layer4, below), so every
        # retry tries a server not yet known dead: 6 retries get past a node failure that
        # kills 6 pods of a backend at once (3 did not, when 5 of 6 died together).
        "    retry-on conn-failure empty-response response-timeout",
        "    option redispatch 1",
        "    retries 6",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout http-keep-alive 5s",
        "    timeout http-request 10s",
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
        # HAProxy's own Prometheus exporter (Debian's HAProxy is built with PROMEX): every
        # frontend, backend and server's counters, for a Prometheus that scrapes the stats port.
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /stats",
        "    stats refresh 5s",
        "",
        "frontend http",
        f"    bind {bind_host}:{lb_port}",
        "    http-request set-var(txn.host) req.hdr(host),field(1,:),lower",
        # A connection failure (nothing was sent) is retried for every method; a request
        # the server may have processed only when replaying it is harmless. PUT and DELETE
        # are idempotent by the RFC, but an application's handlers need not be.
        "    http-request disable-l7-retry unless METH_GET || METH_HEAD || METH_OPTIONS",
    ]
    if map_path is not None:
        # A preview's header route: ``<host>@<version>`` in the same map (no hostname has
        # an ``@``); a version without a preview finds no entry and takes the host's route.
        lines += [
            f"    http-request set-var(txn.version) req.hdr({PREVIEW_HEADER.lower()})"
            f" if {{ req.hdr({PREVIEW_HEADER.lower()}) -m found }}",
            "    http-request set-var(txn.preview) var(txn.host),concat(@,txn.version),"
            f"map({map_path}) if {{ var(txn.version) -m found }}",
            "    use_backend %[var(txn.preview)] if { var(txn.preview) -m found }",
        ]
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
    if _checked(record):
        lines.append(f"    option httpchk GET {record['check_path']}")
        lines.append("    http-check expect status 200-299")
    specs, skipped = _servers(record)
    lines += skipped
    # Server lines last: the rest of the section is what a runtime change must not touch.
    lines += [spec.line for spec in specs]
    lines.append("")
    return lines


def _checked(record: Mapping[str, Any]) -> bool:
    check_path = record.get("check_path")
    return isinstance(check_path, str) and bool(_PATH.match(check_path))
