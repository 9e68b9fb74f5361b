"""What the load balancers serve, as the Load balancer page and its API show it.

Every live load balancer (registered under ``<prefix>/lbs/<id>``) with what it
acknowledged, every member whose proxysync is down (``<prefix>/members/<id>`` without a
live lease: its HAProxy may still serve its last routes), the routes and backends in
etcd, and the records left out. Records are
read as they are: a field of the wrong type reads as unknown, never as an error.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, TypedDict

from django.utils.dateparse import parse_datetime

from deployer.errors import StoreError
from deployer.etcdstore import EtcdStore
from deployer.lbfleet import LoadBalancer, Member, haproxy_accepts

logger = logging.getLogger(__name__)


class BackendRow(TypedDict):
    """One backend record: its name, the app version it serves, its servers, its hostnames."""

    name: str
    version: str
    servers: list[str]
    leaving: list[str]
    hostnames: list[str]
    problem: str
    # Unrouted and without servers: a version's record written ahead of its pods, such as
    # the standby a succeeded deploy leaves for the next one (deployer.deploy).
    standby: bool


class SkippedRow(TypedDict):
    """A record a load balancer left out, with its full key and why."""

    key: str
    reason: str


class LeftOutRow(TypedDict):
    """A record left out by one or more load balancers: its full key, why, and by which ones."""

    key: str
    reason: str
    balancers: list[str]


class RejectedRow(TypedDict):
    """The last configuration a load balancer refused: the etcd revision and HAProxy's error."""

    revision: int
    error: str


class BalancerRow(TypedDict):
    """One live load balancer: its registration, its last acknowledgement and how far behind it is.

    ``lag`` is how many changes of frontend or backend records it has not applied yet (0
    when it is up to date; the fleet's own acknowledgements and registrations do not
    count); None, like every other unknown, until the load balancer has acknowledged a
    revision. ``state`` is "live" (registered on its lease) or "proxysync down" (a member
    without a live lease); ``haproxy_answers`` says, for the latter, whether its HAProxy
    still accepts connections (None for a live one).
    """

    id: str
    state: str
    haproxy_answers: bool | None
    address: str
    healthy: bool
    error: str | None
    haproxy_version: str | None
    started_at: datetime | None
    last_reload_at: datetime | None
    reloads: int
    applied_revision: int | None
    applied_at: datetime | None
    lag: int | None
    reloaded: bool | None
    seconds: float | None
    rejected: RejectedRow | None
    drained_revision: int | None
    skipped: list[SkippedRow]


class LoadBalancerStatus(TypedDict):
    """The fleet and the records in etcd at ``revision``; ``error`` (and nothing else) when etcd is down.

    ``newest_applied`` is the newest revision any live load balancer applied: one that
    applied an older one is behind the rest of the fleet. ``live`` and ``down`` count the
    live load balancers and the members whose proxysync is down.
    """

    error: str
    prefix: str
    revision: int
    newest_applied: int
    live: int
    down: int
    balancers: list[BalancerRow]
    backends: list[BackendRow]
    skipped: list[LeftOutRow]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: Any) -> int | None:
    # bool is an int to Python, never a count here.
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_datetime(value)
    except ValueError:
        return None


def _skipped(prefix: str, applied: dict[str, Any]) -> list[SkippedRow]:
    skipped = applied.get("skipped")
    if not isinstance(skipped, dict):
        return []
    return [
        SkippedRow(key=f"{prefix}/{key}", reason=_text(reason))
        for key, reason in sorted(skipped.items())
    ]


def _rejected(applied: dict[str, Any]) -> RejectedRow | None:
    rejected = applied.get("rejected")
    if not isinstance(rejected, dict):
        return None
    return RejectedRow(
        revision=_count(rejected.get("revision")) or 0, error=_text(rejected.get("error"))
    )


def lag(applied: dict[str, Any], changes: tuple[int, int]) -> int | None:
    """How many routing changes (of ``changes``: count, revision of the last) are not applied.

    An acknowledgement says how many changes it includes; one that does not (a refusal)
    is counted by revision: behind by at least one when the last change is newer.
    """
    applied_revision = _count(applied.get("revision"))
    if applied_revision is None:
        return None
    count, last_revision = changes
    included = _count(applied.get("changes"))
    if included is not None:
        return max(0, count - included)
    return 0 if applied_revision >= last_revision else 1


