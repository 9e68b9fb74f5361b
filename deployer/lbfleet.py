"""The load balancer fleet as etcd describes it: leases, live load balancers, and waits for all.

Plain data, without etcd: deployer.etcdstore reads and writes them, the workflow and
rotation read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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


@dataclass(frozen=True)
class FleetWait:
    """What waiting for every live load balancer came to; true when all of them got there.

    ``seconds``: load balancer id -> seconds from the write until it was seen to report
    the revision. ``balancers``: the live ones when the wait ended. ``refused_by`` names
    the load balancer that refused the configuration; ``problem`` says why the wait
    failed.
    """

    reached: bool
    revision: int
    seconds: dict[str, float]
    balancers: tuple[LoadBalancer, ...] = ()
    refused_by: str | None = None
    problem: str = ""

    def __bool__(self) -> bool:
        return self.reached

    def summary(self) -> str:
        """Each load balancer and how long it took, e.g. ``lb-0 in 14 ms, lb-1 in 18 ms``."""
        return ", ".join(
            f"{lb_id} in {seconds * 1000:.0f} ms" for lb_id, seconds in sorted(self.seconds.items())
        )
