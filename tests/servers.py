"""Throwaway real servers (redis, etcd, HAProxy) on free loopback ports, for tests and benches."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dashboard.stack import etcd_command, haproxy_command, redis_command
from deployer.lbconfig import render_config

# Debian's Chromium, as every browser test and bench drives it (Playwright cannot download one).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch_chromium(playwright: Any) -> Any:
    """Headless Chromium from a Playwright instance (``sync_playwright()``'s value)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


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
    config.write_text(render_config(lb_port=port, stats_port=stats, backends={}))
    socket_path = workdir / "master.sock"
    command = haproxy_command(config, socket_path, workdir / "haproxy.pid")
    server = spawn("haproxy", command, workdir, port)
    server.extra.update(config=config, master_socket=socket_path, stats_port=stats)
    try:
        yield server
    finally:
        server.stop()


def python_command(*args: str) -> list[str]:
    """``python <args>`` with the interpreter running the tests."""
    return [sys.executable, *args]


def wait_for_file(path: Path, *, timeout: float = 20.0, process: subprocess.Popen[bytes]) -> None:
    """Block until ``path`` exists; raise if ``process`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        time.sleep(0.05)  # backoff while a child process starts; nothing to watch
    raise TimeoutError(f"{path} did not appear within {timeout}s")


@contextlib.contextmanager
def localcluster_server(workdir: Path, nodes: int = 3) -> Iterator[Server]:
    """A localcluster with ``nodes`` nodes on a free loopback port; ``extra['kubeconfig']``."""
    port = free_port()
    kubeconfig = workdir / "kubeconfig"
    command = python_command(
        "-m", "localcluster",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--nodes", str(nodes),
        "--state-dir", str(workdir / "state"),
        "--kubeconfig", str(kubeconfig),
    )  # fmt: skip
    server = spawn("localcluster", command, workdir, port)
    try:
        wait_for_file(kubeconfig, process=server.process)
        server.extra["kubeconfig"] = kubeconfig
        yield server
    finally:
        server.stop(timeout=20)


def pod_process_ids(pod_ip: str) -> list[int]:
    """The host processes of the localcluster pod at ``pod_ip``, sorted.

    The kubelet starts each container (and each exec probe or hook) in a session of its own,
    with ``LOCALCLUSTER_POD_IP=<ip>`` in its environment, which no pod spec can override and
    /proc keeps as it was at exec. Those processes count, with every process in a session
    one of them leads: a child that cleared its environment still belongs to the container.
    """
    marker = f"LOCALCLUSTER_POD_IP={pod_ip}".encode()
    sessions: dict[int, int] = {}
    marked: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            # Fields after the command name: state, ppid, pgrp, session.
            stat = (entry / "stat").read_bytes()
            sessions[int(entry.name)] = int(stat.rsplit(b")", 1)[1].split()[3])
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                marked.add(int(entry.name))
    led = {pid for pid in marked if sessions.get(pid) == pid}
    return sorted(pid for pid, session in sessions.items() if pid in marked or session in led)


def stack_env(
    *,
    db_path: Path,
    redis_url: str,
    etcd_endpoint: str,
    etcd_prefix: str,
    kubeconfig: Path,
    haproxy: Server,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of worker and proxysync subprocesses sharing the test database."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        GREENLIGHT_DB_PATH=str(db_path),
        GREENLIGHT_REDIS_URL=redis_url,
        GREENLIGHT_ETCD_ENDPOINT=etcd_endpoint,
        GREENLIGHT_ETCD_PREFIX=etcd_prefix,
        GREENLIGHT_KUBECONFIG=str(kubeconfig),
        GREENLIGHT_HAPROXY_CONFIG=str(haproxy.extra["config"]),
        GREENLIGHT_HAPROXY_MASTER_SOCKET=str(haproxy.extra["master_socket"]),
        GREENLIGHT_LB_PORT=str(haproxy.port),
        GREENLIGHT_HAPROXY_STATS_PORT=str(haproxy.extra["stats_port"]),
        GREENLIGHT_LB_URL=f"http://127.0.0.1:{haproxy.port}",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


def start_process(
    name: str, command: Sequence[str], workdir: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start a long-running child in its own process group, logging to ``workdir/<name>.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / f"{name}.log").open("ab")
    return subprocess.Popen(
        list(command),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        start_new_session=True,
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL after ``timeout``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def kill_process(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group at once (a worker that dies mid-task)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def celery_worker_command(hostname: str, concurrency: int = 2) -> list[str]:
    """A Celery worker of the dashboard app with a fixed hostname (restarts keep it)."""
    return python_command(
        "-m", "celery", "-A", "dashboard", "worker",
        "--loglevel", "INFO",
        "--concurrency", str(concurrency),
        "--hostname", hostname,
        "--without-gossip", "--without-mingle",
    )  # fmt: skip
