"""Pods that stop without dropping requests: preStop first, then SIGTERM and a drain; restarts.

Sources: https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination,
https://kubernetes.io/docs/concepts/containers/container-lifecycle-hooks/ (preStop runs before
SIGTERM, within the grace period), pkg/kubelet/kuberuntime/kuberuntime_container.go
(killContainer: the hook's time comes out of the grace period, leaving at least 2 s).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.servers import pod_process_ids

from .conftest import runtime_present
from .runtime_support import http_json, is_ready, running_and_ready, watch_until, wire

runtime = pytest.mark.skipif(
    not runtime_present(), reason="the localcluster runtime is not in this checkout"
)


def demo_pod(name: str, grace: int = 30, **container: Any) -> dict[str, Any]:
    """A demo/hello pod labelled app=<name>, ready once it answers /health."""
    return {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "containers": [
                {
                    "name": "app",
                    "image": "demo/hello:1",
                    "readinessProbe": {
                        "httpGet": {"path": "/health", "port": 8080},
                        "periodSeconds": 1,
                    },
                    **container,
                }
            ],
        },
    }


def pods_named(core: client.CoreV1Api, namespace: str, name: str) -> Callable[..., Any]:
    """A list function for watch_until over one pod."""

    def list_pods(**kwargs: Any) -> Any:
        return core.list_namespaced_pod(namespace, field_selector=f"metadata.name={name}", **kwargs)

    return list_pods


class FollowedLog:
    """A pod's log followed from its first line, with the kubelet's timestamps."""

    def __init__(self, core: client.CoreV1Api, namespace: str, name: str) -> None:
        self._response = core.read_namespaced_pod_log(
            name,
            namespace,
            follow=True,
            timestamps=True,
            _preload_content=False,
            _request_timeout=60,
        )
        self._lines = iter(self._response)

    def until(self, text: str) -> tuple[dt.datetime, str]:
        """The time and text of the next line that contains ``text``."""
        for raw in self._lines:
            stamp, _, line = raw.decode().rstrip("\n").partition(" ")
            if text in line:
                return dt.datetime.fromisoformat(stamp), line
        raise AssertionError(f"the log ended without a line containing {text!r}")

    def close(self) -> None:
        """Stop following."""
        self._response.close()


@contextlib.contextmanager
def followed_log(core: client.CoreV1Api, namespace: str, name: str) -> Iterator[FollowedLog]:
    """Follow a pod's log for the length of the block."""
    log = FollowedLog(core, namespace, name)
    try:
        yield log
    finally:
        log.close()


@runtime
def test_it_answers_a_request_in_flight_when_its_pod_is_deleted_and_refuses_new_ones(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, demo_pod("draining"))
    pod = watch_until(pods_named(core, namespace, "draining"), running_and_ready(1))["draining"]
    ip = pod["status"]["podIP"]
    with followed_log(core, namespace, "draining") as log:
        slow = http.client.HTTPConnection(ip, 8080, timeout=15)
        slow.request("GET", "/sleep?seconds=2")
        log.until("sleeping 2s")

        core.delete_namespaced_pod("draining", namespace)

        assert log.until("received signal 15")[1].endswith("requests in flight: 1")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((ip, 8080), timeout=1).close()
        response = slow.getresponse()
        assert (response.status, json.loads(response.read())["slept"]) == (200, 2.0)
    watch_until(pods_named(core, namespace, "draining"), lambda ps: not ps, timeout=20)


@runtime
def test_it_sends_sigterm_only_after_the_pre_stop_sleep_while_the_pod_still_serves(
    core: client.CoreV1Api, namespace: str
) -> None:
    body = demo_pod("pausing", grace=10, lifecycle={"preStop": {"sleep": {"seconds": 2}}})
    core.create_namespaced_pod(namespace, body)
    pod = watch_until(pods_named(core, namespace, "pausing"), running_and_ready(1))["pausing"]
    ip = pod["status"]["podIP"]
    with followed_log(core, namespace, "pausing") as log:
        deleted_at = dt.datetime.now(dt.UTC)
        core.delete_namespaced_pod("pausing", namespace)

        during = wire(core.read_namespaced_pod("pausing", namespace))
        assert during["metadata"]["deletionTimestamp"]
        assert (during["status"]["phase"], during["status"]["podIP"]) == ("Running", ip)
        assert http_json(ip, path="/?during-pre-stop")[0] == 200
        answered_at, _ = log.until("GET /?during-pre-stop")
        signalled_at, _ = log.until("received signal 15")
    assert answered_at < signalled_at
    waited = (signalled_at - deleted_at).total_seconds()
    assert 1.9 <= waited < 5, f"SIGTERM came {waited:.2f}s after the delete"
    watch_until(pods_named(core, namespace, "pausing"), lambda ps: not ps, timeout=20)


@runtime
def test_it_restarts_a_container_whose_processes_are_killed(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, demo_pod("victim"))
    pod = watch_until(pods_named(core, namespace, "victim"), running_and_ready(1))["victim"]
    ip = pod["status"]["podIP"]
    killed = pod_process_ids(ip)
    assert killed, f"no process carries the pod address {ip}"

    for pid in killed:
        os.kill(pid, signal.SIGKILL)

    def restarted(pods: dict[str, Any]) -> bool:
        statuses = (pods.get("victim", {}).get("status") or {}).get("containerStatuses") or [{}]
        return statuses[0].get("restartCount", 0) >= 1 and is_ready(pods["victim"])

    pod = watch_until(pods_named(core, namespace, "victim"), restarted)["victim"]
    status = pod["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert pod["status"]["podIP"] == ip
    again = pod_process_ids(ip)
    assert again and not set(again) & set(killed)
    assert http_json(ip)[0] == 200


def test_it_finds_a_pods_processes_by_its_address_and_their_sessions() -> None:
    ip = "127.251.7.1"
    env = {"PATH": os.environ.get("PATH", ""), "LOCALCLUSTER_POD_IP": ip}
    # The child clears its environment; it still runs in the container's session.
    container = subprocess.Popen(
        ["sh", "-c", "env -i sleep 30 & echo $!; wait"],
        env=env,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    neighbour = subprocess.Popen(
        ["sleep", "30"], env={**env, "LOCALCLUSTER_POD_IP": ip + "0"}, start_new_session=True
    )
    try:
        assert container.stdout is not None
        child = int(container.stdout.readline())
        assert pod_process_ids(ip) == sorted([container.pid, child])
    finally:
        for proc in (container, neighbour):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
    assert pod_process_ids(ip) == []
