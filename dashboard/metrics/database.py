"""Series read from the database: deployments and their steps, scaling runs, drains, node groups.

Each family is one aggregate query (GROUP BY, with conditional counts for histogram
buckets; the step timings' is in :mod:`dashboard.metrics.steps`), so a scrape transfers
a row per label set, never a row per deployment or run.

Counters stay monotonic because they count only rows in a terminal status: a deployment
or scaling run that finished never changes status, outcome or step timings again, so
each count and sum can only grow while the rows are kept. Rows that are still queued
or running count once they finish (their steps included). Deleting an app deletes its
deployments, and with them its series: they end rather than go down.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    Q,
    Sum,
)
from django.db.models.expressions import Combinable
from django.db.models.lookups import LessThanOrEqual
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from dashboard.metrics.steps import step_times
from deployer.models import App, Deployment
from scaling.models import NodeGroup, ScalingRun

# From a switch (tens of milliseconds) to a slow image's pods (minutes).
STEP_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
SWITCH_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DRAIN_BUCKETS: tuple[float, ...] = (1, 5, 10, 30, 60, 120, 300, 600, 1800)


def bound_label(bound: float) -> str:
    """A bucket's ``le`` label as Prometheus clients write it (``0.5``, ``10.0``)."""
    return repr(float(bound))


def histogram(
    bounds: Sequence[float], counts: Sequence[int], total: int
) -> list[tuple[str, float]]:
    """Cumulative ``counts`` at ``bounds`` as a histogram sample's buckets, ending at +Inf."""
    return [*((bound_label(b), n) for b, n in zip(bounds, counts, strict=True)), ("+Inf", total)]


def bucket_aggregates(
    prefix: str, value: Combinable, bounds: Sequence[float | timedelta]
) -> dict[str, Aggregate]:
    """Aggregates ``<prefix>_count``, ``<prefix>_sum`` and ``<prefix>_le<i>`` of ``value``.

    ``_le<i>`` counts the values at most ``bounds[i]`` (cumulative, as a histogram's
    buckets are); a null value counts nowhere.
    """
    aggregates: dict[str, Aggregate] = {
        f"{prefix}_count": Count(value),
        f"{prefix}_sum": Sum(value),
    }
    for index, bound in enumerate(bounds):
        aggregates[f"{prefix}_le{index}"] = Count(value, filter=Q(LessThanOrEqual(value, bound)))
    return aggregates


def _seconds(value: Any) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value or 0.0)


def add_histogram(
    family: HistogramMetricFamily,
    labels: list[str],
    row: dict[str, Any],
    prefix: str,
    bounds: Sequence[float],
) -> None:
    """Add the sample of ``labels`` from a row of :func:`bucket_aggregates` (none if empty)."""
    count = int(row[f"{prefix}_count"] or 0)
    if not count:
        return
    counts = [int(row[f"{prefix}_le{index}"] or 0) for index in range(len(bounds))]
    family.add_metric(labels, histogram(bounds, counts, count), _seconds(row[f"{prefix}_sum"]))


def deployments() -> Iterator[Metric]:
    """``greenlight_deployments_total`` by app, namespace, kind and outcome."""
    family = CounterMetricFamily(
        "greenlight_deployments",
        "Deployments that finished, by app, namespace, kind (deploy, swap-back, undeploy) "
        "and outcome (succeeded, failed, aborted).",
        labels=["app", "namespace", "kind", "outcome"],
    )
    rows = (
        Deployment.objects.filter(status__in=Deployment.TERMINAL)
        .values_list("app__name", "app__namespace", "kind", "status")
        .annotate(n=Count("pk"))
        .order_by("app__namespace", "app__name", "kind", "status")
    )
    for name, namespace, kind, status, count in rows:
        family.add_metric([name, namespace, kind, status], count)
    yield family


