"""Throwaway real servers on free loopback ports, for tests and benches: redis, etcd, HAProxy,
localcluster and the web side of the stack, one launcher each."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import http.client
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse, urlunparse

import psycopg
import yaml
from django.db import connection
from psycopg import sql

from deployer.lbconfig import render_config
from launcher.stack import etcd_command, haproxy_command, redis_command

REPO = Path(__file__).resolve().parent.parent

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
        stop_process(self.process, timeout)


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


# PostgreSQL: Debian's postgresql-15, as production runs it. initdb refuses to run as root,
# so under root the server runs as the package's `postgres` user (or `nobody`).
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGRES_SUPERUSER = "greenlight"


def _server_user() -> tuple[int, int] | None:
    """(uid, gid) the PostgreSQL server runs as when we are root; None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists")


def _die_with_parent() -> None:
    """``preexec_fn``: a fast shutdown (SIGINT) when the process that started us dies."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGINT, 0, 0, 0)  # PR_SET_PDEATHSIG


def database_url(server_url: str, database: str) -> str:
    """``server_url`` (any database of a server) with its database replaced by ``database``."""
    return urlunparse(urlparse(server_url)._replace(path="/" + quote(database)))


def create_database(server_url: str, name: str) -> str:
    """CREATE DATABASE ``name`` on the server of ``server_url``; the new database's URL."""
    with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(server_url, name)


def _wait_for_postgres(server: Server, timeout: float) -> None:
    """Until the server accepts a session (it listens before its startup has finished)."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.process.returncode}")
        try:
            psycopg.connect(str(server.extra["url"]), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)  # the server is starting; there is nothing to watch


def stop_postgres(server: Server, timeout: float = 30.0) -> None:
    """Fast shutdown (SIGINT: sessions are ended, not waited for), then SIGKILL after ``timeout``."""
    stop_process(server.process, timeout, first=signal.SIGINT)


def stack_database() -> str | None:
    """A new database for a whole stack, while the tests run on PostgreSQL; None on SQLite.

    tests.dbplugin names the session's server in ``GREENLIGHT_TEST_POSTGRES``; the database
    goes when the server does.
    """
    server_url = os.environ.get("GREENLIGHT_TEST_POSTGRES")
    if not server_url:
        return None
    return create_database(server_url, f"stack_{uuid.uuid4().hex[:12]}")


@contextlib.contextmanager
def postgres_server(timeout: float = 60.0) -> Iterator[Server]:
    """A throwaway PostgreSQL 15 on a free loopback port, its files in a temporary folder.

    The superuser ``greenlight`` signs in with a random password (scram-sha-256) over TCP;
    ``server.extra['url']`` is the URL of its ``postgres`` database. Durability is off
    (fsync, full page writes, synchronous commit): the data lives as long as the server.
    The server stops when the context exits, or when the process that started it dies.
    """
    for binary in ("initdb", "postgres"):
        if not (POSTGRES_BIN / binary).exists():
            raise RuntimeError(
                f"{POSTGRES_BIN / binary} is missing; install Debian's postgresql-15 "
                "(`make system-test` does)"
            )
    owner = _server_user()
    workdir = Path(tempfile.mkdtemp(prefix="greenlight-postgres-"))
    password = secrets.token_urlsafe(18)
    try:
        (workdir / "password").write_text(password + "\n")
        if owner is not None:
            for path in (workdir, workdir / "password"):
                os.chown(path, *owner)
        as_owner: dict[str, Any] = (
            {} if owner is None else {"user": owner[0], "group": owner[1], "extra_groups": []}
        )
        initdb = subprocess.run(
            [
                str(POSTGRES_BIN / "initdb"),
                "--pgdata", str(workdir / "data"),
                "--username", POSTGRES_SUPERUSER,
                "--pwfile", str(workdir / "password"),
                "--auth", "scram-sha-256",
                "--encoding", "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            cwd=workdir, capture_output=True, text=True, timeout=120, **as_owner,
        )  # fmt: skip
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb exited with {initdb.returncode}:\n{initdb.stderr}")
        port = free_port()
        log = (workdir / "postgres.log").open("ab")
        command = [
            str(POSTGRES_BIN / "postgres"),
            "-D", str(workdir / "data"),
            "-p", str(port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={workdir}",
            "-c", "max_connections=300",
            "-c", "fsync=off",
            "-c", "full_page_writes=off",
            "-c", "synchronous_commit=off",
            "-c", "log_min_messages=warning",
        ]  # fmt: skip
        process = subprocess.Popen(
            command,
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl must run in the child
            **as_owner,
        )
        log.close()
        server = Server(name="postgres", process=process, port=port, workdir=workdir)
        server.extra["url"] = (
            f"postgresql://{POSTGRES_SUPERUSER}:{password}@127.0.0.1:{port}/postgres"
        )
        try:
            _wait_for_postgres(server, timeout)
        except Exception as exc:
            stop_postgres(server)
            log_text = (workdir / "postgres.log").read_text(errors="replace")
            raise RuntimeError(f"postgres did not start ({exc}); its log:\n{log_text}") from None
        try:
            yield server
        finally:
            stop_postgres(server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def python_command(*args: str) -> list[str]:
    """``python <args>`` with the interpreter running the tests."""
    return [sys.executable, *args]


@dataclass
class LocalCluster:
    """A localcluster under test: its kubeconfig, and its process when the tests started it.

    ``process``, ``port``, ``state_dir`` and ``log`` are None for an external cluster that
    only a kubeconfig names.
    """

    kubeconfig: Path
    process: subprocess.Popen[bytes] | None = None
    port: int | None = None
    state_dir: Path | None = None
    log: Path | None = None

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process group (the server and its pods), then SIGKILL after ``timeout``."""
        if self.process is not None:
            stop_process(self.process, timeout)

    def kill(self) -> None:
        """SIGKILL the localcluster process only, not its group, as a crash would."""
        assert self.process is not None, "an external cluster is not ours to kill"
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)


