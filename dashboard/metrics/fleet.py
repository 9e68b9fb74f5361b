"""Series read from the load balancers' registrations in etcd: reloads and apply timings.

Each proxysync keeps its figures in its registration record ``<prefix>/lbs/<id>``
(deployer.lbregistration): ``reloads`` and ``applies`` count since that proxysync
started, so each load balancer's counters start again from zero when its proxysync
restarts, which Prometheus's ``rate()`` and ``increase()`` read as a counter reset.
A load balancer whose lease ended (its proxysync or HAProxy is gone) has no series
until it registers again; ``greenlight_load_balancers`` counts it as down.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from deployer.errors import StoreError
from deployer.etcdstore import EtcdStore
from deployer.lbfleet import LoadBalancer, Member

logger = logging.getLogger(__name__)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _bound(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def apply_buckets(figures: Any) -> tuple[list[tuple[str, float]], float] | None:
    """An ``applies`` entry of a registration as (cumulative buckets, sum); None if malformed."""
    if not isinstance(figures, dict):
        return None
    count, total, buckets = figures.get("count"), figures.get("sum"), figures.get("buckets")
    if _count(count) is None or not isinstance(total, int | float) or not isinstance(buckets, dict):
        return None
    pairs: list[tuple[float, str, int]] = []
    for text, value in buckets.items():
        bound, number = _bound(str(text)), _count(value)
        if bound is None or number is None:
            return None
        pairs.append((bound, repr(bound), number))
    pairs.sort()
    series: list[tuple[str, float]] = [(label, number) for _, label, number in pairs]
    series.append(("+Inf", count))
    return series, float(total)


def fleet_families(
    balancers: list[LoadBalancer], members: list[Member], *, up: bool
) -> Iterator[Metric]:
    """The fleet's families from what etcd holds (``up``: whether etcd could be read)."""
    etcd = GaugeMetricFamily(
        "greenlight_etcd_up",
        "1 when the load balancers' records in etcd could be read for this scrape, else 0.",
    )
    etcd.add_metric([], 1 if up else 0)
    yield etcd
    count = GaugeMetricFamily(
        "greenlight_load_balancers",
        "Load balancers of the fleet by state: live (registered on its lease) or down "
        "(a member whose proxysync does not answer).",
        labels=["state"],
    )
    reloads = CounterMetricFamily(
        "greenlight_proxysync_reloads",
        "HAProxy reloads proxysync made since it started, per load balancer.",
        labels=["lb"],
    )
    applies = HistogramMetricFamily(
        "greenlight_proxysync_apply_seconds",
        "Seconds from the start of an apply until HAProxy served it, per load balancer and "
        "how it applied (runtime: through the runtime API; reload), since proxysync started.",
        labels=["lb", "how"],
    )
    if up:
        count.add_metric(["live"], len(balancers))
        count.add_metric(["down"], sum(not member.registered for member in members))
    for balancer in balancers:
        record = balancer.record
        number = _count(record.get("reloads"))
        if number is not None:
            reloads.add_metric([balancer.id], number)
        timings = record.get("applies")
        if not isinstance(timings, dict):
            continue
        for how in sorted(timings):
            parsed = apply_buckets(timings[how])
            if parsed is not None:
                applies.add_metric([balancer.id, str(how)], *parsed)
    yield count
    yield reloads
    yield applies


def fleet() -> Iterator[Metric]:
    """:func:`fleet_families` of the configured etcd; an unreachable etcd is a 0, not an error."""
    try:
        with EtcdStore() as store:
            balancers, members, _ = store.fleet()
    except StoreError as exc:
        logger.warning("metrics: the load balancers' records could not be read: %s", exc)
        yield from fleet_families([], [], up=False)
        return
    yield from fleet_families(balancers, members, up=True)
