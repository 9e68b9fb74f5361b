"""The blue-green workflow with fake collaborators: the happy path and every failure path."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from deployer.kinds import WORKFLOWS
from deployer.models import App, Deployment
from deployer.workflow import Workflow, backend_name
from tests.deployer.fakes import TRANSIENT, FakeClock, FakeCluster, FakeHealth, FakeLB, ListSink

Run = Callable[..., Deployment]


def test_it_deploys_the_first_version_and_points_the_frontend_at_it(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB
) -> None:
    deployment = run_workflow(app)

    assert deployment.status == Deployment.Status.SUCCEEDED
    assert deployment.version == 1
    assert cluster.versions_.keys() == {1}
    assert lb.frontends[app.frontend]["backend"] == backend_name("default", app.name, 1)
    servers = lb.backends[backend_name("default", app.name, 1)]["servers"]
    assert [s["address"] for s in servers] == ["127.1.1.1", "127.1.1.2"]
    assert {r["pod"] for r in deployment.health_results} == {s["name"] for s in servers}
    assert all(r["healthy"] for r in deployment.health_results)
    app.refresh_from_db()
    assert app.live_version == 1


def test_it_replaces_the_live_version_and_retires_the_old_one(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB
) -> None:
    run_workflow(app)
    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.SUCCEEDED
    assert (deployment.version, deployment.previous_version) == (2, 1)
    assert cluster.versions_.keys() == {2}
    assert lb.live_version(app.frontend) == 2
    assert backend_name("default", app.name, 1) not in lb.backends
    # v2's backend was written before the switch; v1 went only after the load balancer's
    # old workers drained the switch's revision.
    backend = lb.history.index(f"backend {backend_name('default', app.name, 2)}")
    switch = lb.history.index(f"point {app.frontend}->{backend_name('default', app.name, 2)}")
    assert backend < switch
    drained = lb.history.index(f"drained {lb.drained[-1]}")
    assert (
        switch
        < drained
        < lb.history.index(f"delete backend {backend_name('default', app.name, 1)}")
    )


def test_it_picks_the_version_after_the_highest_in_cluster_or_database(
    app: App, run_workflow: Run, cluster: FakeCluster
) -> None:
    cluster.add_live(7)
    deployment = run_workflow(app)
    assert deployment.version == 8


def test_it_keeps_the_previous_version_warm_when_asked(
    make_app: Callable[..., App],
    run_workflow: Run,
    cluster: FakeCluster,
    retired: list[tuple[int, int, float]],
) -> None:
    app = make_app(keep_old_seconds=60)
    run_workflow(app)
    deployment = run_workflow(app, image="demo/hello:2")

    assert cluster.versions_.keys() == {1, 2}
    assert retired == [(deployment.pk, 1, 60.0)]


def test_it_logs_every_step_with_its_duration(app: App, run_workflow: Run, sink: ListSink) -> None:
    deployment = run_workflow(app)

    names = ["prepare", "create", "pods", "health", "switch", "verify", "guard", "retire"]
    # The stored steps are a JSON object, whose keys PostgreSQL does not keep in order;
    # the log says in which order they ran.
    assert sorted(deployment.steps) == sorted(names)
    assert [step for _, step, message in sink.lines if "done in" in message] == names
    for name in names:
        assert deployment.steps[name]["state"] == "done"
        assert "seconds" in deployment.steps[name]
    assert "v1 is live at http://" in sink.text()


def test_it_rolls_back_when_the_image_cannot_be_pulled(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB, sink: ListSink
) -> None:
    run_workflow(app)
    writes = list(lb.writes)
    cluster.pod_outcome = lambda image: "pull" if image == "nope/nope:1" else "started"

    deployment = run_workflow(app, image="nope/nope:1")

    assert deployment.status == Deployment.Status.FAILED
    assert "could not be pulled" in deployment.failure_reason
    assert cluster.versions_.keys() == {1}
    # The frontend was never touched; v2's backend, written without servers as v2 was
    # created, is gone again.
    v2 = backend_name("default", app.name, 2)
    assert lb.writes == [*writes, f"backend {v2}", f"delete backend {v2}"]
    assert lb.live_version(app.frontend) == 1
    assert "panic: the end" in sink.text()  # the pod's last output is in the log


def test_it_writes_the_new_backend_without_servers_before_it_creates_the_version_and_a_standby(
    app: App,
    run_workflow: Run,
    cluster: FakeCluster,
    lb: FakeLB,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # So that the reload adding the backend happens while the pods start, not at the switch.
    at_create: list[dict[str, Any]] = []
    create_version = cluster.create_version

    def recording(descriptor: dict[str, Any], version: int) -> None:
        at_create.append(copy.deepcopy(lb.backends))
        create_version(descriptor, version)

    monkeypatch.setattr(cluster, "create_version", recording)

    deployment = run_workflow(app)

    assert deployment.status == Deployment.Status.SUCCEEDED
    v1 = backend_name("default", app.name, 1)
    assert at_create == [{v1: {**at_create[0][v1], "servers": []}}]
    assert at_create[0][v1]["version"] == 1
    # Its servers come once the pods run, then the frontend points at it; then the next
    # version's standby is written, without servers, for the next deploy.
    v2 = backend_name("default", app.name, 2)
    assert lb.writes == [
        f"backend {v1}",
        f"backend {v1}",
        f"point {app.frontend}->{v1}",
        f"backend {v2}",
    ]
    assert len(lb.backends[v1]["servers"]) == 2
    assert lb.backends[v2] == {**at_create[0][v1], "version": 2}

    again = run_workflow(app, image="demo/hello:2")

    # The next deploy finds it: the same record, then its servers.
    assert again.version == 2 and again.status == Deployment.Status.SUCCEEDED
    assert lb.writes[4:6] == [f"backend {v2}", f"backend {v2}"]
    assert lb.frontends[app.frontend]["backend"] == v2
    assert lb.backends[backend_name("default", app.name, 3)]["servers"] == []


def test_it_rolls_back_when_the_container_keeps_crashing(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB
) -> None:
    cluster.pod_outcome = lambda image: "crash"
    deployment = run_workflow(app, image="demo/crash")

    assert deployment.status == Deployment.Status.FAILED
    assert "CrashLoopBackOff" in deployment.failure_reason
    assert cluster.versions_ == {}
    assert lb.frontends == {}


def test_it_rolls_back_when_pods_never_start(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB
) -> None:
    cluster.pod_outcome = lambda image: "timeout"
    deployment = run_workflow(app)

    assert deployment.status == Deployment.Status.FAILED
    assert "did not start in time" in deployment.failure_reason
    assert cluster.versions_ == {}
    v1 = backend_name("default", app.name, 1)
    assert lb.writes == [f"backend {v1}", f"delete backend {v1}"]  # never routed
    assert lb.backends == {}


def test_it_rolls_back_when_a_pod_never_becomes_healthy(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB, health: FakeHealth
) -> None:
    run_workflow(app)
    writes = list(lb.writes)
    health.unhealthy = lambda pod, attempt: pod.version == 2 and pod.name.endswith("-1")

    deployment = run_workflow(app, image="demo/broken")

    assert deployment.status == Deployment.Status.FAILED
    assert "health checks did not pass within 30s" in deployment.failure_reason
    assert f"{app.name}-v2-1" in deployment.failure_reason
    assert cluster.versions_.keys() == {1}
    # The frontend was never touched; v2's backend, written as v2 was created, given its
    # servers before the health checks and never routed to, is gone again.
    v2 = backend_name("default", app.name, 2)
    assert lb.writes == [*writes, f"backend {v2}", f"backend {v2}", f"delete backend {v2}"]
    assert lb.live_version(app.frontend) == 1
    results = {r["pod"]: r["healthy"] for r in deployment.health_results}
    assert results == {f"{app.name}-v2-0": True, f"{app.name}-v2-1": False}


def test_it_retries_health_checks_with_backoff_until_a_slow_pod_passes(
    app: App, run_workflow: Run, health: FakeHealth, clock: object
) -> None:
    health.unhealthy = lambda pod, attempt: attempt < 4
    deployment = run_workflow(app)

    assert deployment.status == Deployment.Status.SUCCEEDED
    assert clock.slept[:4] == [0.05, 0.1, 0.2, 0.4]  # type: ignore[attr-defined]


def test_it_stops_before_the_switch_when_the_load_balancer_never_applies_the_new_backend(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB
) -> None:
    run_workflow(app)
    writes = list(lb.writes)
    lb.applies = False

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.FAILED
    assert "is proxysync running?" in deployment.failure_reason
    assert deployment.switched_at is None
    v2 = backend_name("default", app.name, 2)
    # Frontend untouched: v2's backend (written at the create and given its servers) is gone.
    assert lb.writes == [*writes, f"backend {v2}", f"backend {v2}", f"delete backend {v2}"]
    assert lb.frontends[app.frontend]["backend"] == backend_name("default", app.name, 1)
    assert backend_name("default", app.name, 2) not in lb.backends
    assert cluster.versions_.keys() == {1}


def test_it_swaps_back_when_the_load_balancer_never_applies_the_switch(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_workflow(app)
    point_frontend = lb.point_frontend

    def then_stop_applying(hostname: str, backend: str, options: object = None) -> int:
        lb.applies = False  # the backend was applied; the switch never is
        return point_frontend(hostname, backend)

    monkeypatch.setattr(lb, "point_frontend", then_stop_applying)

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.FAILED
    assert "is proxysync running?" in deployment.failure_reason
    assert lb.frontends[app.frontend]["backend"] == backend_name("default", app.name, 1)
    assert backend_name("default", app.name, 2) not in lb.backends
    assert cluster.versions_.keys() == {1}
    app.refresh_from_db()
    assert app.live_version == 1


def test_it_swaps_back_when_the_new_version_does_not_answer_through_the_load_balancer(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB, health: FakeHealth
) -> None:
    run_workflow(app)
    health.lb_answers = False

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.FAILED
    assert "did not answer through the load balancer" in deployment.failure_reason
    assert lb.live_version(app.frontend) == 1
    assert cluster.versions_.keys() == {1}


def test_it_removes_the_frontend_when_a_first_deploy_fails_after_the_switch(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB, health: FakeHealth
) -> None:
    health.lb_answers = False
    deployment = run_workflow(app)

    assert deployment.status == Deployment.Status.FAILED
    assert lb.frontends == {} and lb.backends == {}
    assert cluster.versions_ == {}


def test_it_rolls_back_when_the_cluster_api_fails(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB
) -> None:
    cluster.fail_create = TRANSIENT
    deployment = run_workflow(app)

    assert deployment.status == Deployment.Status.FAILED
    assert "Kubernetes API unreachable" in deployment.failure_reason
    assert cluster.deleted == [1]
    v1 = backend_name("default", app.name, 1)
    assert lb.writes == [f"backend {v1}", f"delete backend {v1}"]  # never routed
    assert lb.backends == {}


@pytest.mark.both_databases
def test_it_aborts_at_the_next_step_and_rolls_back(
    app: App,
    run_workflow: Run,
    cluster: FakeCluster,
    lb: FakeLB,
    health: FakeHealth,
    clock: FakeClock,
) -> None:
    health.unhealthy = lambda pod, attempt: True
    # The user clicks Abort while the workflow waits between health-check rounds.
    clock.on_sleep = lambda: Deployment.objects.update(abort_requested=True)

    deployment = run_workflow(app)

    assert deployment.status == Deployment.Status.ABORTED
    assert deployment.failure_reason == "aborted by user"
    assert deployment.steps["health"]["state"] == "failed"
    assert deployment.steps["switch"]["state"] == "pending"
    assert cluster.versions_ == {}
    v1 = backend_name("default", app.name, 1)
    assert lb.writes == [f"backend {v1}", f"backend {v1}", f"delete backend {v1}"]  # never routed
    assert lb.frontends == {} and lb.backends == {}


def test_it_swaps_back_to_a_warm_version(
    make_app: Callable[..., App], run_workflow: Run, cluster: FakeCluster, lb: FakeLB
) -> None:
    app = make_app(keep_old_seconds=60)
    run_workflow(app)
    run_workflow(app, image="demo/hello:2")

    deployment = run_workflow(app, kind=Deployment.Kind.SWAP_BACK, version=1)

    assert deployment.status == Deployment.Status.SUCCEEDED
    assert lb.live_version(app.frontend) == 1
    assert cluster.versions_.keys() == {1}
    app.refresh_from_db()
    assert app.live_version == 1


def test_it_refuses_to_swap_back_to_a_version_that_is_gone(
    app: App, run_workflow: Run, lb: FakeLB
) -> None:
    run_workflow(app)
    run_workflow(app, image="demo/hello:2")

    deployment = run_workflow(app, kind=Deployment.Kind.SWAP_BACK, version=1)

    assert deployment.status == Deployment.Status.FAILED
    assert "no longer warm" in deployment.failure_reason
    assert lb.live_version(app.frontend) == 2


def test_it_undeploys_every_version_the_frontend_and_the_backends(
    make_app: Callable[..., App], run_workflow: Run, cluster: FakeCluster, lb: FakeLB
) -> None:
    app = make_app(keep_old_seconds=60)
    run_workflow(app)
    run_workflow(app, image="demo/hello:2")

    deployment = run_workflow(app, kind=Deployment.Kind.UNDEPLOY)

    assert deployment.status == Deployment.Status.SUCCEEDED
    assert cluster.versions_ == {}
    assert lb.frontends == {} and lb.backends == {}
    app.refresh_from_db()
    assert app.live_version is None


@pytest.mark.both_databases
@pytest.mark.parametrize("verified", [False, True])
def test_recovery_rolls_back_or_finishes_a_deploy_whose_worker_died(
    verified: bool,
    app: App,
    run_workflow: Run,
    cluster: FakeCluster,
    lb: FakeLB,
    health: FakeHealth,
    clock: object,
    sink: ListSink,
) -> None:
    run_workflow(app)

    class WorkerDied(BaseException):
        pass

    def die_after_switch(workflow: Workflow) -> None:
        # The worker dies in the step after the switch (verified) or after verifying it.
        def die() -> None:
            raise WorkerDied

        if verified:
            workflow.retire = die  # type: ignore[method-assign]
        else:
            workflow.verify = die  # type: ignore[method-assign]
        workflow.cleanup = lambda failure: None  # type: ignore[method-assign]
        workflow.finish = lambda failure, seconds: None  # type: ignore[method-assign]

    with pytest.raises(WorkerDied):
        run_workflow(app, image="demo/hello:2", before=die_after_switch)
    deployment = Deployment.objects.get(version=2)
    assert deployment.status == Deployment.Status.RUNNING
    assert lb.live_version(app.frontend) == 2

    WORKFLOWS[deployment.kind](
        deployment=deployment,
        cluster=cluster,
        lb=lb,
        health=health,
        clock=clock,  # type: ignore[arg-type]
        sink=sink,
    ).recover("worker-1@host")

    deployment.refresh_from_db()
    if verified:
        assert deployment.status == Deployment.Status.SUCCEEDED
        assert lb.live_version(app.frontend) == 2
        assert cluster.versions_.keys() == {2}
    else:
        assert deployment.status == Deployment.Status.FAILED
        assert "worker running this deployment was lost" in deployment.failure_reason
        assert lb.live_version(app.frontend) == 1
        assert cluster.versions_.keys() == {1}


def test_it_takes_the_old_pods_out_of_rotation_before_retiring_them(
    app: App, run_workflow: Run, lb: FakeLB, sink: ListSink
) -> None:
    run_workflow(app)
    run_workflow(app, image="demo/hello:2")

    old = backend_name("default", app.name, 1)
    taken_out = lb.history.index(f"rotation {old}")
    deleted = lb.history.index(f"delete backend {old}")
    assert taken_out < lb.history.index(f"drained {lb.drained[-1]}") < deleted
    assert "left rotation of default." in sink.text()


def test_it_refuses_a_hostname_that_another_app_still_routes(
    make_app: Callable[..., App], run_workflow: Run, cluster: FakeCluster, lb: FakeLB
) -> None:
    first = make_app(frontend="shared.localhost")
    assert run_workflow(first).status == Deployment.Status.SUCCEEDED
    # The first app moves to a new hostname, which takes effect at its next deploy.
    App.objects.filter(pk=first.pk).update(frontend="moved.localhost")
    second = make_app(frontend="shared.localhost")

    deployment = run_workflow(second)

    assert deployment.status == Deployment.Status.FAILED
    assert f"routes to app default/{first.name}" in deployment.failure_reason
    assert lb.live_version("shared.localhost") == 1
    assert lb.frontends["shared.localhost"]["backend"] == backend_name("default", first.name, 1)
    assert backend_name("default", first.name, 1) in lb.backends


def test_a_new_app_cannot_take_a_hostname_that_another_app_still_serves(
    make_app: Callable[..., App], run_workflow: Run
) -> None:
    first = make_app(frontend="kept.localhost")
    run_workflow(first)
    App.objects.filter(pk=first.pk).update(frontend="elsewhere.localhost")
    second = App(name="second", image="demo/hello:1", frontend="kept.localhost")

    with pytest.raises(ValidationError) as refused:
        second.full_clean()

    assert f"still routes to app default/{first.name}" in str(
        refused.value.message_dict["frontend"]
    )


def test_it_stops_before_the_switch_when_the_load_balancer_left_the_new_backend_out(
    app: App, run_workflow: Run, cluster: FakeCluster, lb: FakeLB
) -> None:
    run_workflow(app)
    lb.skipped[f"backends/{backend_name('default', app.name, 2)}"] = "haproxy -c refused it: x"

    deployment = run_workflow(app, image="demo/hello:2")

    assert deployment.status == Deployment.Status.FAILED
    assert "the load balancer refused backend" in deployment.failure_reason
    assert " on lb-0: " in deployment.failure_reason
    assert "haproxy -c refused it: x" in deployment.failure_reason
    assert lb.live_version(app.frontend) == 1
    assert cluster.versions_.keys() == {1}


def test_the_switch_names_every_load_balancer_and_verify_asks_each_of_them(
    app: App, run_workflow: Run, lb: FakeLB, health: FakeHealth, sink: ListSink
) -> None:
    lb.fleet = {"lb-0": "http://127.0.0.1:8080", "lb-1": "http://127.0.0.1:8081"}

    deployment = run_workflow(app)

    assert deployment.status == Deployment.Status.SUCCEEDED
    assert re.search(
        r"^Load balancers applied revision \d+: lb-0 in 1 ms, lb-1 in 2 ms\.$",
        sink.text(),
        re.M,
    ), sink.text()
    assert set(health.asked) == {"http://127.0.0.1:8080", "http://127.0.0.1:8081"}
    assert "answers through load balancer lb-1 at http://127.0.0.1:8081" in sink.text()


def test_it_stops_before_the_switch_when_no_load_balancer_is_registered(
    app: App, run_workflow: Run, lb: FakeLB, cluster: FakeCluster
) -> None:
    lb.fleet = {}

    deployment = run_workflow(app)

    assert deployment.status == Deployment.Status.FAILED
    assert "no load balancer is registered" in deployment.failure_reason
    assert deployment.switched_at is None
    assert lb.frontends == {}
    assert cluster.versions_ == {}


def test_an_undeploy_names_the_load_balancers_that_applied_it(
    app: App, run_workflow: Run, lb: FakeLB, sink: ListSink
) -> None:
    run_workflow(app)
    lb.fleet = {"lb-0": "http://127.0.0.1:8080", "lb-1": "http://127.0.0.1:8081"}

    deployment = run_workflow(app, kind=Deployment.Kind.UNDEPLOY)

    assert deployment.status == Deployment.Status.SUCCEEDED
    assert re.search(r"applied revision \d+: lb-0 in 1 ms, lb-1 in 2 ms\.$", sink.text(), re.M)


@pytest.mark.both_databases
def test_from_the_last_health_check_to_the_last_load_balancers_answer_it_commits_twice(
    transactional_db: None,
    app: App,
    run_workflow: Run,
    lb: FakeLB,
    health: FakeHealth,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every commit waits for the database's write lock, which 50 deploys at once share:
    # between healthy pods and the verified switch, only the starts of switch and verify.
    lb.fleet = {"lb-0": "http://127.0.0.1:8080", "lb-1": "http://127.0.0.1:8081"}
    commits: list[str] = []
    marks: dict[str, int] = {}
    connection_commit = connection.commit

    def counted_commit() -> None:
        commits.append("commit")
        connection_commit()

    def autocommitted(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not connection.in_atomic_block and sql.lstrip().upper().startswith(
            ("INSERT", "UPDATE", "DELETE")
        ):
            commits.append(sql)
        return execute(sql, params, many, context)

    check, through_lb = health.check, health.through_lb

    def checked(pod: Any, settings: dict[str, Any]) -> Any:
        marks["healthy"] = len(commits)
        return check(pod, settings)

    def answered(address: str, hostname: str, path: str, timeout: float = 2.0) -> Any:
        marks["answered"] = len(commits)
        return through_lb(address, hostname, path, timeout)

    monkeypatch.setattr(connection, "commit", counted_commit)
    monkeypatch.setattr(health, "check", checked)
    monkeypatch.setattr(health, "through_lb", answered)
    with connection.execute_wrapper(autocommitted):
        deployment = run_workflow(app)

    assert deployment.status == Deployment.Status.SUCCEEDED
    assert health.asked == ["http://127.0.0.1:8080"] * 2 + ["http://127.0.0.1:8081"] * 2
    assert marks["answered"] - marks["healthy"] == 2, commits[marks["healthy"] :]
    # Everything deferred was stored all the same, in order.
    deployment.refresh_from_db()
    assert {step["state"] for step in deployment.steps.values()} == {"done"}
    assert deployment.switched_at is not None
    app.refresh_from_db()
    assert app.live_version == 1