def tls_context(kubeconfig: Path) -> ssl.SSLContext:
    """A client TLS context trusting the CA in ``kubeconfig`` (localcluster's own)."""
    cluster = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
    ca_pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
    return ssl.create_default_context(cadata=ca_pem)


def answers_readyz(port: int, kubeconfig: Path) -> bool:
    """Whether ``kubeconfig`` exists and the https server whose CA it holds answers /readyz."""
    if not kubeconfig.exists():
        return False
    try:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, timeout=1, context=tls_context(kubeconfig)
        )
        try:
            connection.request("GET", "/readyz")
            return connection.getresponse().status == 200
        finally:
            connection.close()
    except (OSError, http.client.HTTPException):
        return False


def start_localcluster(
    workdir: Path,
    *,
    nodes: int = 3,
    port: int | None = None,
    images: Path | None = None,
    runtime: bool = True,
    extra_args: Sequence[str] = (),
    timeout: float = 60.0,
) -> LocalCluster:
    """Start ``python -m localcluster`` with its state under ``workdir``; return once it is ready.

    Ready is /readyz answering over https, which needs no token; the kubeconfig, written once
    the API listens, carries the CA and the bearer token every other request needs. A
    ``port`` and ``workdir`` of a stopped cluster restart it on its stored state. ``images``
    is an image catalog; ``runtime=False`` serves the API alone (no controllers, no kubelets).
    RuntimeError, with the server's log, if it exits or is not ready within ``timeout``.
    """
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.unlink(missing_ok=True)  # a restart's wait is for the new one
    log = workdir / "localcluster.log"
    command = python_command(
        "-m", "localcluster",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--nodes", str(nodes),
        "--state-dir", str(workdir / "state"),
        "--kubeconfig", str(kubeconfig),
    )  # fmt: skip
    if images is not None:
        command += ["--images", str(images)]
    if not runtime:
        command.append("--no-runtime")
    command += extra_args
    with log.open("ab") as output:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    cluster = LocalCluster(kubeconfig, process, port, workdir / "state", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"localcluster exited with {process.returncode}; its log:\n{log.read_text()}"
            )
        if answers_readyz(port, kubeconfig):
            return cluster
        time.sleep(0.05)  # the child is importing; there is nothing to watch yet
    cluster.stop()
    raise RuntimeError(f"localcluster was not ready within {timeout}s; its log:\n{log.read_text()}")


@contextlib.contextmanager
def localcluster_server(workdir: Path, **options: Any) -> Iterator[LocalCluster]:
    """``start_localcluster(workdir, **options)``, stopped when the context exits."""
    cluster = start_localcluster(workdir, **options)
    try:
        yield cluster
    finally:
        cluster.stop()


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


def shared_database_env() -> dict[str, str]:
    """The environment that points a subprocess at this process's database (the test database).

    SQLite: its file; PostgreSQL: a DATABASE_URL of the same server, user and database.
    """
    database = connection.settings_dict
    if connection.vendor == "sqlite":
        return {"GREENLIGHT_DB_PATH": str(database["NAME"])}
    netloc = f"{quote(database['USER'])}:{quote(database['PASSWORD'])}@{database['HOST']}"
    url = f"postgresql://{netloc}:{database['PORT']}/{quote(database['NAME'])}"
    return {"DATABASE_URL": url}


