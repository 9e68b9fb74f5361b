"""Replica-hours (and node-hours) saved by schedules, integrated from the scaling runs' history.

Definition (the README's *Metrics* says the same): each finished scaling run records,
per app or node group it changed, the size before (``from``) and after (``to``). A
schedule run that applies (not a window's end) opens a *scheduled stretch* for a
target when none is open; the stretch's reference is the ``from`` of that first
change, the size the target had before a schedule took it over (what Greenlight
remembers as its baseline). While the stretch is open the target saves
``max(0, reference - to)`` replicas (or nodes) per hour, ``to`` being the last size a
schedule gave it. The stretch ends at a window's end (a restore run) or at a manual
change (Scale, Set capacity). Changes take effect at their run's ``finished_at``; runs
that did not change the target (skipped, superseded, waiting, dry runs) do not count.

The sum is integrated up to ``now - SETTLE``: a run is counted once it finished more
than ``SETTLE`` ago, so a run that commits late never makes an already reported
value shrink. With the history kept, the value can only grow, as a counter must.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, Metric

from deployer.models import App
from scaling.models import NodeGroup, ScalingRun

SETTLE = timedelta(seconds=60)
# Outcomes of a change that left the target at its ``to`` size (scaling.runner).
APPLIED = frozenset({"scaled", "unchanged", "scaled out", "scaled in"})
MANUAL = (ScalingRun.Kind.SCALE_APP, ScalingRun.Kind.SET_CAPACITY)


@dataclass
class Stretch:
    """The integration state of one target: the open stretch's reference and level."""

    saved_hours: float = 0.0
    reference: int | None = None
    level: int = 0
    since: datetime | None = None

    def advance(self, until: datetime) -> None:
        """Add what the open stretch saved from ``since`` to ``until``."""
        if self.reference is not None and self.since is not None and until > self.since:
            hours = (until - self.since).total_seconds() / 3600
            self.saved_hours += max(0, self.reference - self.level) * hours
        self.since = until

    def change(self, at: datetime, *, scheduled: bool, before: int, after: int) -> None:
        """A change at ``at``: a schedule's opens or moves the stretch, any other ends it."""
        self.advance(at)
        if not scheduled:
            self.reference = None
            return
        if self.reference is None:
            self.reference = before
        self.level = after


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def integrate(
    runs: Iterable[tuple[str, str, datetime, Any]], horizon: datetime
) -> dict[str, float]:
    """Hours saved per target key (``app:<id>``, ``node_group:<id>``) up to ``horizon``.

    ``runs``: ``(kind, event, finished_at, result)`` of finished runs, oldest first.
    """
    stretches: dict[str, Stretch] = {}
    for kind, event, finished_at, result in runs:
        if finished_at > horizon or not isinstance(result, list):
            continue
        scheduled = kind == ScalingRun.Kind.SCHEDULE and event != "restore"
        for entry in result:
            if not isinstance(entry, dict) or entry.get("outcome") not in APPLIED:
                continue
            key, before, after = entry.get("key"), _int(entry.get("from")), _int(entry.get("to"))
            if not isinstance(key, str) or before is None or after is None:
                continue
            stretch = stretches.setdefault(key, Stretch())
            stretch.change(finished_at, scheduled=scheduled, before=before, after=after)
    for stretch in stretches.values():
        stretch.advance(horizon)
    return {key: stretch.saved_hours for key, stretch in stretches.items()}


def saved_hours(now: datetime | None = None) -> dict[str, float]:
    """:func:`integrate` over the stored runs that changed sizes, up to ``now - SETTLE``."""
    horizon = (now or timezone.now()) - SETTLE
    runs = (
        ScalingRun.objects.filter(
            Q(kind=ScalingRun.Kind.SCHEDULE) | Q(kind__in=MANUAL),
            finished_at__isnull=False,
            finished_at__lte=horizon,
        )
        .exclude(result=[])
        .order_by("finished_at", "pk")
        .values_list("kind", "event", "finished_at", "result")
    )
    return integrate(runs.iterator(chunk_size=500), horizon)


def savings(now: datetime | None = None) -> Iterator[Metric]:
    """``greenlight_schedule_replica_hours_saved_total`` and ``..._node_hours_saved_total``."""
    hours = saved_hours(now)
    replicas = CounterMetricFamily(
        "greenlight_schedule_replica_hours_saved",
        "Replica-hours schedules saved: the replicas a schedule ran below the app's size "
        "before it took over, integrated over time (README, Metrics).",
        labels=["app", "namespace"],
    )
    apps = App.objects.values_list("pk", "name", "namespace")
    for pk, name, namespace in apps:
        if f"app:{pk}" in hours:
            replicas.add_metric([name, namespace], hours[f"app:{pk}"])
    yield replicas
    nodes = CounterMetricFamily(
        "greenlight_schedule_node_hours_saved",
        "Node-hours schedules saved: the nodes a schedule ran below the group's size before "
        "it took over, integrated over time (README, Metrics).",
        labels=["node_group"],
    )
    for pk, name in NodeGroup.objects.values_list("pk", "name"):
        if f"node_group:{pk}" in hours:
            nodes.add_metric([name], hours[f"node_group:{pk}"])
    yield nodes
