"""The web side of the stack for browser tests: HAProxy, proxysync, a Celery worker and daphne.

Built from tests.servers (the same helpers the deployer's integration tests use); redis,
etcd and localcluster come from the session fixtures. Every process shares the pytest
test database (a SQLite file), listens on free loopback ports, runs in its own process
group, and is stopped (SIGTERM, then SIGKILL) when the context exits.
"""

from __future__ import annotations

import contextlib
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import (
    celery_worker_command,
    free_port,
    haproxy_server,
    python_command,
    stack_env,
    start_process,
    stop_process,
    wait_for_port,
)


@dataclass
class Stack:
    """URLs and processes of one running stack."""

    web_url: str
    lb_port: int
    env: dict[str, str]
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def logs(self) -> str:
        """The tail of every process's log, for a failing test's report."""
        parts = []
        for name in self.processes:
            path = self.workdir / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


@contextlib.contextmanager
def running_stack(
    workdir: Path, *, db_path: Path, redis_url: str, etcd_endpoint: str, kubeconfig: Path
) -> Iterator[Stack]:
    """Start HAProxy, proxysync, a worker and daphne against the given servers; stop them after."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "staticfiles").mkdir(exist_ok=True)
    with haproxy_server(workdir / "haproxy") as haproxy:
        web_port = free_port()
        env = stack_env(
            db_path=db_path,
            redis_url=redis_url,
            etcd_endpoint=etcd_endpoint,
            etcd_prefix=f"/greenlight-e2e-{uuid.uuid4().hex[:8]}",
            kubeconfig=kubeconfig,
            haproxy=haproxy,
            extra={
                "GREENLIGHT_VAR_DIR": str(workdir),
                "GREENLIGHT_WEB_PORT": str(web_port),
                "GREENLIGHT_LOG_LEVEL": "INFO",
            },
        )
        stack = Stack(
            web_url=f"http://127.0.0.1:{web_port}",
            lb_port=haproxy.port,
            env=env,
            workdir=workdir,
        )
        commands = {
            "proxysync": python_command("manage.py", "proxysync"),
            "worker": celery_worker_command(f"e2e-{uuid.uuid4().hex[:6]}@localhost"),
            "web": python_command(
                "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port),
                "dashboard.asgi:application",
            ),
        }  # fmt: skip
        try:
            for name, command in commands.items():
                stack.processes[name] = start_process(name, command, workdir, env)
            wait_for_port(web_port, process=stack.processes["web"], timeout=60)
            yield stack
        finally:
            for process in reversed(stack.processes.values()):
                stop_process(process)
