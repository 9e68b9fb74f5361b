"""The demo app's access log: every request but the health checks that passed."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.servers import free_port, wait_for_port

DEMO_APP = Path(__file__).resolve().parents[2] / "localcluster" / "demo_app.py"


def start(image: str) -> tuple[subprocess.Popen[str], int]:
    """``demo_app.py <image>`` on a free loopback port, its output piped."""
    port = free_port()
    env = {**os.environ, "PORT": str(port), "LOCALCLUSTER_POD_IP": "127.0.0.1"}
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", str(DEMO_APP), image, "--tag", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    wait_for_port(port, process=process)  # type: ignore[arg-type]
    return process, port


def output_after(process: subprocess.Popen[str], port: int, paths: list[str]) -> str:
    """GET each of ``paths``, stop the app, return everything it printed."""
    for path in paths:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", path)
        connection.getresponse().read()
        connection.close()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=15)
    return output


def test_it_logs_requests_but_not_the_health_checks_that_passed() -> None:
    process, port = start("hello")

    output = output_after(process, port, ["/health", "/readyz", "/", "/missing"])

    assert '"GET / HTTP/1.1" 200' in output
    assert '"GET /missing HTTP/1.1" 404' in output
    assert "/health" not in output
    assert "/readyz" not in output


def test_it_logs_a_failing_health_check() -> None:
    process, port = start("broken")

    output = output_after(process, port, ["/health"])

    assert '"GET /health HTTP/1.1" 503' in output
