"""What proxysync applies: one snapshot's render, and what turns one render into the next.

A render is the configuration (every backend), the frontends map (the previews'
entries included, lbconfig.preview_routes) and each backend's servers. Between two renders whose configurations differ only in the servers of backends
both have, the running worker can be changed through the runtime API (``map_commands``,
``server_changes``); anything else needs a validated reload.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deployer.etcdstore import Snapshot
from deployer.haproxycli import HAProxyTarget
from deployer.lbconfig import (
    REVISION_PATH,
    SERVER_LINE,
    ServerSpec,
    backend_servers,
    checked_servers,
    map_text,
    preview_routes,
    render_config,
    render_map,
    safe_name,
)
from deployer.lbrecords import BackendRecord, RecordError, clean, parse_backend


@dataclass(frozen=True)
class Render:
    """One snapshot's configuration and frontends map."""

    config: str
    # Hostname -> HAProxy backend name, as in the map file.
    routes: dict[str, str]
    # HAProxy backend name -> its health-checked ``backend/server`` names.
    checked: dict[str, list[str]]
    # HAProxy backend name -> server name -> how it is rendered.
    servers: dict[str, dict[str, ServerSpec]] = field(default_factory=dict)
    # HAProxy backend name -> the etcd record's name.
    names: dict[str, str] = field(default_factory=dict)
    # Records left out, ``frontends/<host>`` or ``backends/<name>`` -> why.
    skipped: dict[str, str] = field(default_factory=dict)

    @functools.cached_property
    def stable(self) -> str:
        """The configuration without its revision line: equal ones need no reload."""
        return "\n".join(line for line in self.config.splitlines() if REVISION_PATH not in line)

    @functools.cached_property
    def skeleton(self) -> str:
        """The configuration without its revision and server lines.

        Equal ones differ at most in the servers of backends both have, which the runtime
        API can change.
        """
        return "\n".join(
            line
            for line in self.config.splitlines()
            if REVISION_PATH not in line and not line.startswith(SERVER_LINE)
        )

    @property
    def map_text(self) -> str:
        """The map file's text."""
        return map_text(self.routes)


def render(
    snapshot: Snapshot,
    target: HAProxyTarget,
    refused: Mapping[str, str] | None = None,
    previous_routes: Mapping[str, str] | None = None,
) -> Render:
    """The complete configuration and map of ``snapshot`` for the HAProxy at ``target``.

    Records of the wrong shape, and the backends named in ``refused`` (HAProxy refused
    them), are left out and listed in ``Render.skipped``. A hostname whose frontend
    points at a record left out keeps its route in ``previous_routes`` (what the running
    worker serves), while that backend is still rendered: the old version keeps serving.
    """
    frontends, parsed, skipped = clean(snapshot.frontends, snapshot.backends)
    skipped.update({f"backends/{name}": reason for name, reason in (refused or {}).items()})
    skipped.update(snapshot.unreadable)
    typed = {name: record for name, record in parsed.items() if f"backends/{name}" not in skipped}
    backends = {name: record.as_json() for name, record in typed.items()}
    config = render_config(
        lb_port=target.lb_port,
        stats_port=target.stats_port,
        backends=backends,
        map_path=str(target.map_file),
        bind_host=target.bind_host,
        revision=snapshot.revision,
    )
    routes = render_map(
        [{"hostname": f.hostname, "backend": f.backend} for f in frontends.values()], backends
    )
    # Previews after the frontends: a frontend's hostname is never a preview's.
    preview_map, preview_skipped = preview_routes(snapshot.previews, frontends, backends)
    skipped.update(preview_skipped)
    rendered = {safe_name(name) for name in backends}
    for frontend in frontends.values():
        kept = (previous_routes or {}).get(frontend.hostname)
        if f"backends/{frontend.backend}" in skipped and kept in rendered:
            routes[frontend.hostname] = kept
    routes = dict(sorted({**preview_map, **routes}.items()))
    checked = {safe_name(name): list(_checked(record)) for name, record in typed.items()}
    servers = {safe_name(name): dict(_servers(record)) for name, record in typed.items()}
    names = {safe_name(name): name for name in backends}
    return Render(config, routes, checked, servers, names, skipped)


# A backend's servers and checked servers follow from its typed record alone; most
# records are the same from one render to the next.
@functools.lru_cache(maxsize=8192)
def _servers(record: BackendRecord) -> dict[str, ServerSpec]:
    return {spec.name: spec for spec in backend_servers(record.as_json())}


@functools.lru_cache(maxsize=8192)
def _checked(record: BackendRecord) -> tuple[str, ...]:
    return tuple(checked_servers(record.name, record.as_json()))


def backend_at_line(config: str, line_number: int) -> str | None:
    """The HAProxy backend whose section holds ``line_number`` (1-based) of ``config``."""
    current = None
    for number, line in enumerate(config.splitlines(), start=1):
        if line and not line.startswith((" ", "\t", "#")):
            words = line.split()
            current = words[1] if words[0] == "backend" and len(words) > 1 else None
        if number == line_number:
            return current
    return None


