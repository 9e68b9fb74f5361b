"""Typed frontend and backend records: what proxysync renders, parsed and checked first.

Records come from etcd, which anyone with access can write. Each one is parsed into a
typed record; one of the wrong shape (a string port, servers that are not a list, a
health path HAProxy would read as two words) is skipped and reported with its key and
reason, never rendered, so that it can neither crash proxysync nor break the
configuration of every other app.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

R = TypeVar("R")

_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,252})$")
_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
# The health path grammar of deployer.validation: nothing HAProxy would split or interpret.
_PATH = re.compile(r"^/[A-Za-z0-9._~!$&()*+,;=:@%/-]{0,199}$")
_DNS_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")


class RecordError(ValueError):
    """A record of the wrong shape; the message says what is wrong."""


@dataclass(frozen=True)
class ServerRecord:
    """One server of a backend: a pod's name, address and port."""

    name: str
    address: str
    port: int

    def as_json(self) -> dict[str, Any]:
        """The record's JSON form."""
        return {"name": self.name, "address": self.address, "port": self.port}


@dataclass(frozen=True)
class BackendRecord:
    """A version's backend: its servers and how HAProxy checks them."""

    name: str
    servers: tuple[ServerRecord, ...]
    check_path: str | None = None
    check_port: int | None = None
    timeout_server: float | None = None

    def as_json(self) -> dict[str, Any]:
        """The fields the renderer reads, of the right types."""
        record: dict[str, Any] = {"servers": [s.as_json() for s in self.servers]}
        if self.check_path is not None:
            record["check_path"] = self.check_path
        if self.check_port is not None:
            record["check_port"] = self.check_port
        if self.timeout_server is not None:
            record["timeout_server"] = self.timeout_server
        return record


@dataclass(frozen=True)
class FrontendRecord:
    """A hostname and the backend it routes to."""

    hostname: str
    backend: str


def _port(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise RecordError(f"{what} must be a number from 1 to 65535, not {value!r}")
    return value


def _address(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise RecordError(f"a server address must be text, not {value!r}")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        if _DNS_NAME.match(value):
            return value
    raise RecordError(f"{value[:80]!r} is neither an IP address nor a host name")


def parse_server(value: Any) -> ServerRecord:
    """A server entry, or RecordError."""
    if not isinstance(value, dict):
        raise RecordError(f"a server must be an object, not {type(value).__name__}")
    name = value.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise RecordError(f"a server name must be a DNS-like name, not {name!r}")
    return ServerRecord(name, _address(value.get("address")), _port(value.get("port"), "port"))


def parse_backend(name: str, value: Any) -> BackendRecord:
    """The backend record ``name``, or RecordError."""
    if not _NAME.match(name):
        raise RecordError(f"{name[:80]!r} is not a backend name")
    if not isinstance(value, dict):
        raise RecordError(f"a backend record must be an object, not {type(value).__name__}")
    servers = value.get("servers", [])
    if not isinstance(servers, list):
        raise RecordError(f"servers must be a list, not {type(servers).__name__}")
    parsed = tuple(parse_server(server) for server in servers)
    names = [server.name for server in parsed]
    if len(set(names)) != len(names):
        raise RecordError("two servers have the same name")
    check_path = value.get("check_path")
    if check_path is not None and (not isinstance(check_path, str) or not _PATH.match(check_path)):
        raise RecordError(f"check_path {str(check_path)[:80]!r} is not a plain path")
    check_port = value.get("check_port")
    if check_port is not None:
        check_port = _port(check_port, "check_port")
    timeout = value.get("timeout_server")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600
    ):
        raise RecordError(f"timeout_server must be seconds from 0 to 3600, not {timeout!r}")
    return BackendRecord(name, parsed, check_path, check_port, timeout)


# Backend records parsed before, by name and JSON: proxysync renders every record at
# every change, and most records have not changed since the last render.
_PARSED: dict[tuple[str, str], BackendRecord] = {}
PARSED_MAX = 8192


def parse_backend_once(name: str, value: Any) -> BackendRecord:
    """parse_backend, remembered by the record's name and JSON (a record parses the same)."""
    try:
        key = (name, json.dumps(value, sort_keys=True))
    except (TypeError, ValueError):
        return parse_backend(name, value)
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = parse_backend(name, value)  # RecordError: not remembered
        if len(_PARSED) >= PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = parsed
    return parsed


def parse_frontend(hostname: str, value: Any) -> FrontendRecord:
    """The frontend record of ``hostname``, or RecordError."""
    if not isinstance(value, dict):
        raise RecordError(f"a frontend record must be an object, not {type(value).__name__}")
    if not _HOST.match(hostname.lower()):
        raise RecordError(f"{hostname[:80]!r} is not a hostname")
    backend = value.get("backend")
    if not isinstance(backend, str) or not _NAME.match(backend):
        raise RecordError(f"backend must be a backend name, not {str(backend)[:80]!r}")
    return FrontendRecord(hostname.lower(), backend)


def clean(
    frontends: Mapping[str, Any], backends: Mapping[str, Any]
) -> tuple[dict[str, FrontendRecord], dict[str, BackendRecord], dict[str, str]]:
    """Every record that parses, and ``key -> reason`` for each one skipped.

    Keys are relative to the prefix: ``frontends/<hostname>``, ``backends/<name>``.
    """
    skipped: dict[str, str] = {}
    good_backends = _parse_each("backends", backends, parse_backend_once, skipped)
    good_frontends = _parse_each("frontends", frontends, parse_frontend, skipped)
    return good_frontends, good_backends, skipped


def _parse_each(
    folder: str,
    records: Mapping[str, Any],
    parse: Callable[[str, Any], R],
    skipped: dict[str, str],
) -> dict[str, R]:
    """The records that parse, by name; each one that does not goes to ``skipped`` with why."""
    good: dict[str, R] = {}
    for name, value in sorted(records.items()):
        try:
            good[name] = parse(name, value)
        except RecordError as exc:
            skipped[f"{folder}/{name}"] = str(exc)
    return good
