"""What the load balancer serves, as the Load balancer page shows it: routes, backends, problems."""

from __future__ import annotations

import logging
from typing import Any, TypedDict

from deployer.errors import StoreError
from deployer.etcdstore import EtcdStore

logger = logging.getLogger(__name__)


class BackendRow(TypedDict):
    """One backend record: its name, the app version it serves, its servers, its hostnames."""

    name: str
    version: str
    servers: list[str]
    leaving: list[str]
    hostnames: list[str]
    problem: str


class SkippedRow(TypedDict):
    """A record the load balancer left out, with its full key and why."""

    key: str
    reason: str


class LoadBalancerStatus(TypedDict):
    """The records in etcd and what proxysync last acknowledged; ``error`` when etcd is down."""

    error: str
    prefix: str
    applied_revision: int
    reloaded: bool | None
    seconds: float | None
    rejected: str
    drained_revision: int
    backends: list[BackendRow]
    skipped: list[SkippedRow]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def load_balancer_status() -> LoadBalancerStatus:
    """Read every record and the acknowledgements once; never raises for an unreachable etcd."""
    status = LoadBalancerStatus(
        error="",
        prefix="",
        applied_revision=0,
        reloaded=None,
        seconds=None,
        rejected="",
        drained_revision=0,
        backends=[],
        skipped=[],
    )
    try:
        with EtcdStore() as store:
            status["prefix"] = store.prefix
            snapshot = store.snapshot()
            drained, _ = store.get(store.drained_key)
    except StoreError as exc:
        logger.warning("load balancer status: %s", exc)
        status["error"] = f"etcd could not be read: {exc}"
        return status
    applied = snapshot.applied if isinstance(snapshot.applied, dict) else {}
    status["applied_revision"] = int(applied.get("revision", 0) or 0)
    status["reloaded"] = applied.get("reloaded") if "reloaded" in applied else None
    seconds = applied.get("reload_seconds", applied.get("runtime_seconds"))
    status["seconds"] = float(seconds) if isinstance(seconds, int | float) else None
    rejected = applied.get("rejected")
    if isinstance(rejected, dict):
        status["rejected"] = f"revision {rejected.get('revision')}: {_text(rejected.get('error'))}"
    status["drained_revision"] = int((drained or {}).get("revision", 0) or 0)
    skipped = applied.get("skipped") if isinstance(applied.get("skipped"), dict) else {}
    hosts: dict[str, list[str]] = {}
    for hostname, frontend in snapshot.frontends.items():
        if isinstance(frontend, dict):
            hosts.setdefault(_text(frontend.get("backend")), []).append(hostname)
    for name, record in sorted(snapshot.backends.items()):
        record = record if isinstance(record, dict) else {}
        servers = record.get("servers") if isinstance(record.get("servers"), list) else []
        status["backends"].append(
            BackendRow(
                name=name,
                version=str(record.get("version", "")),
                servers=[
                    f"{s.get('name')} {s.get('address')}:{s.get('port')}"
                    for s in servers
                    if isinstance(s, dict)
                ],
                leaving=[str(n) for n in record.get("leaving", []) if isinstance(n, str)],
                hostnames=sorted(hosts.get(name, [])),
                problem=_text(skipped.get(f"backends/{name}")),
            )
        )
    status["skipped"] = [
        SkippedRow(key=f"{status['prefix']}/{key}", reason=_text(reason))
        for key, reason in sorted(skipped.items())
    ]
    return status