def map_commands(
    old: Mapping[str, str], new: Mapping[str, str], checked: Mapping[str, list[str]], map_file: Path
) -> list[str]:
    """Runtime API commands turning the running map ``old`` into ``new``.

    Servers of a backend that gets its first route are marked up first: HAProxy may have
    marked them down while the pods were still starting, and the workflow has just
    health-checked them; a reload would also have started them up.
    """
    commands = [
        f"set server {server} health up"
        for backend in sorted(set(new.values()) - set(old.values()))
        for server in checked.get(backend, [])
    ]
    for host, backend in new.items():
        if host not in old:
            commands.append(f"add map {map_file} {host} {backend}")
        elif old[host] != backend:
            commands.append(f"set map {map_file} {host} {backend}")
    commands += [f"del map {map_file} {host}" for host in old if host not in new]
    return commands


@dataclass(frozen=True)
class ServerChanges:
    """Servers to add to and remove from backends the running worker already has."""

    added: list[tuple[str, ServerSpec]]
    removed: list[tuple[str, ServerSpec]]

    def __bool__(self) -> bool:
        return bool(self.added or self.removed)


def server_changes(running: Render, render: Render) -> ServerChanges | None:
    """How ``running``'s servers become ``render``'s; None when anything else differs.

    Anything else: a backend added, removed or with other options, a server whose address
    or settings changed (the runtime API cannot edit it in place), a port HAProxy would
    refuse (the validated reload reports it).
    """
    if render.skeleton != running.skeleton:
        return None
    added: list[tuple[str, ServerSpec]] = []
    for backend, servers in render.servers.items():
        before = running.servers.get(backend, {})
        for name, spec in servers.items():
            if name not in before:
                if not 0 < spec.port < 65536:
                    return None
                added.append((backend, spec))
            elif before[name].line != spec.line:
                return None
    return ServerChanges(added, removed_servers(running, render))


def removed_servers(running: Render, render: Render) -> list[tuple[str, ServerSpec]]:
    """Servers of backends both renders have that ``render`` no longer lists."""
    return [
        (backend, spec)
        for backend, servers in running.servers.items()
        if backend in render.servers
        for name, spec in servers.items()
        if name not in render.servers[backend]
    ]


def _rendered_part(name: str, record: object) -> dict[str, object] | None:
    """What the renderer reads of a backend record besides its servers; None if it does not parse."""
    try:
        rendered = parse_backend(name, record).as_json()
    except RecordError:
        return None
    rendered.pop("servers", None)
    return rendered


def runtime_part(applied: Snapshot, snapshot: Snapshot, running: Render) -> Snapshot:
    """The records of ``snapshot`` that the worker running ``running`` can take without a reload.

    ``applied`` is the snapshot ``running`` was rendered from. Every backend the worker
    has stays, with the servers ``snapshot`` adds (a server it removes stays until the
    reload, which drains it); a backend whose other settings changed keeps its applied
    record. A frontend or a preview keeps ``snapshot``'s record when its backend is in the
    worker, else its applied one; a deleted one goes. New backends wait for the reload.
    """
    backends: dict[str, dict[str, object]] = {}
    for name in running.names.values():
        old = applied.backends.get(name)
        if not isinstance(old, dict):
            continue
        new = snapshot.backends.get(name)
        settings = _rendered_part(name, new)
        if not isinstance(new, dict) or settings is None or settings != _rendered_part(name, old):
            backends[name] = old
            continue
        servers = [s for s in new.get("servers", []) if isinstance(s, dict)]
        listed = {server.get("name") for server in servers}
        staying = [s for s in old.get("servers", []) if isinstance(s, dict)]
        backends[name] = {
            **new,
            "servers": servers + [s for s in staying if s.get("name") not in listed],
        }
    frontends: dict[str, dict[str, object]] = {}
    for hostname, record in snapshot.frontends.items():
        if isinstance(record, dict) and str(record.get("backend")) in backends:
            frontends[hostname] = record
        elif hostname in applied.frontends:
            frontends[hostname] = applied.frontends[hostname]
    # A preview is a route too: snapshot's when its backend is in the worker, else its
    # applied one; a deleted preview goes.
    previews: dict[str, dict[str, Any]] = {}
    for name, preview in snapshot.previews.items():
        if name in backends:
            previews[name] = preview
        elif name in applied.previews:
            previews[name] = applied.previews[name]
    return Snapshot(
        snapshot.revision,
        frontends,
        backends,
        {},
        dict(snapshot.unreadable),
        snapshot.changes,
        previews,
    )


def pending_records(part: Snapshot, snapshot: Snapshot) -> list[str]:
    """The records (``frontends/<host>``, ``backends/<name>``, ``previews/<name>``) ``part``
    does not serve as ``snapshot`` says.

    A frontend or preview whose backend is pending is pending too: its route is not what
    ``snapshot`` means until its backend is.
    """
    backends = {
        name
        for name in set(part.backends) | set(snapshot.backends)
        if part.backends.get(name) != snapshot.backends.get(name)
    }
    frontends = set()
    for hostname in set(part.frontends) | set(snapshot.frontends):
        record = snapshot.frontends.get(hostname)
        target = str(record.get("backend")) if isinstance(record, dict) else None
        if part.frontends.get(hostname) != record or target in backends:
            frontends.add(hostname)
    previews = {
        name
        for name in set(part.previews) | set(snapshot.previews)
        if part.previews.get(name) != snapshot.previews.get(name) or name in backends
    }
    return sorted(
        [f"backends/{name}" for name in backends]
        + [f"frontends/{host}" for host in frontends]
        + [f"previews/{name}" for name in previews]
    )
