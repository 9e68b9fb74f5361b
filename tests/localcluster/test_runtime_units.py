"""Unit tests of the runtime's pure parts: image catalog, arithmetic, phases, logs, env.

Sources: distribution/reference (image names), pkg/controller/deployment/util
(ResolveFenceposts, ComputeHash alphabet), pkg/kubelet/kubelet_pods.go (getPhase),
pkg/apis/core/v1/helper (tolerations), third_party/forked/golang/expansion ($(VAR)).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from localcluster.controllers.deployment_util import (
    set_condition,
    surge_and_unavailable,
    template_hash,
    without_hash,
)
from localcluster.images import Catalog, ImageNotFound, ImageRef
from localcluster.kubelet_container import Backoff
from localcluster.kubelet_env import expand
from localcluster.kubelet_logs import ContainerLog, start_run
from localcluster.kubelet_status import ContainerState, phase, qos_class
from localcluster.scheduler import pod_requests, quantity, tolerates


def test_it_parses_image_references_like_a_container_runtime() -> None:
    ref = ImageRef.parse("demo/hello:2")
    assert (ref.registry, ref.repository, ref.tag, ref.short) == (
        "docker.io",
        "demo/hello",
        "2",
        "demo/hello",
    )
    assert ref.canonical == "docker.io/demo/hello:2"
    assert ImageRef.parse("nginx").canonical == "docker.io/library/nginx:latest"
    local = ImageRef.parse("localhost:5000/team/app:v1")
    assert (local.registry, local.repository, local.tag) == ("localhost:5000", "team/app", "v1")
    assert ref.image_id.startswith("docker.io/demo/hello@sha256:")


def test_it_resolves_builtin_demo_images_with_any_tag() -> None:
    image = Catalog().resolve("demo/hello:7")
    assert image.entrypoint[0] == sys.executable
    assert image.entrypoint[-1] == "hello" and image.cmd == ["--tag", "7"]
    assert Catalog().resolve("docker.io/demo/crash:1").entrypoint[-1] == "crash"


def test_it_reports_an_unknown_image_as_not_found() -> None:
    with pytest.raises(
        ImageNotFound, match='failed to pull and unpack image "docker.io/acme/nope:1"'
    ):
        Catalog().resolve("acme/nope:1")


def test_it_reads_a_user_catalog_with_globs_and_tag_substitution(tmp_path: Path) -> None:
    path = tmp_path / "images.yaml"
    path.write_text(
        "myapp:*:\n  command: [./run, --version, '{tag}']\n  env: {MODE: prod}\nshell: echo hi\n"
    )
    catalog = Catalog.load(path)
    image = catalog.resolve("myapp:3.1")
    assert image.entrypoint == ["./run", "--version", "3.1"] and image.env == {"MODE": "prod"}
    assert catalog.resolve("shell").entrypoint == ["/bin/sh", "-c", "echo hi"]
    json_path = tmp_path / "images.json"
    json_path.write_text(json.dumps({"images": {"registry.example.com/x": ["true"]}}))
    assert Catalog.load(json_path).resolve("registry.example.com/x:9").entrypoint == ["true"]


def test_it_resolves_surge_and_unavailability_like_the_deployment_controller() -> None:
    def d(
        replicas: int, surge: object = None, unavailable: object = None, kind: str = "RollingUpdate"
    ) -> dict:
        rolling = {
            k: v for k, v in (("maxSurge", surge), ("maxUnavailable", unavailable)) if v is not None
        }
        return {
            "spec": {"replicas": replicas, "strategy": {"type": kind, "rollingUpdate": rolling}}
        }

    assert surge_and_unavailable(d(3)) == (1, 0)  # 25% rounds up for surge, down for unavailable
    assert surge_and_unavailable(d(10)) == (3, 2)
    assert surge_and_unavailable(d(4, 0, 0)) == (0, 1)  # both zero is not allowed to stall
    assert surge_and_unavailable(d(4, kind="Recreate")) == (0, 0)


def test_it_hashes_pod_templates_into_safe_stable_names() -> None:
    template = {
        "metadata": {"labels": {"app": "a"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    first = template_hash(template, None)
    assert first == template_hash(json.loads(json.dumps(template)), None)
    assert first != template_hash(template, 1)
    assert set(first) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_it_keeps_a_conditions_transition_time_while_its_status_holds() -> None:
    status: dict = {}
    set_condition(
        status, {"type": "Progressing", "status": "True", "reason": "A", "lastTransitionTime": "t1"}
    )
    set_condition(
        status, {"type": "Available", "status": "True", "reason": "B", "lastTransitionTime": "t2"}
    )
    set_condition(
        status, {"type": "Progressing", "status": "True", "reason": "C", "lastTransitionTime": "t3"}
    )
    assert [(c["type"], c["reason"], c["lastTransitionTime"]) for c in status["conditions"]] == [
        ("Available", "B", "t2"),
        ("Progressing", "C", "t1"),
    ]


def _container(state: dict, last: dict | None = None) -> ContainerState:
    c = ContainerState("c", "demo/hello:1")
    c.state = state
    c.last_state = last or {}
    return c


@pytest.mark.parametrize(
    ("policy", "state", "last", "expected"),
    [
        ("Always", {"waiting": {"reason": "ContainerCreating"}}, None, "Pending"),
        ("Always", {"running": {}}, None, "Running"),
        (
            "Always",
            {"waiting": {"reason": "CrashLoopBackOff"}},
            {"terminated": {"exitCode": 1}},
            "Running",
        ),
        ("Never", {"terminated": {"exitCode": 0}}, None, "Succeeded"),
        ("Never", {"terminated": {"exitCode": 3}}, None, "Failed"),
        ("OnFailure", {"terminated": {"exitCode": 3}}, None, "Running"),
    ],
)
def test_it_derives_the_pod_phase_like_the_kubelet(
    policy: str, state: dict, last: dict | None, expected: str
) -> None:
    pod = {"spec": {"restartPolicy": policy}}
    assert phase(pod, True, [_container(state, last)]) == expected


def test_it_classifies_quality_of_service() -> None:
    def pod(resources: dict) -> dict:
        return {"spec": {"containers": [{"name": "c", "resources": resources}]}}

    assert qos_class(pod({})) == "BestEffort"
    assert qos_class(pod({"requests": {"cpu": "100m"}})) == "Burstable"
    assert qos_class(pod({"limits": {"cpu": "1", "memory": "1Gi"}})) == "Guaranteed"


def test_it_backs_off_like_the_kubelet() -> None:
    crash = Backoff(immediate_first=True)
    assert [crash.next() for _ in range(8)] == [0, 10, 20, 40, 80, 160, 300, 300]
    pull = Backoff(immediate_first=False)
    assert [pull.next() for _ in range(3)] == [10, 20, 40]


def test_it_matches_tolerations_to_taints() -> None:
    taint = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    assert tolerates([{"key": "dedicated", "operator": "Equal", "value": "gpu"}], taint)
    assert tolerates([{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}], taint)
    assert tolerates([{"operator": "Exists"}], taint)
    assert not tolerates([{"key": "dedicated", "value": "cpu"}], taint)
    assert not tolerates([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}], taint)


def test_it_sums_requests_with_limits_as_defaults_and_init_containers_as_a_floor() -> None:
    assert quantity("250m") == 0.25 and quantity("64Mi") == 64 * 2**20 and quantity("1e3") == 1000
    pod = {
        "spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "100m"}}},
                {"resources": {"limits": {"cpu": "200m", "memory": "1Gi"}}},
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "2"}}}],
        }
    }
    assert pod_requests(pod) == {"cpu": 2.0, "memory": float(2**30)}


def test_it_expands_variable_references_like_kubernetes() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)-$(C)-$$(A)", env) == "1-two-$(C)-$(A)"


def test_it_writes_cri_log_records_and_keeps_the_previous_run(tmp_path: Path) -> None:
    current, previous = tmp_path / "c.log", tmp_path / "c.previous.log"
    log = start_run(current, previous)
    log.write("stdout", b"hello\npart")
    log.write("stderr", b"oops\n")
    log.write("stdout", b"ial\n")
    log.close()
    records = [line.split(" ", 3) for line in current.read_text().splitlines()]
    assert [(r[1], r[2], r[3]) for r in records] == [
        ("stdout", "F", "hello"),
        ("stderr", "F", "oops"),
        ("stdout", "F", "partial"),
    ]
    assert records[0][0].endswith("Z") and len(records[0][0].split(".")[1]) == 10
    start_run(current, previous).close()
    assert "hello" in previous.read_text() and current.read_text() == ""


def test_it_only_writes_complete_lines_until_closed(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path / "x.log")
    log.write("stdout", b"no newline yet")
    assert (tmp_path / "x.log").read_text() == ""
    log.close()
    assert (tmp_path / "x.log").read_text().endswith("stdout F no newline yet\n")


def test_it_treats_a_null_field_in_a_template_as_absent_when_matching_replica_sets() -> None:
    stored = {
        "metadata": {"labels": {"app": "a", "pod-template-hash": "x"}},
        "spec": {"containers": []},
    }
    from_undo = {
        "metadata": {"creationTimestamp": None, "labels": {"app": "a"}},
        "spec": {"containers": []},
    }
    assert without_hash(stored) == without_hash(from_undo)


def test_it_expires_events_older_than_the_ttl() -> None:
    from localcluster.controllers.events import EventExpiry, EventRecorder
    from localcluster.store import Store

    store = Store(None)
    store.load()
    pod = {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": "p", "namespace": "default", "uid": "u"},
    }
    EventRecorder(store).record(pod, "Normal", "Fresh", "just now", "kubelet")
    store.create_sync(
        "events",
        "default",
        {
            "metadata": {"name": "p.old", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Stale",
            "lastTimestamp": "2020-01-01T00:00:00Z",
        },
    )
    assert EventExpiry(store).sweep() == 1
    assert [e.obj["reason"] for e in store.select("events")] == ["Fresh"]


def test_it_holds_ready_back_until_every_readiness_gate_is_true() -> None:
    from localcluster.kubelet_status import pod_conditions

    running = _container({"running": {}})
    running.ready = True
    pod = {"spec": {"readinessGates": [{"conditionType": "example.com/lb"}]}, "status": {}}
    conditions = {c["type"]: c for c in pod_conditions(pod, True, True, "Running", [running])}
    assert conditions["ContainersReady"]["status"] == "True"
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "ReadinessGatesNotReady"
    pod["status"]["conditions"] = [{"type": "example.com/lb", "status": "True"}]
    conditions = {c["type"]: c for c in pod_conditions(pod, True, True, "Running", [running])}
    assert conditions["Ready"]["status"] == "True"
    assert conditions["example.com/lb"]["status"] == "True", "a gate's condition is kept"


def test_it_rotates_a_log_that_outgrows_its_limit(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path / "c.log", max_bytes=200)
    for i in range(10):
        log.write("stdout", f"line {i}\n".encode())
    log.close()
    current = (tmp_path / "c.log").read_text()
    rotated = (tmp_path / "c.log.1").read_text()
    assert "line 9" in current and "line 0" not in current
    first_current = int(current.split("line ")[1].split()[0])
    assert f"line {first_current - 1}\n" in rotated, "the rotated file holds what came just before"
    assert len(current.encode()) <= 200
