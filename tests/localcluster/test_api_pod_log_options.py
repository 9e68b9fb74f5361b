"""pods/log options as kube-apiserver and the kubelet answer them: previous, sinceSeconds,
tailLines, timestamps and limitBytes, and follow until the pod goes away (also with kubectl).

Sources: pkg/registry/core/pod/rest/log.go, pkg/apis/core/validation ValidatePodLogOptions (a 422 of kind PodLogOptions),
pkg/kubelet/kuberuntime/logs/logs.go (tail first, then since; RFC3339Nano with nine digits),
pkg/kubelet/kubelet_pods.go ("previous terminated container %q in pod %q not found").
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.servers import LocalCluster

from .conftest import KUBECTL
from .test_api_pods import held_pod, local_only, release, write_log

__all__ = ["local_only"]  # the fixture, imported for these tests


def now_record(path: Path, text: str) -> None:
    """Append a record stamped now (CRI format) to a container's log."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"
    with path.open("a") as fh:
        fh.write(f"{stamp} stdout F {text}\n")


def api_error(call: Callable[[], object]) -> tuple[int, str]:
    with pytest.raises(client.ApiException) as err:
        call()
    return int(err.value.status), json.loads(err.value.body)["message"]


def test_previous_serves_the_last_terminated_run_or_says_there_is_none(
    core: client.CoreV1Api, namespace: str, local_only: LocalCluster
) -> None:
    held_pod(core, namespace, "prev")
    write_log(local_only, namespace, "prev", "app", ["now"])
    assert api_error(lambda: core.read_namespaced_pod_log("prev", namespace, previous=True)) == (
        400,
        'previous terminated container "app" in pod "prev" not found',
    )
    assert local_only.state_dir is not None
    old = local_only.state_dir / "logs" / namespace / "prev" / "app.previous.log"
    old.write_text(
        "2026-01-01T00:00:00.000000001Z stdout F before\n"
        "2026-01-01T00:00:01.000000002Z stderr F crashed\n"
    )
    assert core.read_namespaced_pod_log("prev", namespace, previous=True) == "before\ncrashed\n"
    # follow is ignored for a terminated run: the answer ends with its output.
    stamped = core.read_namespaced_pod_log(
        "prev", namespace, previous=True, follow=True, timestamps=True, tail_lines=1
    )
    assert stamped == "2026-01-01T00:00:01.000000002Z crashed\n"
    release(core, namespace, "prev")


def test_since_seconds_keeps_newer_records_after_the_tail_and_bad_values_are_refused(
    core: client.CoreV1Api, namespace: str, local_only: LocalCluster, raw: Callable[..., Any]
) -> None:
    held_pod(core, namespace, "since")
    path = write_log(local_only, namespace, "since", "app", ["old one", "old two"])
    now_record(path, "fresh")
    assert core.read_namespaced_pod_log("since", namespace, since_seconds=60) == "fresh\n"
    # The kubelet tails first, then drops what is older than since.
    assert core.read_namespaced_pod_log("since", namespace, tail_lines=2, since_seconds=60) == (
        "fresh\n"
    )
    assert core.read_namespaced_pod_log("since", namespace, limit_bytes=9) == "old one\no"
    # LogREST.Get: ValidatePodLogOptions' errors, all of them, as a 422 of kind PodLogOptions,
    # before the pod is looked up.
    for kwargs, message in (
        ({"since_seconds": 0}, "sinceSeconds: Invalid value: 0: must be greater than 0"),
        ({"tail_lines": -1}, "tailLines: Invalid value: -1: must be greater than or equal to 0"),
        ({"limit_bytes": 0}, "limitBytes: Invalid value: 0: must be greater than 0"),
        (
            {"tail_lines": -1, "limit_bytes": 0},
            "[tailLines: Invalid value: -1: must be greater than or equal to 0, "
            "limitBytes: Invalid value: 0: must be greater than 0]",
        ),
    ):
        for pod in ("since", "no-such-pod"):
            status, got = api_error(
                lambda kw=kwargs, p=pod: core.read_namespaced_pod_log(p, namespace, **kw)
            )
            assert (status, got) == (422, f'PodLogOptions "{pod}" is invalid: {message}')
    # sinceTime beside sinceSeconds (the Python client has no since_time: sent as is).
    answer = raw(
        "GET",
        f"/api/v1/namespaces/{namespace}/pods/since/log?sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z",
    )
    assert (answer.status, answer.json()["message"]) == (
        422,
        'PodLogOptions "since" is invalid: : Forbidden: '
        "at most one of `sinceTime` or `sinceSeconds` may be specified",
    )
    release(core, namespace, "since")


def test_a_followed_log_ends_when_the_pod_is_deleted(
    core: client.CoreV1Api, namespace: str, local_only: LocalCluster
) -> None:
    held_pod(core, namespace, "gone")
    path = write_log(local_only, namespace, "gone", "app", ["one", "two"])
    response = core.read_namespaced_pod_log(
        "gone", namespace, follow=True, tail_lines=1, _preload_content=False
    )
    assert response.headers.get("Transfer-Encoding") == "chunked"
    chunks = response.stream(amt=None, decode_content=False)
    assert next(chunks) == b"two\n"
    now_record(path, "three")
    assert next(chunks) == b"three\n"
    release(core, namespace, "gone")
    started = time.monotonic()
    assert b"".join(chunks) == b""  # the stream ends: nothing more, no hang
    assert time.monotonic() - started < 5


def test_kubectl_logs_follows_with_tail_and_timestamps_until_the_pod_goes(
    core: client.CoreV1Api,
    namespace: str,
    local_only: LocalCluster,
    cluster_kubeconfig: Path,
    kubectl_cache: Path,
) -> None:
    held_pod(core, namespace, "tailed")
    path = write_log(local_only, namespace, "tailed", "app", ["a", "b", "c"])
    follower = subprocess.Popen(
        [KUBECTL, "--kubeconfig", str(cluster_kubeconfig), "--cache-dir", str(kubectl_cache)]
        + ["logs", "-f", "--tail=2", "--timestamps", "tailed", "-n", namespace],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "2026-01-01T00:00:01.000000001Z b\n"
        assert follower.stdout.readline() == "2026-01-01T00:00:02.000000001Z c\n"
        now_record(path, "live")
        live = follower.stdout.readline()
        assert live.endswith("123Z live\n") and len(live.split(" ")[0]) == 30
        release(core, namespace, "tailed")
        out, err = follower.communicate(timeout=10)
        assert (follower.returncode, out) == (0, ""), err
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