def step_histograms() -> Iterator[Metric]:
    """``greenlight_deployment_step_seconds`` by kind and step, and ``greenlight_switch_seconds``.

    One pass over the finished deployments (dashboard.metrics.steps): every step their
    ``steps`` JSON timed (done or failed alike), and the switches that completed.
    """
    step_family = HistogramMetricFamily(
        "greenlight_deployment_step_seconds",
        "Seconds each step of a finished deployment took (done or failed), by kind and step.",
        labels=["kind", "step"],
    )
    switch_family = HistogramMetricFamily(
        "greenlight_switch_seconds",
        "Seconds from the traffic switch's write until every live load balancer served it, "
        "for the switches that completed, by kind (deploy, swap-back).",
        labels=["kind"],
    )
    for times in step_times(STEP_BUCKETS, SWITCH_BUCKETS):
        step_family.add_metric(
            [times.kind, times.step],
            histogram(STEP_BUCKETS, times.buckets, times.count),
            times.seconds,
        )
        if times.step == "switch" and times.done_count:
            switch_family.add_metric(
                [times.kind],
                histogram(SWITCH_BUCKETS, times.done_buckets, times.done_count),
                times.done_seconds,
            )
    yield step_family
    yield switch_family


def queue_depth() -> Iterator[Metric]:
    """``greenlight_deployment_queue_depth`` and ``greenlight_deployments_running`` per app."""
    queued = GaugeMetricFamily(
        "greenlight_deployment_queue_depth",
        "Deployments of the app waiting in its queue (queued, not started).",
        labels=["app", "namespace"],
    )
    running = GaugeMetricFamily(
        "greenlight_deployments_running",
        "Deployments of the app under way (running or awaiting promotion): 0 or 1.",
        labels=["app", "namespace"],
    )
    under_way = [s for s in Deployment.ACTIVE if s != Deployment.Status.QUEUED]
    rows = App.objects.annotate(
        queued=Count("deployments", filter=Q(deployments__status=Deployment.Status.QUEUED)),
        running=Count("deployments", filter=Q(deployments__status__in=under_way)),
    ).values_list("name", "namespace", "queued", "running")
    for name, namespace, waiting, active in rows:
        queued.add_metric([name, namespace], waiting)
        running.add_metric([name, namespace], active)
    yield queued
    yield running


def scaling_runs() -> Iterator[Metric]:
    """``greenlight_scaling_runs_total`` by kind and outcome, and ``greenlight_drain_seconds``."""
    runs = CounterMetricFamily(
        "greenlight_scaling_runs",
        "Scaling runs that finished, by kind (schedule, dry_run, scale_app, set_capacity, "
        "cordon, uncordon, drain) and outcome (succeeded, failed).",
        labels=["kind", "outcome"],
    )
    rows = (
        ScalingRun.objects.filter(status__in=ScalingRun.TERMINAL)
        .values_list("kind", "status")
        .annotate(n=Count("pk"))
        .order_by("kind", "status")
    )
    for kind, status, count in rows:
        runs.add_metric([kind, status], count)
    yield runs

    drains = HistogramMetricFamily(
        "greenlight_drain_seconds",
        "Seconds a node drain run took from its start to its end, by outcome.",
        labels=["outcome"],
    )
    took = ExpressionWrapper(F("finished_at") - F("started_at"), output_field=DurationField())
    bounds = [timedelta(seconds=bound) for bound in DRAIN_BUCKETS]
    drained = (
        ScalingRun.objects.filter(
            kind=ScalingRun.Kind.DRAIN,
            status__in=ScalingRun.TERMINAL,
            started_at__isnull=False,
            finished_at__isnull=False,
        )
        .values("status")
        .annotate(**bucket_aggregates("d", took, bounds))
        .order_by("status")
    )
    for row in drained:
        add_histogram(drains, [row["status"]], row, "d", DRAIN_BUCKETS)
    yield drains


def node_groups() -> Iterator[Metric]:
    """The desired, minimum and maximum nodes of each node group."""
    families = {
        field: GaugeMetricFamily(
            f"greenlight_node_group_{field}_nodes",
            f"The {what} of the node group, as Greenlight last set or recorded it.",
            labels=["node_group", "provider"],
        )
        for field, what in (
            ("desired", "desired capacity (nodes)"),
            ("min", "minimum size (nodes)"),
            ("max", "maximum size (nodes)"),
        )
    }
    rows = NodeGroup.objects.values_list("name", "provider", "desired", "min_size", "max_size")
    for name, provider, desired, low, high in rows:
        families["desired"].add_metric([name, provider], desired)
        families["min"].add_metric([name, provider], low)
        families["max"].add_metric([name, provider], high)
    yield from families.values()