def balancer_row(balancer: LoadBalancer, changes: tuple[int, int], prefix: str) -> BalancerRow:
    """One live load balancer as the page and the API show it; ``changes`` as :func:`lag`."""
    record = balancer.record
    applied = balancer.applied or {}
    applied_revision = _count(applied.get("revision"))
    seconds = applied.get("reload_seconds", applied.get("runtime_seconds"))
    reloaded = applied.get("reloaded")
    return BalancerRow(
        id=balancer.id,
        state="live",
        haproxy_answers=None,
        address=_text(record.get("address")),
        healthy=record.get("healthy") is True,
        error=_optional_text(record.get("error")),
        haproxy_version=_optional_text(record.get("haproxy_version")),
        started_at=_time(record.get("started_at")),
        last_reload_at=_time(record.get("last_reload_at")),
        reloads=_count(record.get("reloads")) or 0,
        applied_revision=applied_revision,
        applied_at=_time(applied.get("at")),
        lag=lag(applied, changes),
        reloaded=reloaded if isinstance(reloaded, bool) else None,
        seconds=float(seconds) if isinstance(seconds, int | float) else None,
        rejected=_rejected(applied),
        drained_revision=_count((balancer.drained or {}).get("revision")),
        skipped=_skipped(prefix, applied),
    )


def _left_out(balancers: list[BalancerRow]) -> list[LeftOutRow]:
    """Every record some load balancer left out, once, naming each load balancer that did."""
    rows: dict[str, LeftOutRow] = {}
    for balancer in balancers:
        for skipped in balancer["skipped"]:
            row = rows.setdefault(
                skipped["key"],
                LeftOutRow(key=skipped["key"], reason=skipped["reason"], balancers=[]),
            )
            row["balancers"].append(balancer["id"])
    return [rows[key] for key in sorted(rows)]


def member_row(member: Member) -> BalancerRow:
    """A member whose proxysync is down: what its record says, and whether its HAProxy answers."""
    return BalancerRow(
        id=member.id,
        state="proxysync down",
        haproxy_answers=haproxy_accepts(member.address),
        address=member.address,
        healthy=False,
        error=None,
        haproxy_version=None,
        started_at=_time(member.registered_at),
        last_reload_at=None,
        reloads=0,
        applied_revision=None,
        applied_at=None,
        lag=None,
        reloaded=None,
        seconds=None,
        rejected=None,
        drained_revision=None,
        skipped=[],
    )


def fleet(store: EtcdStore) -> tuple[int, list[BalancerRow]]:
    """etcd's revision and every member of the fleet by id: live ones with their lag.

    StoreError when etcd cannot be read.
    """
    changes = store.changes()  # first: a change written meanwhile is not counted as applied
    balancers, members, revision = store.fleet()
    rows = {balancer.id: balancer_row(balancer, changes, store.prefix) for balancer in balancers}
    rows.update({m.id: member_row(m) for m in members if not m.registered})
    return revision, [rows[lb_id] for lb_id in sorted(rows)]


def load_balancers() -> tuple[int, list[BalancerRow]]:
    """:func:`fleet` of the configured etcd (what ``GET /api/load-balancers/`` lists)."""
    with EtcdStore() as store:
        return fleet(store)


def load_balancer_status() -> LoadBalancerStatus:
    """Read the fleet, every record and etcd's revision; never raises for an unreachable etcd."""
    status = LoadBalancerStatus(
        error="",
        prefix="",
        revision=0,
        newest_applied=0,
        live=0,
        down=0,
        balancers=[],
        backends=[],
        skipped=[],
    )
    try:
        with EtcdStore() as store:
            status["prefix"] = store.prefix
            snapshot = store.snapshot()
            status["revision"], status["balancers"] = fleet(store)
    except StoreError as exc:
        logger.warning("load balancer status: %s", exc)
        status["error"] = f"etcd could not be read: {exc}"
        return status
    status["skipped"] = _left_out(status["balancers"])
    applied = [row["applied_revision"] or 0 for row in status["balancers"]]
    status["newest_applied"] = max(applied, default=0)
    status["live"] = sum(row["state"] == "live" for row in status["balancers"])
    status["down"] = len(status["balancers"]) - status["live"]
    problems = {row["key"]: row["reason"] for row in status["skipped"]}
    hosts: dict[str, list[str]] = {}
    for hostname, frontend in snapshot.frontends.items():
        if isinstance(frontend, dict):
            hosts.setdefault(_text(frontend.get("backend")), []).append(hostname)
    for name, record in sorted(snapshot.backends.items()):
        record = record if isinstance(record, dict) else {}
        listed = isinstance(record.get("servers"), list)
        servers = record["servers"] if listed else []
        problem = problems.get(store.backend_key(name), "")
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
                problem=problem,
                # A record that lists no servers because it is broken is no standby.
                standby=listed
                and not servers
                and not problem
                and not hosts.get(name)
                and not record.get("leaving"),
            )
        )
    return status
