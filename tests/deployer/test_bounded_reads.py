"""Text from outside is bounded before it is kept: pod log tails, event and status messages, log lines."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer import k8s, logsink
from deployer.bounds import (
    EVENT_MESSAGE_CHARS,
    LOG_LINE_CHARS,
    LOG_TAIL_BYTES,
    cut_bytes,
    cut_text,
)
from deployer.cluster import KubeCluster
from deployer.health import VERSION_CHARS, HealthResult, judge
from deployer.podevents import MAX_SEEN_EVENTS, PodEventFeed
from scaling import logsink as scaling_logsink
from scaling.models import ScalingRun


def test_short_text_is_kept_and_long_text_is_cut_with_a_marker() -> None:
    assert cut_text("short", 10) == "short"
    assert cut_text("x" * 25, 10) == "x" * 10 + "… (cut: 15 more characters)"


def test_bytes_are_cut_at_the_limit_even_inside_a_character() -> None:
    assert cut_bytes(b"abc", 3) == "abc"
    # "é" is two bytes; cutting between them leaves a replacement character, not an error.
    assert cut_bytes("aé!".encode() + b"more", 2) == "a\ufffd… (cut at 2 bytes)"


def test_nul_characters_become_replacement_characters() -> None:
    # PostgreSQL refuses a NUL in text; a crashing pod's output may well hold one.
    assert cut_text("core\0dumped", 20) == "core\ufffddumped"
    assert cut_bytes(b"core\0dumped", 20) == "core\ufffddumped"


@pytest.mark.django_db
def test_a_log_line_with_a_nul_from_a_pod_is_stored(make_app: Any) -> None:
    from deployer.models import Deployment

    app = make_app()
    deployment = Deployment.objects.create(app=app, image=app.image, descriptor=app.snapshot())
    logsink.append(deployment, "last output: segfault\0\0 at 0x0")
    run = ScalingRun.objects.create(kind=ScalingRun.Kind.DRY_RUN)
    scaling_logsink.append(run.pk, "node said \0")

    stored = deployment.logs.get(message__startswith="last output")
    assert stored.message == "last output: segfault\ufffd\ufffd at 0x0"
    assert run.logs.get().message == "node said \ufffd"


@pytest.mark.django_db
def test_the_version_a_pod_names_in_its_health_answer_is_bounded_and_storable(
    make_app: Any,
) -> None:
    from deployer.models import Deployment

    body = json.dumps({"healthy": True, "version": "2\0" + "v" * 10_000}).encode()
    healthy, _, version = judge(200, body, "http-json")
    assert healthy and version.startswith("2\ufffdv") and version.endswith("more characters)")
    assert len(version) < VERSION_CHARS + 40

    app = make_app()
    deployment = Deployment.objects.create(app=app, image=app.image, descriptor=app.snapshot())
    result = HealthResult("pod-1", "127.0.0.2", healthy, 200, "HTTP 200", 0.1, version)
    Deployment.objects.filter(pk=deployment.pk).update(health_results=[result.as_json()])
    deployment.refresh_from_db()
    assert deployment.health_results[0]["version"] == version


@pytest.fixture
def chatty_pod(kubeconfig: Path, settings: Any) -> Iterator[str]:
    """A pod on the session's localcluster whose last line is 100,000 characters long."""
    settings.KUBECONFIG = kubeconfig
    settings.KUBE_IN_CLUSTER = False
    settings.KUBE_CONTEXT = None
    k8s.reset()
    name = f"chatty-{uuid.uuid4().hex[:8]}"
    script = "echo first; head -c 100000 /dev/zero | tr '\\0' x; echo; sleep 3600"
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": "main", "image": "demo/hello:1", "command": ["sh", "-c", script]}
            ],
        },
    }
    core = k8s.core_v1()
    core.create_namespaced_pod("default", body)
    try:
        yield name
    finally:
        core.delete_namespaced_pod(name, "default", grace_period_seconds=0)
        k8s.reset()


def test_a_pod_log_tail_is_read_up_to_its_byte_limit(chatty_pod: str) -> None:
    cluster = KubeCluster()
    deadline = time.monotonic() + 30
    marker = f"… (cut at {LOG_TAIL_BYTES} bytes)"
    tail = ""
    while not tail.endswith(marker):
        assert time.monotonic() < deadline, f"no long output from the pod: {tail[-200:]!r}"
        time.sleep(0.2)  # the pod starts and prints on its own; its log has no watch
        tail = cluster.pod_log_tail("default", chatty_pod, lines=2)
    assert tail.startswith("first\nxxxx")
    assert len(tail.encode()) <= LOG_TAIL_BYTES + 40
    assert cluster.pod_log_tail("default", chatty_pod, lines=3, limit=100).startswith("first\n")


def test_a_missing_pod_has_no_log_tail(kubeconfig: Path, settings: Any) -> None:
    settings.KUBECONFIG = kubeconfig
    k8s.reset()
    try:
        assert KubeCluster().pod_log_tail("default", "no-such-pod") == ""
    finally:
        k8s.reset()


def test_event_messages_are_cut_and_the_seen_set_stays_bounded() -> None:
    feed = PodEventFeed(core=None, namespace="default", prefix="app-v1-")  # type: ignore[arg-type]
    feed._take(
        {
            "involvedObject": {"name": "app-v1-abc"},
            "reason": "BackOff",
            "message": "m" * 100_000,
            "type": "Warning",
        }
    )
    ((kind, text),) = feed.drain()
    assert kind == "Warning"
    assert len(text) < EVENT_MESSAGE_CHARS + 100
    for n in range(MAX_SEEN_EVENTS + 10):
        feed._take({"involvedObject": {"name": "app-v1-abc"}, "message": f"event {n}"})
    assert len(feed._seen) <= MAX_SEEN_EVENTS
    assert len(feed.drain()) == MAX_SEEN_EVENTS + 10


@pytest.mark.django_db
def test_stored_log_lines_are_cut_to_a_bound(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployer.models import Deployment

    app = make_app()
    deployment = Deployment.objects.create(app=app, image=app.image, descriptor=app.snapshot())
    line = logsink.append(deployment, "y" * (LOG_LINE_CHARS * 3))
    assert len(line.message) < LOG_LINE_CHARS + 100 and line.message.endswith("more characters)")
    run = ScalingRun.objects.create(kind=ScalingRun.Kind.DRY_RUN)
    scaled = scaling_logsink.append(run.pk, "z" * (LOG_LINE_CHARS * 3))
    assert len(scaled.message) < LOG_LINE_CHARS + 100
