"""The Greenlight stack for benches: started as ``make run`` starts it, and its clients.

:class:`Stack` runs ``launcher.stack prepare``, migrate, ``manage.py bootstrap`` and
``python -m launcher.supervisor Procfile`` on free loopback ports with a throwaway var dir
and a 4-node localcluster, and stops every process it started. :class:`Api` is the
dashboard's REST API (a token) and its pages (a signed-in session); :class:`Cluster` is
localcluster through the official Kubernetes client and HAProxy's stats page.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from kubernetes import client, config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loadgen import tied_child  # noqa: E402
from deployer.haproxycli import master_command  # noqa: E402
from tests.servers import pod_process_ids, stack_database  # noqa: E402

NAMESPACE = "default"
POLL = 0.25


class StepFailed(Exception):
    """A step of the bench could not be carried out; the message names the step."""


# The stack ----------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(lb_count: int = 1) -> tuple[int, int]:
    """A web port with the stack's auxiliary ports after it free, and the first LB port.

    The block is the web port, its five auxiliary ports, one HAProxy stats port per load
    balancer, then one port per load balancer for users' traffic. Taken below the kernel's
    ephemeral range, where other tests' ``bind(0)`` ports and outgoing connections cannot
    claim them between this check and the servers' bind.
    """
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    size = 6 + 2 * lb_count
    step = 10 * (1 + size // 10)
    top = max(ephemeral - size - 2, 12000)
    for _ in range(200):
        web = random.randrange(10000, top, step)
        if all(_port_free(port) for port in range(web, web + size)):
            return web, web + 6 + lb_count
    raise StepFailed(f"no run of {size} free loopback ports found")


def stack_env(
    var_dir: Path, web_port: int, lb_port: int, password: str, lb_count: int = 1
) -> dict[str, str]:
    """``make run``'s environment for a throwaway stack: its ports, state, load balancers, 4 nodes."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GREENLIGHT_")
        and key not in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "SECRET_KEY")
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
        GREENLIGHT_DEBUG="1",
        GREENLIGHT_VAR_DIR=str(var_dir),
        GREENLIGHT_WEB_PORT=str(web_port),
        GREENLIGHT_LB_PORT=str(lb_port),
        GREENLIGHT_LB_COUNT=str(lb_count),
        GREENLIGHT_CLUSTER_NODES="4",
        GREENLIGHT_ADMIN_PASSWORD=password,
    )
    return env


