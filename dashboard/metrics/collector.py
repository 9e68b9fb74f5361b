"""The collector that joins the database's and the fleet's series for one scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from dashboard.metrics import database, fleet, savings


class GreenlightCollector(Collector):
    """Every Greenlight series, computed when collected (see :mod:`dashboard.metrics`)."""

    def collect(self) -> Iterator[Metric]:
        """The families of one scrape: database aggregates, schedule savings, the fleet."""
        yield from database.deployments()
        yield from database.step_histograms()
        yield from database.queue_depth()
        yield from database.scaling_runs()
        yield from database.node_groups()
        yield from savings.savings()
        yield from fleet.fleet()

    def describe(self) -> Iterator[Metric]:
        """Nothing up front: describing would run every query at registration."""
        return iter(())


def registry() -> CollectorRegistry:
    """A registry holding only Greenlight's collector (no process or platform series)."""
    holder = CollectorRegistry(auto_describe=False)
    holder.register(GreenlightCollector())
    return holder
