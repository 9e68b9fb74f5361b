"""Throwaway real servers (redis, etcd, HAProxy) on free loopback ports, for tests and benches."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dashboard.stack import etcd_command, haproxy_command, redis_command
from deployer.lbconfig import render_config


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    *,
    host: str = "127.0.0.1",
    timeout: float = 20.0,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Block until something accepts on ``host:port``; raise if ``process`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with {process.returncode} before listening"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)  # backoff while a child process starts; nothing to watch
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout}s")


@dataclass
class Server:
    """A running child process and what tests need to reach it."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    extra: dict[str, object] = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process group with SIGTERM, then SIGKILL after ``timeout``."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)


def spawn(name: str, command: Sequence[str], workdir: Path, port: int) -> Server:
    """Start ``command`` in its own process group, logging to ``workdir/<name>.log``, and wait for ``port``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / f"{name}.log").open("wb")
    process = subprocess.Popen(
        list(command), stdout=log, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True
    )
    server = Server(name=name, process=process, port=port, workdir=workdir)
    try:
        wait_for_port(port, process=process)
    except Exception:
        server.stop()
        log_text = (workdir / f"{name}.log").read_text()
        raise RuntimeError(f"{name} did not start; its log:\n{log_text}") from None
    return server


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[Server]:
    """A redis-server on a free loopback port."""
    port = free_port()
    (workdir / "data").mkdir(parents=True, exist_ok=True)
    server = spawn("redis", redis_command(port, workdir / "data"), workdir, port)
    server.extra["url"] = f"redis://127.0.0.1:{port}/0"
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def etcd_server(workdir: Path) -> Iterator[Server]:
    """A single-member etcd on free loopback ports."""
    port, peer, metrics = free_port(), free_port(), free_port()
    server = spawn("etcd", etcd_command(port, peer, metrics, workdir / "data"), workdir, port)
    server.extra["endpoint"] = f"127.0.0.1:{port}"
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def haproxy_server(workdir: Path) -> Iterator[Server]:
    """A master-worker HAProxy with an empty route table on free loopback ports."""
    port, stats = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "haproxy.cfg"
    config.write_text(render_config(lb_port=port, stats_port=stats, frontends=[], backends={}))
    socket_path = workdir / "master.sock"
    command = haproxy_command(config, socket_path, workdir / "haproxy.pid")
    server = spawn("haproxy", command, workdir, port)
    server.extra.update(config=config, master_socket=socket_path, stats_port=stats)
    try:
        yield server
    finally:
        server.stop()
