"""Step timings of the finished deployments, per kind and step, in one pass over their rows.

Each deployment's ``steps`` JSON (step -> ``{"state", "started", "seconds"}``) is unnested
once, with PostgreSQL's ``jsonb_each`` or SQLite's ``json_each``, into a materialized
table of (kind, step, seconds, state); the histograms' counts, sums and buckets are then
grouped by kind, step, completion and bucket, so each step's seconds is read once
and compared with the bounds once, and the database returns a row per combination,
whatever the number of deployments. Every step a workflow records is counted, whatever
its name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import connection

from deployer.models import Deployment

# The finished deployments' recorded steps that carry a number of seconds.
_TIMED = {
    "postgresql": """
        SELECT d.kind AS kind, s.key AS step,
               (s.value ->> 'seconds')::double precision AS seconds,
               s.value ->> 'state' AS state
        FROM {table} AS d CROSS JOIN LATERAL jsonb_each(d.steps) AS s
        WHERE d.status IN ({statuses})
          AND jsonb_typeof(d.steps) = 'object'
          AND jsonb_typeof(s.value -> 'seconds') = 'number'
    """,
    "sqlite": """
        SELECT d.kind AS kind, s.key AS step,
               json_extract(s.value, '$.seconds') AS seconds,
               json_extract(s.value, '$.state') AS state
        FROM {table} AS d, json_each(d.steps) AS s
        WHERE d.status IN ({statuses})
          AND json_type(d.steps) = 'object'
          AND s.type = 'object'
          AND json_type(s.value, '$.seconds') IN ('integer', 'real')
    """,
}


@dataclass
class StepTimes:
    """One kind's step: how many finished runs timed it, their total seconds, the buckets.

    ``buckets[i]`` counts the runs that took at most ``bounds[i]`` seconds (cumulative,
    as a histogram's buckets are); the ``done_`` figures count only the runs whose step
    completed, with their own bounds.
    """

    kind: str
    step: str
    count: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=list)
    done_count: int = 0
    done_seconds: float = 0.0
    done_buckets: list[int] = field(default_factory=list)


def _bucket_index(bounds: Sequence[float]) -> tuple[str, list[float]]:
    """A CASE giving the index of the first bound a row's seconds is at most (len: none)."""
    whens = " ".join("WHEN seconds <= %s THEN " + str(index) for index in range(len(bounds)))
    return f"CASE {whens} ELSE {len(bounds)} END", [float(bound) for bound in bounds]


def _cumulative(counts: list[int]) -> list[int]:
    total, result = 0, []
    for count in counts:
        total += count
        result.append(total)
    return result


def step_times(bounds: Sequence[float], done_bounds: Sequence[float]) -> list[StepTimes]:
    """Every (kind, step) some finished deployment timed, with both sets of buckets.

    The database groups the timed steps by kind, step, completion and the bucket each
    falls in (one row per combination, whatever the number of deployments); the
    cumulative buckets are summed up here.
    """
    vendor = connection.vendor
    if vendor not in _TIMED:
        raise NotImplementedError(f"step timings are read on PostgreSQL or SQLite, not {vendor}")
    statuses = sorted(Deployment.TERMINAL)
    timed = _TIMED[vendor].format(
        table=connection.ops.quote_name(Deployment._meta.db_table),
        statuses=", ".join(["%s"] * len(statuses)),
    )
    bucket, bucket_params = _bucket_index(bounds)
    done_bucket, done_params = _bucket_index(done_bounds)
    # The table name and placeholders only: every value is a parameter.
    sql = f"""
        WITH timed AS MATERIALIZED ({timed})
        SELECT kind, step, state = 'done', {bucket}, {done_bucket}, count(*), sum(seconds)
        FROM timed
        GROUP BY 1, 2, 3, 4, 5
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [*statuses, *bucket_params, *done_params])
        rows = cursor.fetchall()
    found: dict[tuple[str, str], StepTimes] = {}
    per_bucket: dict[tuple[str, str], list[int]] = {}
    per_done_bucket: dict[tuple[str, str], list[int]] = {}
    for kind, step, done, index, done_index, count, seconds in rows:
        key = (str(kind), str(step))
        times = found.setdefault(key, StepTimes(*key))
        counts = per_bucket.setdefault(key, [0] * (len(bounds) + 1))
        done_counts = per_done_bucket.setdefault(key, [0] * (len(done_bounds) + 1))
        times.count += int(count)
        times.seconds += float(seconds or 0.0)
        counts[int(index)] += int(count)
        if done:
            times.done_count += int(count)
            times.done_seconds += float(seconds or 0.0)
            done_counts[int(done_index)] += int(count)
    for key, times in found.items():
        times.buckets = _cumulative(per_bucket[key])[: len(bounds)]
        times.done_buckets = _cumulative(per_done_bucket[key])[: len(done_bounds)]
    return [found[key] for key in sorted(found)]
