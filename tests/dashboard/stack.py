"""The whole Greenlight stack for browser tests: localcluster, proxysync, a worker and daphne.

redis, etcd and HAProxy come from tests.servers; every process shares the pytest test
database (a SQLite file) and listens on free loopback ports. Processes run in their own
process groups and are stopped (SIGTERM, then SIGKILL) when the context exits.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import Server, free_port, haproxy_server, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Stack:
    """URLs and processes of one running stack."""

    web_url: str
    lb_port: int
    env: dict[str, str]
    workdir: Path
    servers: list[Server] = field(default_factory=list)

    def logs(self) -> str:
        """The tail of every process's log, for a failing test's report."""
        parts = []
        for server in self.servers:
            path = server.workdir / f"{server.name}.log"
            if path.exists():
                parts.append(f"--- {server.name} ---\n{path.read_text()[-4000:]}")
        return "\n".join(parts)


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


@contextlib.contextmanager
def running_stack(
    workdir: Path,
    *,
    db_path: str,
    redis_url: str,
    etcd_endpoint: str,
    without: tuple[str, ...] = (),
) -> Iterator[Stack]:
    """Start localcluster, HAProxy, proxysync, a Celery worker and daphne; stop them after."""
    workdir.mkdir(parents=True, exist_ok=True)
    with haproxy_server(workdir / "haproxy") as haproxy:
        cluster_port, web_port = free_port(), free_port()
        kubeconfig = workdir / "localcluster" / "kubeconfig"
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings",
            "SECRET_KEY": "greenlight-tests-only",
            "GREENLIGHT_VAR_DIR": str(workdir),
            "GREENLIGHT_DB_PATH": db_path,
            "GREENLIGHT_REDIS_URL": redis_url,
            "GREENLIGHT_ETCD_ENDPOINT": etcd_endpoint,
            "GREENLIGHT_ETCD_PREFIX": f"/greenlight-e2e-{web_port}",
            "GREENLIGHT_KUBECONFIG": str(kubeconfig),
            "GREENLIGHT_HAPROXY_CONFIG": str(haproxy.extra["config"]),
            "GREENLIGHT_HAPROXY_MASTER_SOCKET": str(haproxy.extra["master_socket"]),
            "GREENLIGHT_LB_PORT": str(haproxy.port),
            "GREENLIGHT_HAPROXY_STATS_PORT": str(haproxy.extra["stats_port"]),
            "GREENLIGHT_LB_URL": f"http://127.0.0.1:{haproxy.port}",
            "GREENLIGHT_WEB_PORT": str(web_port),
            "GREENLIGHT_HEALTH_DEADLINE": "60",
            "GREENLIGHT_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
        (workdir / "staticfiles").mkdir(exist_ok=True)
        stack = Stack(
            web_url=f"http://127.0.0.1:{web_port}",
            lb_port=haproxy.port,
            env=env,
            workdir=workdir,
        )
        commands = {
            "localcluster": (
                _python(
                    "-m", "localcluster",
                    "--host", "127.0.0.1",
                    "--port", str(cluster_port),
                    "--nodes", "2",
                    "--state-dir", str(workdir / "localcluster" / "state"),
                    "--kubeconfig", str(kubeconfig),
                ),
                cluster_port,
            ),
            "proxysync": (_python(str(ROOT / "manage.py"), "proxysync"), None),
            "worker": (
                _python(
                    "-m", "celery", "-A", "dashboard", "worker",
                    "--loglevel", "INFO", "--concurrency", "2",
                    "--hostname", f"e2e-{web_port}@%h",
                    "--without-gossip", "--without-mingle", "--without-heartbeat",
                ),
                None,
            ),
            "web": (
                _python(
                    "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port),
                    "dashboard.asgi:application",
                ),
                web_port,
            ),
        }  # fmt: skip
        try:
            for name, (command, port) in commands.items():
                if name in without:
                    continue
                stack.servers.append(_start(name, command, workdir, env, port))
            yield stack
        finally:
            for server in reversed(stack.servers):
                server.stop()


def _start(
    name: str, command: list[str], workdir: Path, env: dict[str, str], port: int | None
) -> Server:
    """Spawn in its own process group with the stack's environment; wait for ``port`` if any."""
    logdir = workdir / name
    logdir.mkdir(parents=True, exist_ok=True)
    log = (logdir / f"{name}.log").open("wb")
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    server = Server(name=name, process=process, port=port or 0, workdir=logdir)
    if port is not None:
        try:
            wait_for_port(port, process=process, timeout=60)
        except Exception:
            server.stop()
            raise RuntimeError(
                f"{name} did not start; its log:\n{(logdir / f'{name}.log').read_text()}"
            ) from None
    return server
