"""Greenlight's metrics in the Prometheus text format, computed at scrape time.

The web, worker, scheduler and proxysync processes are separate, so no process counts
in memory: every series is read, when Prometheus scrapes ``GET /metrics``, from where
each process already records its work. The database holds the deployments (their
outcome and each step's seconds), the scaling runs (their outcome, drains, the replica
changes schedules made) and the node groups; etcd holds each load balancer's
registration (its reloads and apply timings). Every process's work is therefore counted,
whichever process serves the scrape, without a multiprocess directory.

- :mod:`dashboard.metrics.database`: deployments, scaling runs, drains, node groups,
  queue depth, in a few aggregate queries;
- :mod:`dashboard.metrics.savings`: replica-hours and node-hours saved by schedules;
- :mod:`dashboard.metrics.fleet`: the load balancers' reloads and apply timings;
- :mod:`dashboard.metrics.collector`: the collector that joins them;
- :mod:`dashboard.metrics.views`: the route, behind ``GREENLIGHT_METRICS_TOKEN``.
"""
