"""The guard after the switch with fake collaborators and canned HAProxy stats pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from deployer import events, guard
from deployer.collaborators import StopDeployment
from deployer.deploy import DeployWorkflow
from deployer.guardcounters import BackendCounters, Tally, parse_stats_csv
from deployer.lbfleet import LoadBalancer
from deployer.models import App, Deployment
from deployer.promql import Sample, breaching
from deployer.workflow import backend_name
from tests.deployer.fakes import FakeClock, FakeCluster, FakeHealth, FakeLB, ListSink
from tests.deployer.guardkit import Row, StatsServer, prometheus_server, stats_csv, stats_server

Run = Callable[..., Deployment]


class StatsLB(FakeLB):
    """A fleet whose load balancers register the stats address of a canned stats page."""

    stats: dict[str, str]

    def load_balancers(self) -> list[LoadBalancer]:
        return [
            LoadBalancer(
                b.id,
                {**b.record, "stats_address": getattr(self, "stats", {}).get(b.id)},
                b.applied,
                b.drained,
            )
            for b in super().load_balancers()
        ]


@pytest.fixture
def lb() -> StatsLB:
    return StatsLB()


@pytest.fixture
def stats(lb: StatsLB) -> Iterator[StatsServer]:
    with stats_server() as server:
        lb.stats = {"lb-0": server.address}
        yield server


@pytest.fixture
def announced() -> Iterator[list[dict[str, Any]]]:
    heard: list[dict[str, Any]] = []

    def listen(**kwargs: Any) -> None:
        heard.append(kwargs)

    events.event_emitted.connect(listen)
    yield heard
    events.event_emitted.disconnect(listen)


def baked(app: App, **guard: Any) -> App:
    """``app`` with a bake of 5 s and ``guard`` settings."""
    App.objects.filter(pk=app.pk).update(
        guard_bake_seconds=5, guard_min_requests=20, guard_max_error_percent=5.0, **guard
    )
    app.refresh_from_db()
    return app


def traffic(
    clock: FakeClock, stats: StatsServer, app: App, per_second: list[tuple[int, int]]
) -> None:
    """Each second of the bake, the new version (v2) answers ``(ok, errors)`` more requests."""
    new = backend_name("default", app.name, 2)
    old = backend_name("default", app.name, 1)
    stats.backends = {new: Row(rtime=4, ttime=5), old: Row(ok=40, rtime=3, ttime=4)}
    seconds = iter(per_second)

    def tick() -> None:
        ok, errors = next(seconds, (0, 0))
        row = stats.backends[new]
        stats.backends[new] = Row(row.ok + ok, row.errors + errors, row.rtime, row.ttime)

    clock.on_sleep = tick


def test_it_reads_the_backends_of_a_stats_export() -> None:
    text = stats_csv({"default.app-v2": Row(ok=50, errors=2, rtime=7, ttime=9)})

    assert parse_stats_csv(text) == {
        "default.app-v2": BackendCounters(requests=52, errors=2, rtime_ms=7, ttime_ms=9)
    }
    with pytest.raises(ValueError, match="not a HAProxy stats CSV"):
        parse_stats_csv("<html>login</html>")


def test_a_counter_that_goes_down_is_a_reset_and_the_new_count_is_added() -> None:
    tally = Tally()
    for requests, errors in ((10, 1), (30, 3), (5, 2), (12, 2)):
        tally.add(BackendCounters(requests, errors))

    # 20 before the reload, then the new worker's 5 and its 7 more.
    assert (tally.requests, tally.errors, tally.resets) == (32, 4, 1)


def test_only_non_zero_samples_breach() -> None:
    samples = [Sample({"a": "1"}, 0.0), Sample({}, float("nan")), Sample({"b": "2"}, 0.2)]

    assert breaching(samples) == [samples[2]]


def test_it_swaps_back_when_the_new_version_answers_5xx(
    app: App,
    run_workflow: Run,
    lb: StatsLB,
    clock: FakeClock,
    stats: StatsServer,
    announced: list[dict[str, Any]],
) -> None:
    run_workflow(app)
    traffic(clock, stats, baked(app), [(2, 8), (3, 9), (2, 10)])

    deployment = run_workflow(app, image="demo/bad-release:2")

    assert deployment.status == Deployment.Status.FAILED
    assert deployment.failure_reason.startswith(
        "guard: v2 answered 5xx to 17 of 22 requests (77.3%) in 2s, above 5%; v1 0 of 40 "
        "before the switch"
    ), deployment.failure_reason
    assert lb.live_version(app.frontend) == 1
    assert deployment.guard["state"] == "swapped_back"
    assert deployment.guard["new"]["errors"] == 17
    assert deployment.guard["previous_before"]["requests"] == 40
    assert deployment.steps["guard"]["state"] == "failed"
    assert deployment.steps["retire"]["state"] == "pending"
    assert [e["event"] for e in announced if e["event"] == "guard_swap_back"] == ["guard_swap_back"]
    app.refresh_from_db()
    assert app.live_version == 1


def test_a_good_release_passes_the_bake_and_the_old_version_retires(
    app: App,
    run_workflow: Run,
    lb: StatsLB,
    clock: FakeClock,
    stats: StatsServer,
    sink: ListSink,
) -> None:
    run_workflow(app)
    traffic(clock, stats, baked(app, guard_max_response_ms=50), [(20, 0)] * 5)

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.SUCCEEDED, deployment.failure_reason
    assert deployment.guard["state"] == "passed"
    assert deployment.guard["new"]["requests"] == 100
    assert lb.live_version(app.frontend) == 2
    lines = [m for _, _, m in sink.lines]
    assert any(m.startswith("Baking v2 for 5s") for m in lines), lines
    assert any(
        m.startswith("v2 passed the bake of 5s: v2 answered 5xx to 0 of 100 requests")
        for m in lines
    ), lines


def test_too_few_requests_are_not_judged(
    app: App, run_workflow: Run, clock: FakeClock, stats: StatsServer, sink: ListSink
) -> None:
    run_workflow(app)
    traffic(clock, stats, baked(app), [(0, 3), (0, 3), (0, 3)])

    deployment = run_workflow(app, image="demo/bad-release:2")

    assert deployment.status == Deployment.Status.SUCCEEDED
    assert any("without judgement" in m and "9 requests" in m for _, _, m in sink.lines)


def test_it_swaps_back_on_a_slow_average_response(
    app: App, run_workflow: Run, clock: FakeClock, stats: StatsServer
) -> None:
    run_workflow(app)
    traffic(clock, stats, baked(app, guard_max_response_ms=100), [(30, 0)])
    stats.backends[backend_name("default", app.name, 2)].rtime = 450

    deployment = run_workflow(app, image="demo/slow:2")

    assert deployment.status == Deployment.Status.FAILED
    assert deployment.failure_reason.startswith(
        "guard: v2 took 450 ms on average to answer 30 requests"
    ), deployment.failure_reason


def test_a_reload_during_the_bake_is_counted_across(
    app: App, run_workflow: Run, clock: FakeClock, stats: StatsServer
) -> None:
    run_workflow(app)
    baked(app)
    new = backend_name("default", app.name, 2)
    readings = iter([Row(10), Row(15), Row(3), Row(8, 19)])  # a reload before the third

    def tick() -> None:
        stats.backends[new] = next(readings, stats.backends[new])

    stats.backends = {new: Row(0)}
    clock.on_sleep = tick

    deployment = run_workflow(app, image="demo/bad-release:2")

    # 15 before the reload, 3 after it, then 5 answered and 19 failed.
    assert deployment.failure_reason.startswith(
        "guard: v2 answered 5xx to 19 of 42 requests (45.2%)"
    ), deployment.failure_reason
    assert deployment.guard["resets"] == 1


def test_it_skips_a_first_deploy_and_a_bake_of_zero(
    app: App, run_workflow: Run, sink: ListSink
) -> None:
    baked(app)
    first = run_workflow(app)
    App.objects.filter(pk=app.pk).update(guard_bake_seconds=0)
    second = run_workflow(app, image="demo/hello:2")

    assert first.status == second.status == Deployment.Status.SUCCEEDED
    guard_lines = [m for _, step, m in sink.lines if step == "guard"]
    assert "Guard skipped: there is no previous version to swap back to." in guard_lines
    assert "Guard skipped: the app's bake time is 0 s." in guard_lines
    assert first.guard == second.guard == {}


def test_an_unreachable_load_balancer_or_prometheus_never_swaps_back(
    app: App, run_workflow: Run, lb: StatsLB, sink: ListSink, settings: Any
) -> None:
    settings.GREENLIGHT_PROMETHEUS_URL = "http://127.0.0.1:9"
    run_workflow(app)
    baked(app, guard_promql="sum(rate(errors_total[1m])) > 1")
    lb.stats = {"lb-0": "http://127.0.0.1:9"}

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.SUCCEEDED
    lines = [m for _, step, m in sink.lines if step == "guard"]
    assert any(m.startswith("Cannot read the counters of load balancer lb-0") for m in lines)
    assert any(m.startswith("Prometheus could not answer the guard's query") for m in lines)


def test_a_non_zero_sample_of_the_promql_query_swaps_back(
    app: App, run_workflow: Run, stats: StatsServer, settings: Any
) -> None:
    with prometheus_server() as prometheus:
        prometheus.answer = {
            "status": "success",
            "data": {
                "resultType": "vector",
                "result": [{"metric": {"job": "shop"}, "value": [1700000000, "3"]}],
            },
        }
        settings.GREENLIGHT_PROMETHEUS_URL = prometheus.address
        run_workflow(app)
        baked(app, guard_promql='sum(rate(http_errors_total{job="shop"}[1m])) > 0')

        deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.FAILED
    assert deployment.failure_reason.startswith(
        "guard: the PromQL query 'sum(rate(http_errors_total{job=\"shop\"}[1m])) > 0' "
        'returned 1 non-zero sample in 1s ({job="shop"} = 3)'
    ), deployment.failure_reason
    assert prometheus.queries and prometheus.queries[0].startswith("query=sum")


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"guard_bake_seconds": 7200}, "guard_bake_seconds", "between 0 (no guard) and 3600"),
        ({"guard_max_error_percent": 101.0}, "guard_max_error_percent", "between 0 and 100"),
        ({"guard_max_error_percent": float("nan")}, "guard_max_error_percent", "between 0"),
        ({"guard_min_requests": 0}, "guard_min_requests", "at least 1"),
        ({"guard_max_response_ms": 0}, "guard_max_response_ms", "between 1 and 600000"),
        ({"guard_promql": "sum(rate(x[1m])"}, "guard_promql", "opens a '('"),
        ({"guard_promql": 'up{job="a}'}, "guard_promql", "quote that it does not close"),
        ({"guard_promql": "up > 0"}, "guard_promql", "GREENLIGHT_PROMETHEUS_URL"),
    ],
)
def test_bad_guard_settings_are_refused_with_the_field_and_what_to_fix(
    app: App, changes: dict[str, Any], field: str, message: str
) -> None:
    for name, value in changes.items():
        setattr(app, name, value)

    with pytest.raises(ValidationError) as refused:
        app.full_clean()

    assert field in refused.value.message_dict, refused.value.message_dict
    assert any(message in text for text in refused.value.message_dict[field])


def service_mode_workflow(app: App, lb: FakeLB, clock: FakeClock, sink: ListSink) -> DeployWorkflow:
    """A deploy of v2 of ``app`` in traffic mode service, switched and verified, v1 warm."""
    App.objects.filter(pk=app.pk).update(traffic="service")
    app.refresh_from_db()
    deployment = Deployment.objects.create(
        app=app, image="demo/hello:2", descriptor=app.snapshot(), version=2, previous_version=1
    )
    deployment.start(worker="test")
    workflow = DeployWorkflow(
        deployment=deployment,
        cluster=FakeCluster(),
        lb=lb,
        health=FakeHealth(lb),
        clock=clock,
        sink=sink,
    )
    workflow.previous_version = 1
    workflow.previous_backend = backend_name("default", app.name, 1)
    lb.backends[workflow.previous_backend] = {"servers": [], "version": 1}
    return workflow


def test_in_traffic_mode_service_the_new_backends_counters_are_the_new_versions(
    app: App, lb: StatsLB, clock: FakeClock, sink: ListSink, stats: StatsServer
) -> None:
    traffic(clock, stats, baked(app), [(2, 8), (3, 9), (2, 10)])
    workflow = service_mode_workflow(app, lb, clock, sink)

    with pytest.raises(StopDeployment) as breached:
        guard.watch(workflow)

    assert str(breached.value).startswith(
        "guard: v2 answered 5xx to 17 of 22 requests (77.3%) in 2s, above 5%; v1 0 of 40 "
        "before the switch"
    ), breached.value
    guard_lines = [m for _, step, m in sink.lines if step == "guard"]
    assert any(
        f"v2's figures are those of its backend default.{app.name}-v2, whose one server is the "
        f"stable Service {app.name}, which selects only v2's pods since the verified switch; "
        f"v1's backend default.{app.name}-v1 answered 5xx to 0 of 40 requests before the "
        "switch, through the stable Service while it selected v1." in line
        for line in guard_lines
    ), guard_lines
    assert any(f"(through the stable Service {app.name})" in line for line in guard_lines)
    stored = Deployment.objects.get(pk=workflow.deployment.pk).guard
    assert stored["state"] == "swapped_back"
    assert stored["counted"] is True and stored["traffic"] == "service"
    assert stored["new"]["errors"] == 17 and stored["previous_before"]["requests"] == 40


def test_an_abort_during_the_bake_swaps_back(
    app: App, run_workflow: Run, lb: StatsLB, clock: FakeClock, stats: StatsServer
) -> None:
    run_workflow(app)
    traffic(clock, stats, baked(app), [(10, 0)] * 5)
    ticks, readings = clock.on_sleep, []

    def abort_at_the_second_reading() -> None:
        ticks()
        readings.append(1)
        if len(readings) == 2:
            Deployment.objects.filter(version=2).update(abort_requested=True)

    clock.on_sleep = abort_at_the_second_reading

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.ABORTED
    assert deployment.steps["guard"]["state"] == "failed"
    assert lb.live_version(app.frontend) == 1


def test_counters_are_summed_across_the_fleet_and_an_unreadable_member_is_named(
    app: App, run_workflow: Run, lb: StatsLB, clock: FakeClock, sink: ListSink
) -> None:
    lb.fleet = {
        "lb-0": "http://127.0.0.1:8080",
        "lb-1": "http://127.0.0.1:8081",
        "lb-2": "http://127.0.0.1:8082",
    }
    run_workflow(app)
    baked(app)
    new = backend_name("default", app.name, 2)
    with stats_server() as first, stats_server() as second:
        lb.stats = {"lb-0": first.address, "lb-1": second.address}  # lb-2 registers none
        first.backends = {new: Row(0)}
        second.backends = {new: Row(0)}

        def tick() -> None:
            row, other = first.backends[new], second.backends[new]
            first.backends[new] = Row(row.ok + 10, row.errors)
            second.backends[new] = Row(other.ok + 5, other.errors + 1)

        clock.on_sleep = tick
        deployment = run_workflow(app, image="demo/hello:2")

    # 16 requests a second, one of them a 5xx (6.25%) on lb-1 only: above 5% at 2 s.
    assert deployment.failure_reason.startswith(
        "guard: v2 answered 5xx to 2 of 32 requests (6.2%) in 2s"
    ), deployment.failure_reason
    assert deployment.guard["balancers"] == ["lb-0", "lb-1"]
    assert "lb-2" in deployment.guard["unreadable"]
    assert any(
        m.startswith("Cannot read the counters of load balancer lb-2") for _, _, m in sink.lines
    )
