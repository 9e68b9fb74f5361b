"""The load balancer fleet as etcd describes it: leases, live load balancers, members, waits.

Plain data, without etcd: deployer.etcdstore reads and writes them, the workflow and
rotation read them. The options of the store's route writes and fleet waits are typed
here too, so that the store, the Protocols the workflow and rotation declare, and test
fakes share one definition.

Two views of the fleet:

* the *live* load balancers, registered under ``lbs/<id>`` on a lease that their proxysync
  refreshes while their HAProxy answers;
* the *members*, one persistent record ``members/<id>`` (no lease) per load balancer that
  ever registered and did not stop cleanly. A member without a live lease is a load
  balancer whose proxysync is down (killed, hung, restarting) while its HAProxy may still
  serve users with the routes it had: a switch can go on without it (it keeps routing to
  the previous version, which still runs), but nothing it may still route to is stopped
  while its HAProxy accepts connections (:func:`haproxy_accepts`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict
from urllib.parse import urlsplit

# How long a waiter gives a member's HAProxy to accept a TCP connection.
PROBE_SECONDS = 0.5


def haproxy_accepts(address: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether something accepts TCP connections at ``address`` (``http://host:port``).

    A refusal, a timeout or an address that cannot be parsed all mean no: that HAProxy
    serves nobody, so no wait needs to hold for it.
    """
    try:
        parts = urlsplit(address if "//" in address else f"http://{address}")
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    if not host:
        return False
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class Member:
    """A load balancer of the fleet by its persistent record ``members/<id>``.

    ``registered``: whether it has a live lease now (``lbs/<id>``); a member that has not
    is one whose proxysync is down.
    """

    id: str
    address: str
    registered_at: str | None
    registered: bool


@dataclass(frozen=True)
class Lease:
    """An etcd lease: its id and the TTL etcd granted, in seconds."""

    id: int
    ttl: int


@dataclass(frozen=True)
class LoadBalancer:
    """One live load balancer: its registration and the revisions it acknowledged.

    ``record`` is what its proxysync registered under ``lbs/<id>`` (address, HAProxy
    version, health, reload figures); ``applied`` and ``drained`` are its records under
    ``applied/<id>`` and ``drained/<id>``, None until it wrote them.
    """

    id: str
    record: dict[str, Any]
    applied: dict[str, Any] | None
    drained: dict[str, Any] | None


ServerEntry = dict[str, Any]  # one server of a backend record: name, address, port


class RouteOptions(TypedDict, total=False):
    """What a route write (``put_route``) puts in its records besides the servers.

    ``backend_options``: the backend record's other fields (version, options);
    ``frontend_options``: the frontend record's ``options``. Both default to none.
    """

    backend_options: dict[str, Any] | None
    frontend_options: dict[str, Any] | None


class WaitOptions(TypedDict, total=False):
    """How a wait for the fleet (``wait_applied``, ``wait_drained``) may be cut short and timed.

    ``cancelled()`` true ends a wait that is not reached yet, unreached (default: never);
    ``since`` is the ``time.monotonic()`` the revision was written at, where each load
    balancer's time to report it is counted from (default: the start of the wait).
    ``records``: the wait is for these records only (``frontends/<hostname>``,
    ``backends/<name>``), so a load balancer that serves them as at the revision counts
    while other records of it wait for a reload (see :func:`reaches`); default: all.
    """

    cancelled: Callable[[], bool]
    since: float | None
    records: tuple[str, ...] | list[str] | None


def reaches(applied: dict[str, Any] | None, revision: int, records: Any = None) -> bool:
    """Whether a load balancer's ``applied`` record shows ``revision`` served.

    Served: the whole configuration at ``revision`` or later (``revision``), or, for a
    wait on given ``records`` only, a runtime update at ``revision`` or later
    (``runtime.revision``) that left none of them pending (``runtime.pending``: the
    records it could not apply without a reload, such as a route to a new backend).
    """
    if not applied:
        return False
    if int(applied.get("revision", 0)) >= revision:
        return True
    runtime = applied.get("runtime")
    if not records or not isinstance(runtime, dict):
        return False
    pending = set(runtime.get("pending") or ())
    return int(runtime.get("revision", 0)) >= revision and not pending.intersection(records)


def refuse_unknown(options: dict[str, Any], typed: Any) -> None:
    """Raise TypeError naming each key of ``options`` the TypedDict ``typed`` does not define.

    Options arrive as keyword arguments: a misspelt one must fail, not be ignored.
    """
    known = typed.__required_keys__ | typed.__optional_keys__
    if unknown := sorted(set(options) - known):
        raise TypeError(
            f"unexpected option {', '.join(unknown)}; {typed.__name__} takes "
            f"{', '.join(sorted(known))}"
        )


@dataclass(frozen=True)
class FleetWait:
    """What waiting for every live load balancer came to; true when all of them got there.

    ``seconds``: load balancer id -> seconds from the write until it was seen to report
    the revision. ``balancers``: the live ones when the wait ended. ``refused_by`` names
    the load balancer that refused the configuration; ``problem`` says why the wait
    failed. ``absent``: members without a live lease that the wait went on without
    (their proxysync does not answer). ``held_by``: members without a live lease whose
    HAProxy still accepted connections when the wait ended unreached: they may still route
    to what was about to stop, so it must not stop.
    """

    reached: bool
    revision: int
    seconds: dict[str, float]
    balancers: tuple[LoadBalancer, ...] = ()
    refused_by: str | None = None
    problem: str = ""
    absent: tuple[str, ...] = ()
    held_by: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.reached

    def summary(self) -> str:
        """Each load balancer and how long it took, e.g. ``lb-0 in 14 ms, lb-1 in 18 ms``."""
        return ", ".join(
            f"{lb_id} in {seconds * 1000:.0f} ms" for lb_id, seconds in sorted(self.seconds.items())
        )