def stack_env(
    *,
    db_path: Path | None = None,
    redis_url: str,
    etcd_endpoint: str,
    etcd_prefix: str,
    kubeconfig: Path,
    haproxy: Server,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of worker and proxysync subprocesses: on the SQLite file ``db_path``,
    or without one on the test database (PostgreSQL or SQLite)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "GREENLIGHT_DB_PATH")}
    env.update(shared_database_env() if db_path is None else {"GREENLIGHT_DB_PATH": str(db_path)})
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
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
        cwd=REPO,
        env=env,
        start_new_session=True,
    )


def stop_process(
    process: subprocess.Popen[bytes],
    timeout: float = 15.0,
    first: signal.Signals = signal.SIGTERM,
) -> None:
    """Send ``first`` (SIGTERM) to the process group, then SIGKILL after ``timeout``."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, first)
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


@dataclass
class Stack:
    """The web side of a running stack: HAProxy, proxysync, a Celery worker and daphne if asked.

    Every process shares one database with the tests, listens on free loopback ports and
    runs in its own process group.
    """

    haproxy: Server
    env: dict[str, str]
    workdir: Path
    worker_name: str
    etcd_endpoint: str
    etcd_prefix: str
    redis_url: str
    web_port: int | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def lb_port(self) -> int:
        """The port HAProxy serves the apps on."""
        return self.haproxy.port

    @property
    def web_url(self) -> str:
        """The dashboard's URL (only a stack started with ``web=True`` has one)."""
        assert self.web_port is not None, "this stack runs no web server"
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, name: str) -> None:
        """Start (or restart) ``proxysync``, ``worker`` or ``web``."""
        if name == "worker":
            command = celery_worker_command(self.worker_name)
        elif name == "proxysync":
            command = python_command("manage.py", "proxysync")
        else:
            command = python_command(
                "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.web_port),
                "dashboard.asgi:application",
            )  # fmt: skip
        self.processes[name] = start_process(name, command, self.workdir, self.env)

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool at once, as a crash or OOM kill would."""
        kill_process(self.processes["worker"])

    def stop(self) -> None:
        """Stop every process this stack started, the last started first."""
        for process in reversed(self.processes.values()):
            stop_process(process)

    def logs(self) -> str:
        """The tail of each process's log, for a failing test's report."""
        parts = []
        for name in self.processes:
            path = self.workdir / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    def get(self, hostname: str, path: str = "/health") -> tuple[int, dict[str, Any]]:
        """GET through HAProxy with ``Host: hostname`` on a new connection; (status, JSON body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.lb_port, timeout=5)
        try:
            connection.request("GET", path, headers={"Host": hostname, "Connection": "close"})
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        try:
            data = json.loads(body)
        except ValueError:
            data = {"text": body.decode(errors="replace")}
        return response.status, data if isinstance(data, dict) else {"value": data}


@contextlib.contextmanager
def running_stack(
    workdir: Path,
    *,
    db_path: Path | None = None,
    redis_url: str,
    etcd_endpoint: str,
    kubeconfig: Path,
    web: bool = True,
    label: str = "e2e",
) -> Iterator[Stack]:
    """HAProxy, proxysync, a worker and (with ``web``) daphne against the given servers.

    They share the SQLite file ``db_path``, or without one the test database.

    ``label`` names the run's etcd prefix and worker, so that runs sharing an etcd or a
    broker never meet. Everything is stopped (SIGTERM, then SIGKILL) when the context exits.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    web_port = free_port() if web else None
    extra = {"GREENLIGHT_LOG_LEVEL": "INFO"}
    if web_port is not None:
        (workdir / "staticfiles").mkdir(exist_ok=True)
        extra.update(GREENLIGHT_VAR_DIR=str(workdir), GREENLIGHT_WEB_PORT=str(web_port))
    with haproxy_server(workdir / "haproxy") as haproxy:
        prefix = f"/greenlight-{label}-{uuid.uuid4().hex[:8]}"
        stack = Stack(
            haproxy=haproxy,
            env=stack_env(
                db_path=db_path,
                redis_url=redis_url,
                etcd_endpoint=etcd_endpoint,
                etcd_prefix=prefix,
                kubeconfig=kubeconfig,
                haproxy=haproxy,
                extra=extra,
            ),
            workdir=workdir,
            worker_name=f"{label}-{uuid.uuid4().hex[:6]}@localhost",
            etcd_endpoint=etcd_endpoint,
            etcd_prefix=prefix,
            redis_url=redis_url,
            web_port=web_port,
        )
        try:
            stack.start("proxysync")
            stack.start("worker")
            if web_port is not None:
                stack.start("web")
                wait_for_port(web_port, process=stack.processes["web"], timeout=60)
            yield stack
        finally:
            stack.stop()
