"""The demo images as processes: endpoints, environment, failure modes, signals, footprint.

Source: the image contract in issue 4 (``demo/hello``, ``demo/broken``, ``demo/crash``,
``demo/slow``) as resolved by ``localcluster.images.Catalog``.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from localcluster.images import Catalog

from .runtime_support import http_json


def _address() -> tuple[str, int]:
    # A random loopback address of its own, as the kubelet gives each pod.
    ip = f"127.{secrets.randbelow(100) + 20}.{secrets.randbelow(250) + 1}.{secrets.randbelow(250) + 2}"
    with socket.socket() as sock:
        sock.bind((ip, 0))
        return ip, int(sock.getsockname()[1])


@contextmanager
def demo(image: str, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str, int]]:
    """Run an image's command as the kubelet would, bound to its own loopback address."""
    resolved = Catalog().resolve(image)
    ip, port = _address()
    full_env = {
        "PATH": os.environ.get("PATH", ""),
        "LOCALCLUSTER_POD_IP": ip,
        "PORT": str(port),
        **env,
    }
    proc = subprocess.Popen(
        resolved.entrypoint + resolved.cmd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc, ip, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def wait_listening(ip: str, port: int, timeout: float = 10) -> float:
    """Seconds until ip:port accepts a connection."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            socket.create_connection((ip, port), timeout=0.5).close()
            return time.monotonic() - start
        except OSError:
            time.sleep(0.02)  # nothing to watch: the process is starting up
    raise AssertionError(f"{ip}:{port} never listened")


def test_it_answers_the_version_and_message_on_root_and_health() -> None:
    with demo("demo/hello:3", MESSAGE="hi there", POD_NAME="p-1") as (_, ip, port):
        wait_listening(ip, port)
        assert http_json(ip, port, "/") == (
            200,
            {"version": "3", "message": "hi there", "pod": "p-1"},
        )
        assert http_json(ip, port, "/health") == (
            200,
            {"version": "3", "message": "hi there", "healthy": True},
        )
        assert http_json(ip, port, "/nope")[0] == 404


def test_it_shows_app_version_and_turns_unhealthy_on_request() -> None:
    with demo("demo/hello:1", APP_VERSION="42", HEALTHY="false") as (_, ip, port):
        wait_listening(ip, port)
        status, body = http_json(ip, port, "/health")
        assert (status, body["version"], body["healthy"]) == (503, "42", False)


def test_broken_is_never_healthy() -> None:
    with demo("demo/broken:1", HEALTHY="true") as (_, ip, port):
        wait_listening(ip, port)
        assert http_json(ip, port, "/health")[1]["healthy"] is False


def test_bad_release_is_healthy_and_fails_every_other_request() -> None:
    with demo("demo/bad-release:7") as (_, ip, port):
        wait_listening(ip, port)
        assert http_json(ip, port, "/health") == (
            200,
            {"version": "7", "message": "Hello from demo/bad-release", "healthy": True},
        )
        for path in ("/", "/orders", "/sleep?seconds=0"):
            status, body = http_json(ip, port, path)
            assert (status, body["version"]) == (500, "7")


def test_crash_exits_at_start() -> None:
    with demo("demo/crash:1") as (proc, _, _):
        assert proc.wait(10) == 1


def test_slow_listens_only_after_startup_seconds() -> None:
    with demo("demo/slow:1", STARTUP_SECONDS="1") as (_, ip, port):
        with pytest.raises(OSError):
            socket.create_connection((ip, port), timeout=0.5).close()
        assert wait_listening(ip, port) >= 0.5
        assert http_json(ip, port, "/health")[0] == 200


def test_it_exits_cleanly_on_sigterm_and_stays_small() -> None:
    with demo("demo/hello:1") as (proc, ip, port):
        wait_listening(ip, port)
        http_json(ip, port, "/health")
        rss_kb = next(
            int(line.split()[1])
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        assert rss_kb < 30 * 1024, f"an idle demo pod uses {rss_kb} kB"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
