"""The demo images stop gracefully: SIGTERM closes the listener and drains requests in flight.

Source: https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination
(the container gets SIGTERM, then SIGKILL after the grace period).
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import time

import pytest

from .runtime_support import http_json
from .test_runtime_demo import demo, wait_listening


def read_until(proc: subprocess.Popen[bytes], text: str) -> str:
    """Read the app's output until a line contains ``text``; return that line."""
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode()
        if text in line:
            return line
    raise AssertionError(f"the app exited without printing {text!r}")


def test_it_answers_a_request_in_flight_after_sigterm_and_refuses_new_connections() -> None:
    with demo("demo/hello:4") as (proc, ip, port):
        wait_listening(ip, port)
        slow = http.client.HTTPConnection(ip, port, timeout=10)
        slow.request("GET", "/sleep?seconds=1")
        read_until(proc, "sleeping 1s")

        proc.send_signal(signal.SIGTERM)

        assert read_until(proc, "received signal").endswith("requests in flight: 1\n")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((ip, port), timeout=1).close()
        response = slow.getresponse()
        assert (response.status, json.loads(response.read())) == (
            200,
            {"version": "4", "slept": 1.0},
        )
        assert response.getheader("Connection") == "close"
        assert proc.wait(5) == 0


def test_it_exits_at_once_on_sigterm_when_only_idle_connections_are_open() -> None:
    with demo("demo/hello:1") as (proc, ip, port):
        wait_listening(ip, port)
        idle = http.client.HTTPConnection(ip, port, timeout=5)
        idle.request("GET", "/health")
        assert idle.getresponse().read()
        started = time.monotonic()

        proc.send_signal(signal.SIGTERM)

        assert proc.wait(5) == 0
        assert time.monotonic() - started < 1
        idle.close()


def test_it_sleeps_only_for_a_bounded_number_of_seconds() -> None:
    with demo("demo/hello:1") as (_, ip, port):
        wait_listening(ip, port)
        assert http_json(ip, port, "/sleep?seconds=0") == (200, {"version": "1", "slept": 0.0})
        for bad in ("31", "-1", "nan", "soon"):
            status, body = http_json(ip, port, f"/sleep?seconds={bad}")
            assert (status, body["error"]) == (400, "seconds must be between 0 and 30")