class Stack:
    """The whole stack under ``launcher.supervisor``, started the way ``make run`` starts it.

    ``lb_count`` load balancers (``GREENLIGHT_LB_COUNT``): load balancer ``i`` serves users'
    traffic on ``lb_ports[i]`` and its stats page on ``stats_ports[i]``; ``lb_port`` and
    ``stats_port`` are lb-0's. ``database``: the stack's ``DATABASE_URL`` (default: the
    test session's PostgreSQL when tests run on it, else the embedded SQLite).
    """

    def __init__(self, workdir: Path, lb_count: int = 1, database: str | None = None) -> None:
        self.var_dir = workdir / "var"
        self.lb_count = lb_count
        self.web_port, self.lb_port = free_ports(lb_count)
        self.lb_ports = [self.lb_port + index for index in range(lb_count)]
        self.stats_ports = [self.web_port + 6 + index for index in range(lb_count)]
        self.stats_port = self.stats_ports[0]
        self.password = secrets.token_urlsafe(12)
        self.env = stack_env(self.var_dir, self.web_port, self.lb_port, self.password, lb_count)
        database = database or stack_database()
        if database is not None:  # a test on PostgreSQL: the stack's own database there
            self.env["DATABASE_URL"] = database
        self.kubeconfig = self.var_dir / "localcluster" / "kubeconfig"
        self.log_path = workdir / "stack.log"
        self.supervisor: subprocess.Popen[bytes] | None = None

    def manage(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``manage.py`` (or ``-m module`` with ``-m``) with the stack's environment."""
        command = [sys.executable, *(args if args[0] == "-m" else ("manage.py", *args))]
        try:
            done = subprocess.run(
                command, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise StepFailed(f"{' '.join(args)} took longer than {timeout:.0f}s") from None
        if done.returncode != 0:
            raise StepFailed(
                f"{' '.join(args)} exited with {done.returncode}: {done.stderr[-2000:]}"
            )
        return done.stdout

    def start(self, timeout: float) -> None:
        """Prepare, migrate, bootstrap, start the supervisor and wait for web, every LB and cluster."""
        self.manage("-m", "launcher.stack", "prepare")
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("bootstrap")
        taken = [p for p in range(self.web_port, self.lb_ports[-1] + 1) if not _port_free(p)]
        if taken:
            raise StepFailed(f"ports {taken} were taken by another process; run again")
        log = self.log_path.open("ab")
        self.supervisor = subprocess.Popen(
            [sys.executable, "-m", "launcher.supervisor", "Procfile"],
            cwd=REPO,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Ctrl-C reaches the bench only, which stops the stack in order; if the bench
            # is killed, the supervisor gets SIGTERM and stops the stack itself.
            preexec_fn=tied_child,  # noqa: PLW1509 - setsid + prctl must run in the child
        )
        log.close()
        deadline = time.monotonic() + timeout
        for port in (self.web_port, *self.lb_ports, self.web_port + 5):
            self._wait_port(port, deadline)
        while not self.kubeconfig.exists():
            self._check_deadline(deadline, "localcluster's kubeconfig")
            time.sleep(0.1)  # localcluster writes it once it listens
        time.sleep(1.0)  # a process that lost its port to another one says so within a second
        self._check_deadline(deadline, "the stack")

    def _wait_port(self, port: int, deadline: float) -> None:
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return
            self._check_deadline(deadline, f"a listener on 127.0.0.1:{port}")
            time.sleep(0.1)  # processes starting; nothing to watch

    def exits(self) -> list[str]:
        """The supervisor's lines about processes that exited (it restarts them)."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if re.search(r"\| \S+ exited with", line)]

    def _check_deadline(self, deadline: float, what: str) -> None:
        assert self.supervisor is not None
        if "Address already in use" in self.log_tail(200):
            raise StepFailed(
                f"a port of the stack was taken by another process:\n{self.log_tail()}"
            )
        if self.supervisor.poll() is not None:
            raise StepFailed(f"the stack stopped while waiting for {what}:\n{self.log_tail()}")
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out waiting for {what}:\n{self.log_tail()}")

    def token(self) -> str:
        """An API token of the demo user."""
        output = self.manage("drf_create_token", "admin")
        match = re.search(r"\b([0-9a-f]{40})\b", output)
        if match is None:
            raise StepFailed(f"no token in drf_create_token's output: {output!r}")
        return match.group(1)

    def haproxy_dir(self, index: int = 0) -> Path:
        """Load balancer ``index``'s HAProxy folder (config, map, master socket, pid file)."""
        return self.var_dir / ("haproxy" if index == 0 else f"haproxy-{index}")

    def haproxy_retries(self, app: str) -> tuple[int, int] | None:
        """(worker pid, retries + redispatches so far) of lb-0's HAProxy backends of ``app``.

        Counters belong to a worker and start at 0 in the one a reload forks: compare two
        readings only when their pids match. None when the master CLI does not answer.
        """
        socket_path = self.haproxy_dir() / "master.sock"
        try:
            processes = master_command(socket_path, "show proc", timeout=2.0)
            stats = master_command(socket_path, "@1 show stat", timeout=2.0)
        except OSError:
            return None
        workers = processes.split("# workers", 1)[-1].split()
        lines = stats.splitlines()
        if not workers or not workers[0].isdigit() or not lines or not lines[0].startswith("# "):
            return None
        header = lines[0][2:].split(",")
        wretr, wredis = header.index("wretr"), header.index("wredis")
        retries = 0
        for line in lines[1:]:
            cells = line.split(",")
            if len(cells) > wredis and cells[1] == "BACKEND" and f".{app}-v" in cells[0]:
                retries += int(cells[wretr] or 0) + int(cells[wredis] or 0)
        return int(workers[0]), retries

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the supervisor's output."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def pid(self, name: str) -> int | None:
        """The pid the supervisor last started the process ``name`` with (``haproxy-1``, ...)."""
        if not self.log_path.exists():
            return None
        text = self.log_path.read_text(errors="replace")
        pids = re.findall(rf"\| {re.escape(name)} started \(pid (\d+)\)", text)
        return int(pids[-1]) if pids else None

    def child_pids(self) -> list[int]:
        """Process ids the supervisor reported starting (each leads its own process group)."""
        if not self.log_path.exists():
            return []
        text = self.log_path.read_text(errors="replace")
        return [int(pid) for pid in re.findall(r"started \(pid (\d+)\)", text)]

    def stop(self) -> None:
        """SIGTERM the supervisor (it stops every process), then kill whatever is left."""
        if self.supervisor is None:
            return
        if self.supervisor.poll() is None:
            self.supervisor.send_signal(signal.SIGTERM)
            try:
                self.supervisor.wait(40)
            except subprocess.TimeoutExpired:
                self.supervisor.kill()
                self.supervisor.wait(10)
        self.supervisor = None
        for pid in self.child_pids():
            if self._ours(pid):  # only left if the supervisor could not stop it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)

    def _ours(self, pid: int) -> bool:
        """The process still runs with this stack's var dir (a pid is not reused by another)."""
        return _environ_has(pid, f"GREENLIGHT_VAR_DIR={self.var_dir}")


# The REST API, the app page and the cluster ------------------------------------------------


class Api:
    """The dashboard's REST API with a token, and its pages with a signed-in session."""

    def __init__(self, web_port: int, token: str) -> None:
        self.base = f"http://127.0.0.1:{web_port}"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        self.pages = requests.Session()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call; StepFailed unless it answers 2xx."""
        try:
            response = self.http.request(method, self.base + path, json=body, timeout=15)
        except requests.RequestException as exc:
            raise StepFailed(f"{method} {path}: {exc}") from None
        if not response.ok:
            raise StepFailed(f"{method} {path} answered {response.status_code}: {response.text}")
        return response.json() if response.content else {}

    def wait_terminal(self, path: str, what: str, timeout: float) -> dict[str, Any]:
        """Poll a deployment or scaling run until it has finished; StepFailed unless it succeeded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = self.call("GET", path)
            if item["status"] in ("succeeded", "failed", "aborted"):
                if item["status"] != "succeeded":
                    raise StepFailed(f"{what} {item['status']}: {item.get('failure_reason', '')}")
                return item
            time.sleep(POLL)  # the API has no watch for one row's status
        raise StepFailed(f"{what} still {item['status']} after {timeout:.0f}s")

    def page(self, method: str, path: str, data: dict[str, str] | None = None) -> Any:
        """One request of the signed-in browser session, redirects not followed."""
        if method == "POST":
            data = {**(data or {}), "csrfmiddlewaretoken": self.pages.cookies.get("csrftoken", "")}
        try:
            return self.pages.request(
                method, self.base + path, data=data, allow_redirects=False, timeout=15
            )
        except requests.RequestException as exc:
            raise StepFailed(f"{method} {path}: {exc}") from None

    def sign_in(self, password: str) -> None:
        """A browser session of the demo user (the swap back is a form on the app page)."""
        self.page("GET", "/login/")
        response = self.page("POST", "/login/", {"username": "admin", "password": password})
        if response.status_code != 302:
            raise StepFailed(f"sign-in answered {response.status_code}")

    def swap_back(self, app_id: int) -> int:
        """Post the app page's Swap back form; the id of the deployment it queued."""
        self.page("GET", f"/apps/{app_id}/")
        response = self.page("POST", f"/apps/{app_id}/swap-back/")
        location = response.headers.get("Location", "")
        match = re.search(r"/deployments/(\d+)/", location)
        if response.status_code != 302 or match is None:
            raise StepFailed(
                f"swap back answered {response.status_code} -> {location!r} "
                "(a redirect to the app page: no warm previous version)"
            )
        return int(match.group(1))


@dataclass
class Pod:
    """What the bench needs of a pod."""

    name: str
    node: str
    ip: str
    ready: bool
    deleting: bool
    restarts: int
    labels: dict[str, str] = field(default_factory=dict)


class Cluster:
    """localcluster through the official Kubernetes client and the stack's kubeconfig."""

    def __init__(self, kubeconfig: Path, stats_port: int, cluster_port: int) -> None:
        self.core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        self.stats_url = f"http://127.0.0.1:{stats_port}/stats;csv"
        self.cluster_port = cluster_port

    def pods(self, selector: str = "", node: str = "") -> list[Pod]:
        """Pods of the namespace by label selector, or every pod on ``node``."""
        if node:
            listed = self.core.list_pod_for_all_namespaces(
                field_selector=f"spec.nodeName={node}", _request_timeout=10
            )
        else:
            listed = self.core.list_namespaced_pod(
                NAMESPACE, label_selector=selector, _request_timeout=10
            )
        pods = []
        for item in listed.items:
            conditions = item.status.conditions or []
            statuses = item.status.container_statuses or []
            pods.append(
                Pod(
                    name=item.metadata.name,
                    node=item.spec.node_name or "",
                    ip=item.status.pod_ip or "",
                    ready=item.status.phase == "Running"
                    and any(c.type == "Ready" and c.status == "True" for c in conditions),
                    deleting=item.metadata.deletion_timestamp is not None,
                    restarts=sum(s.restart_count or 0 for s in statuses),
                    labels=dict(item.metadata.labels or {}),
                )
            )
        return pods

    def nodes(self) -> list[tuple[str, bool]]:
        """(name, schedulable) of every node."""
        listed = self.core.list_node(_request_timeout=10)
        return [(n.metadata.name, not n.spec.unschedulable) for n in listed.items]

    def haproxy_servers(self, app: str, version: int) -> list[str]:
        """Status (UP, DOWN, MAINT...) of each server of the version's HAProxy backend."""
        try:
            text = requests.get(self.stats_url, timeout=5).text
        except requests.RequestException:
            return []
        suffix = f"{app}-v{version}"
        statuses = []
        for line in text.splitlines()[1:]:
            cells = line.split(",")
            if len(cells) > 17 and cells[0].endswith(suffix) and cells[1] not in ("BACKEND",):
                statuses.append(cells[17])
        return statuses

    def wait_settled(self, app: str, version: int, replicas: int, timeout: float) -> None:
        """Until the version has exactly ``replicas`` pods, ready, none deleting, all UP in HAProxy."""
        deadline = time.monotonic() + timeout
        pods: list[Pod] = []
        servers: list[str] = []
        while time.monotonic() < deadline:
            pods = self.pods(f"app={app},version={version}")
            servers = self.haproxy_servers(app, version)
            if (
                len(pods) == replicas
                and all(p.ready and not p.deleting for p in pods)
                and servers == ["UP"] * replicas
            ):
                return
            time.sleep(POLL)  # pod status and HAProxy's checks both change on their own
        states = [f"{p.name}@{p.node} ready={p.ready} deleting={p.deleting}" for p in pods]
        raise StepFailed(
            f"{app} v{version} not settled at {replicas} replicas in {timeout:.0f}s: "
            f"pods {states}, HAProxy servers {servers}"
        )

    def busiest_node(self, app: str, version: int) -> str:
        """The node that runs most of the version's pods."""
        counts = Counter(p.node for p in self.pods(f"app={app},version={version}") if p.node)
        if not counts:
            raise StepFailed(f"{app} v{version} has no scheduled pods")
        return counts.most_common(1)[0][0]

    def pod_pids(self, pod_ip: str) -> list[int]:
        """Host processes of the pod at ``pod_ip`` in this stack's cluster."""
        pids = pod_process_ids(pod_ip)
        # Pod addresses are unique per running cluster; the API port makes sure it is ours.
        return pids if any(self._in_this_cluster(pid) for pid in pids) else []

    def _in_this_cluster(self, pid: int) -> bool:
        return _environ_has(pid, f"KUBERNETES_SERVICE_PORT={self.cluster_port}")


def _environ_has(pid: int, setting: str) -> bool:
    """Whether the process runs with ``setting`` (NAME=value) in its environment; False once gone."""
    try:
        return setting.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
