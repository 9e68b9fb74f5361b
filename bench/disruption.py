"""Failed requests through HAProxy while a running app changes, one kind of change at a time.

    .venv/bin/python bench/disruption.py [--scenarios scale,drain,nodegroup,deploy,swapback,
                                          undeploy-other,delete-pod,kill-pod,kill-node]
                                         [--concurrency 40] [--rate 400] [--rest 5] [--settle 2]
                                         [--step-timeout 240] [--keep]

Starts the whole stack as ``make run`` does (``dashboard.stack prepare``, migrate,
``manage.py bootstrap``, ``python -m dashboard.supervisor Procfile``) on free loopback
ports, with a 4-node localcluster and a throwaway var dir; takes an API token with
``manage.py drf_create_token admin``; creates and deploys through the REST API the app
``bench`` (demo/hello:1, 6 replicas, frontend bench.localhost, old version kept warm)
and a small second app ``other``.

Each scenario then runs with its own load process (asyncio + aiohttp, ``--concurrency``
connections through HAProxy, half keep-alive and half a new connection per request, at
most ``--rate`` requests/s in all, GET /health with ``Host: bench.localhost``): ``--rest``
seconds at rest, then the change, then ``--settle`` seconds after the change has finished.
A change has finished when its run or deployment has and the app's live version has its
replicas running and ready in the cluster, each of them UP in HAProxy. Scenarios:

    scale           scale the app 6 -> 10, then 10 -> 3 (scaling API runs); back to 6 after
    drain           drain the node running most of the app's pods; uncordon it after
    nodegroup       node group ``default`` 4 -> 1 -> 3 nodes (capacity runs)
    deploy          deploy demo/hello:2
    swapback        swap back to the warm previous version (the app page's form)
    undeploy-other  undeploy the second app
    delete-pod      delete one pod of the app through the Kubernetes API
    kill-pod        SIGKILL the processes of one pod of the app
    kill-node       SIGKILL every pod process on the node running most of the app's pods

Printed, one row per scenario after an ``at rest`` row: requests started during the change
(and the settle time), failed ones (a non-2xx status or no response; by kind, with the
connection mode), p50 and p99 latency of the successful ones, p99 in the rest period just
before, their ratio, and how long the change took. Failed requests never change the exit
code; it is 1 only when a step of the bench itself could not be carried out (the step is
named and the stack stopped), 130 on Ctrl-C. Everything binds 127.0.0.1, every wait has a
deadline, and every process started is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loadgen import Load, LoadFailed, LoadSpec, Window, percentile, tied_child  # noqa: E402

HOST = "bench.localhost"
APP = "bench"
OTHER = "other"
NAMESPACE = "default"
REPLICAS = 6
POLL = 0.25
SCENARIOS = (
    "scale",
    "drain",
    "nodegroup",
    "deploy",
    "swapback",
    "undeploy-other",
    "delete-pod",
    "kill-pod",
    "kill-node",
)


class StepFailed(Exception):
    """A step of the bench could not be carried out; the message names the step."""


@dataclass
class Row:
    """One printed line: a scenario's figures."""

    scenario: str
    change: Window
    rest: Window
    seconds: float | None

    def cells(self) -> list[str]:
        """The row's columns as text."""
        p99 = percentile(self.change.latencies_ms(), 0.99)
        rest_p99 = percentile(self.rest.latencies_ms(), 0.99)
        return [
            self.scenario,
            str(len(self.change.records)),
            str(len(self.change.failed)),
            f"{percentile(self.change.latencies_ms(), 0.5):.1f}",
            f"{p99:.1f}",
            f"{rest_p99:.1f}",
            f"{p99 / rest_p99:.2f}" if rest_p99 > 0 else "-",
            f"{self.seconds:.1f}" if self.seconds is not None else "-",
            self.change.kinds(),
        ]


HEADER = ["scenario", "requests", "failed", "p50 ms", "p99 ms", "rest p99", "ratio", "change s"]


def print_table(rows: list[Row], notes: list[str]) -> None:
    """The figures of every scenario run so far, the total of failed requests, and notes."""
    lines = [[*HEADER, "failures (kind/connection)"], *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    print()
    for line in lines:
        cells = [line[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(line[1:-1], widths[1:], strict=True)
        ]
        print("  ".join([*cells, line[-1]]))
    changes = [row for row in rows if row.seconds is not None]
    failed = sum(len(row.change.failed) for row in changes)
    total = sum(len(row.change.records) for row in changes)
    at_rest = sum(len(row.rest.failed) for row in rows)
    print(
        f"\ntotal: {failed} failed of {total} requests during {len(changes)} changes; "
        f"{at_rest} failed at rest",
        flush=True,
    )
    for note in notes:
        print(f"note: {note}")


# The stack ----------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports() -> tuple[int, int]:
    """A web port with the six after it free (the stack's auxiliary ports), and an LB port.

    Taken below the kernel's ephemeral range, where other tests' ``bind(0)`` ports and
    outgoing connections cannot claim them between this check and the servers' bind.
    """
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    top = max(ephemeral - 10, 12000)
    for _ in range(200):
        web = random.randrange(10000, top, 10)
        if all(_port_free(port) for port in range(web, web + 8)):
            return web, web + 7
    raise StepFailed("no run of 8 free loopback ports found")


def stack_env(var_dir: Path, web_port: int, lb_port: int, password: str) -> dict[str, str]:
    """``make run``'s environment for a throwaway stack: its ports, state and 4 nodes."""
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
        GREENLIGHT_CLUSTER_NODES="4",
        GREENLIGHT_ADMIN_PASSWORD=password,
    )
    return env


class Stack:
    """The whole stack under ``dashboard.supervisor``, started the way ``make run`` starts it."""

    def __init__(self, workdir: Path) -> None:
        self.var_dir = workdir / "var"
        self.web_port, self.lb_port = free_ports()
        self.stats_port = self.web_port + 6
        self.password = secrets.token_urlsafe(12)
        self.env = stack_env(self.var_dir, self.web_port, self.lb_port, self.password)
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
        """Prepare, migrate, bootstrap, start the supervisor and wait for web, LB and cluster."""
        self.manage("-m", "dashboard.stack", "prepare")
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage("bootstrap")
        taken = [p for p in range(self.web_port, self.lb_port + 1) if not _port_free(p)]
        if taken:
            raise StepFailed(f"ports {taken} were taken by another process; run again")
        log = self.log_path.open("ab")
        self.supervisor = subprocess.Popen(
            [sys.executable, "-m", "dashboard.supervisor", "Procfile"],
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
        for port in (self.web_port, self.lb_port, self.web_port + 5):
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

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the supervisor's output."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

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
        marker = f"GREENLIGHT_VAR_DIR={self.var_dir}".encode()
        try:
            return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False


# The REST API, the app page and the cluster ------------------------------------------------


class Api:
    """The dashboard's REST API with a token, and its pages with a signed-in session."""

    def __init__(self, web_port: int, token: str) -> None:
        import requests

        self.base = f"http://127.0.0.1:{web_port}"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        self.pages = requests.Session()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call; StepFailed unless it answers 2xx."""
        import requests

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
        import requests

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
        from kubernetes import client, config

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
        import requests

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
        try:
            from tests.servers import pod_process_ids  # type: ignore[attr-defined]
        except ImportError:
            pod_process_ids = _pod_process_ids
        pids = pod_process_ids(pod_ip)
        # Pod addresses are unique per running cluster; the API port makes sure it is ours.
        return pids if any(self._in_this_cluster(pid) for pid in pids) else []

    def _in_this_cluster(self, pid: int) -> bool:
        marker = f"KUBERNETES_SERVICE_PORT={self.cluster_port}".encode()
        try:
            return marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False


def _pod_process_ids(pod_ip: str) -> list[int]:
    """Processes whose environment has the kubelet's ``LOCALCLUSTER_POD_IP=<pod_ip>``."""
    marker = f"LOCALCLUSTER_POD_IP={pod_ip}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
        except OSError:
            continue  # gone, or another user's
    return pids


# Scenarios ------------------------------------------------------------------------------


@dataclass
class Bench:
    """The running stack, its apps and the figures so far."""

    args: argparse.Namespace
    workdir: Path
    stack: Stack
    api: Api
    cluster: Cluster
    app_id: int = 0
    other_id: int = 0
    replicas: int = REPLICAS
    warm_previous: bool = False
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exits_seen: int = 0

    @property
    def timeout(self) -> float:
        """Deadline of any one wait."""
        return float(self.args.step_timeout)

    def live_version(self) -> int:
        """The bench app's live version."""
        version = self.api.call("GET", f"/api/apps/{self.app_id}/")["live_version"]
        if version is None:
            raise StepFailed(f"{APP} is not live")
        return int(version)

    def settle(self, replicas: int | None = None) -> None:
        """Wait until the live version runs ``replicas`` (default: the current count)."""
        if replicas is not None:
            self.replicas = replicas
        self.cluster.wait_settled(APP, self.live_version(), self.replicas, self.timeout)

    def deploy(self, app_id: int, image: str | None = None) -> None:
        """Deploy through the API and wait for the deployment to succeed."""
        queued = self.api.call("POST", f"/api/apps/{app_id}/deploy/", {"image": image or ""})
        self.api.wait_terminal(f"/api/deployments/{queued['id']}/", "deploy", self.timeout)

    def run(self, path: str, body: dict[str, Any], what: str) -> None:
        """Start a scaling run through the API and wait for it to succeed."""
        run = self.api.call("POST", path, body)
        self.api.wait_terminal(f"/api/scaling/runs/{run['id']}/", what, self.timeout)

    def scale(self, replicas: int) -> None:
        """A scaling run that scales the app, then its pods settled at the new count."""
        self.say(f"scale to {replicas}")
        self.run(f"/api/scaling/apps/{self.app_id}/scale/", {"replicas": replicas}, "scale run")
        self.settle(replicas)

    def say(self, text: str) -> None:
        """A progress line."""
        print(f"  {time.strftime('%H:%M:%S')} {text}", flush=True)

    def measure(self, name: str, change: Callable[[], None] | None) -> None:
        """Load at rest, then through ``change`` and the settle time; append the row."""
        self.settle()
        # Long enough for the slowest scenario (two runs, their settling, rest and settle).
        max_seconds = 4 * self.args.step_timeout + self.args.rest + self.args.settle + 60
        spec = LoadSpec(
            self.stack.lb_port, HOST, self.args.concurrency, self.args.rate, max_seconds
        )
        load = Load(spec, self.workdir, name)
        try:
            load.wait_ready()
            time.sleep(0.5)  # connections opened; the rest period starts warm
            rest_start = time.monotonic()
            time.sleep(self.args.rest * (2 if change is None else 1))
            change_start = time.monotonic()
            if change is not None:
                change()
            change_end = time.monotonic()
            time.sleep(self.args.settle if change is not None else 0)
            window_end = time.monotonic()
        finally:
            records = load.stop()
        rest = Window.of(records, rest_start, change_start)
        if change is None:
            row = Row(name, rest, rest, None)
        else:
            row = Row(name, Window.of(records, change_start, window_end), rest, None)
            row.seconds = change_end - change_start
        self.rows.append(row)
        print("  " + "  ".join(row.cells()), flush=True)
        self.note_exits(name)

    def note_exits(self, when: str) -> None:
        """Note the stack's processes that exited (the supervisor restarts them) since last time."""
        exits = self.stack.exits()
        for line in exits[self.exits_seen :]:
            self.notes.append(f"{when}: {line.strip()}")
            print(f"  note: {line.strip()}", flush=True)
        self.exits_seen = len(exits)


def scenario_scale(bench: Bench) -> None:
    """6 -> 10 -> 3 under load, then back to 6 at rest."""
    bench.measure("scale", lambda: (bench.scale(10), bench.scale(3)))
    bench.scale(REPLICAS)


def scenario_drain(bench: Bench) -> None:
    """Drain the busiest node under load; uncordon it after."""
    node = bench.cluster.busiest_node(APP, bench.live_version())

    def drain() -> None:
        bench.say(f"drain {node}")
        bench.run(f"/api/scaling/nodes/{node}/drain/", {"deadline": 120}, f"drain of {node}")
        bench.settle()

    bench.measure("drain", drain)
    bench.run(f"/api/scaling/nodes/{node}/uncordon/", {}, f"uncordon of {node}")


def scenario_nodegroup(bench: Bench) -> None:
    """Node group ``default`` 4 -> 1 -> 3."""
    groups = bench.api.call("GET", "/api/scaling/node-groups/")["results"]
    group = next((g for g in groups if g["name"] == "default"), None)
    if group is None:
        raise StepFailed("no node group named default")
    path = f"/api/scaling/node-groups/{group['id']}/capacity/"

    def capacity(desired: int) -> None:
        bench.say(f"node group default to {desired}")
        bench.run(path, {"desired": desired}, f"capacity {desired} of node group default")
        bench.settle()
        nodes = bench.cluster.nodes()
        if len(nodes) != desired:
            raise StepFailed(f"node group default has {len(nodes)} nodes, not {desired}")

    bench.measure("nodegroup", lambda: (capacity(1), capacity(3)))


def scenario_deploy(bench: Bench) -> None:
    """Deploy demo/hello:2."""

    def deploy() -> None:
        bench.say("deploy demo/hello:2")
        bench.deploy(bench.app_id, "demo/hello:2")
        bench.settle()

    bench.measure("deploy", deploy)
    bench.warm_previous = True


def scenario_swapback(bench: Bench) -> None:
    """Swap back to the warm previous version (deploys demo/hello:2 at rest first if needed)."""
    if not bench.warm_previous:
        bench.say("no warm previous version: deploy demo/hello:2 first (not measured)")
        bench.deploy(bench.app_id, "demo/hello:2")
        bench.settle()

    def swap() -> None:
        bench.say("swap back")
        deployment = bench.api.swap_back(bench.app_id)
        bench.api.wait_terminal(f"/api/deployments/{deployment}/", "swap back", bench.timeout)
        bench.settle()

    bench.measure("swapback", swap)
    bench.warm_previous = False  # the swap back retired the version it left


def scenario_undeploy_other(bench: Bench) -> None:
    """Undeploy the second app."""

    def undeploy() -> None:
        queued = bench.api.call("POST", f"/api/apps/{bench.other_id}/undeploy/")
        bench.api.wait_terminal(f"/api/deployments/{queued['id']}/", "undeploy", bench.timeout)

    bench.measure("undeploy-other", undeploy)


def _one_pod(bench: Bench) -> Pod:
    pods = bench.cluster.pods(f"app={APP},version={bench.live_version()}")
    ready = sorted((p for p in pods if p.ready and p.ip), key=lambda p: p.name)
    if not ready:
        raise StepFailed(f"{APP} has no ready pod")
    return ready[0]


def _wait_replaced(bench: Bench, before: list[Pod]) -> None:
    """Until each pod is gone or has restarted since ``before``, then the app settled."""
    deadline = time.monotonic() + bench.timeout
    pending = {p.name: p.restarts for p in before}
    while pending and time.monotonic() < deadline:
        now = {p.name: p for p in bench.cluster.pods(f"app={APP}")}
        pending = {
            name: restarts
            for name, restarts in pending.items()
            if name in now and not now[name].deleting and now[name].restarts <= restarts
        }
        time.sleep(POLL)  # the kubelet notices the dead process on its own
    if pending:
        raise StepFailed(f"pods neither restarted nor replaced in time: {sorted(pending)}")
    bench.settle()


def _kill(bench: Bench, pods: list[Pod]) -> None:
    killed = 0
    for pod in pods:
        for pid in bench.cluster.pod_pids(pod.ip):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
    if not killed:
        raise StepFailed(f"no process found for pods {[p.name for p in pods]}")
    bench.say(f"SIGKILLed {killed} processes of {len(pods)} pods")


def scenario_delete_pod(bench: Bench) -> None:
    """Delete one pod of the app through the Kubernetes API."""
    pod = _one_pod(bench)

    def delete() -> None:
        bench.say(f"delete pod {pod.name}")
        bench.cluster.core.delete_namespaced_pod(pod.name, NAMESPACE, _request_timeout=10)
        _wait_replaced(bench, [pod])

    bench.measure("delete-pod", delete)


def scenario_kill_pod(bench: Bench) -> None:
    """SIGKILL the processes of one pod of the app."""
    pod = _one_pod(bench)
    bench.measure("kill-pod", lambda: (_kill(bench, [pod]), _wait_replaced(bench, [pod])))


def scenario_kill_node(bench: Bench) -> None:
    """SIGKILL every pod process on the node running most of the app's pods."""
    node = bench.cluster.busiest_node(APP, bench.live_version())
    pods = [p for p in bench.cluster.pods(node=node) if p.ip]

    def kill() -> None:
        bench.say(f"node {node}: {len(pods)} pods")
        _kill(bench, pods)
        _wait_replaced(bench, [p for p in pods if p.labels.get("app") == APP])

    bench.measure("kill-node", kill)


RUNNERS: dict[str, Callable[[Bench], None]] = {
    "scale": scenario_scale,
    "drain": scenario_drain,
    "nodegroup": scenario_nodegroup,
    "deploy": scenario_deploy,
    "swapback": scenario_swapback,
    "undeploy-other": scenario_undeploy_other,
    "delete-pod": scenario_delete_pod,
    "kill-pod": scenario_kill_pod,
    "kill-node": scenario_kill_node,
}


# Main -------------------------------------------------------------------------------------


def setup(bench: Bench) -> None:
    """Wait for the 4 nodes, create and deploy both apps."""
    deadline = time.monotonic() + bench.timeout
    while len([n for n in bench.cluster.nodes() if n[1]]) < 4:
        if time.monotonic() > deadline:
            raise StepFailed(f"4 nodes not registered in time: {bench.cluster.nodes()}")
        time.sleep(POLL)  # localcluster registers its nodes on its own
    common = {"image": "demo/hello:1", "health_deadline": 60}
    bench.app_id = bench.api.call(
        "POST",
        "/api/apps/",
        {**common, "name": APP, "replicas": REPLICAS, "frontend": HOST, "keep_old_seconds": 600},
    )["id"]
    bench.other_id = bench.api.call(
        "POST",
        "/api/apps/",
        {**common, "name": OTHER, "replicas": 2, "frontend": "other.localhost"},
    )["id"]
    bench.say(f"deploy {APP} (demo/hello:1, {REPLICAS} replicas) and {OTHER} (2 replicas)")
    bench.deploy(bench.app_id)
    bench.deploy(bench.other_id)
    bench.settle(REPLICAS)


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--rate", type=float, default=400.0, help="requests/s in all")
    parser.add_argument("--rest", type=float, default=5.0, help="seconds at rest before a change")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of load after a change")
    parser.add_argument("--step-timeout", type=float, default=240.0, help="deadline of each wait")
    parser.add_argument("--keep", action="store_true", help="keep the var dir and logs")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in RUNNERS]
    if unknown:
        parser.error(f"unknown scenarios {unknown}; known: {','.join(SCENARIOS)}")
    if args.concurrency < 2 or args.rate <= 0:
        parser.error("--concurrency must be at least 2 and --rate positive")
    args.scenarios = chosen
    return args


@contextlib.contextmanager
def interrupted_by_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so every process is stopped either way."""

    def raise_interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> int:
    """Start the stack, run the scenarios, print the table, stop everything; the exit code."""
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-disruption-"))
    stack = Stack(workdir)
    started = time.monotonic()
    rows: list[Row] = []
    notes: list[str] = []
    code = 0
    with interrupted_by_sigterm():
        try:
            print(
                f"stack in {workdir}: web 127.0.0.1:{stack.web_port}, LB 127.0.0.1:{stack.lb_port}",
                flush=True,
            )
            stack.start(timeout=max(120.0, args.step_timeout))
            api = Api(stack.web_port, stack.token())
            api.sign_in(stack.password)
            cluster = Cluster(stack.kubeconfig, stack.stats_port, stack.web_port + 5)
            bench = Bench(args, workdir, stack, api, cluster)
            rows, notes = bench.rows, bench.notes
            setup(bench)
            bench.note_exits("setup")
            bench.say(f"stack and apps up after {time.monotonic() - started:.0f}s; at rest")
            bench.measure("at rest", None)
            for name in args.scenarios:
                bench.say(f"scenario {name}")
                RUNNERS[name](bench)
        except (StepFailed, LoadFailed) as exc:
            print(f"\nSTEP FAILED: {exc}", file=sys.stderr, flush=True)
            code = 1
        except KeyboardInterrupt:
            print("\ninterrupted; stopping the stack", file=sys.stderr, flush=True)
            code = 130
        except Exception:
            print("\nSTEP FAILED with an unexpected error:", file=sys.stderr, flush=True)
            traceback.print_exc()
            code = 1
        finally:
            # A second Ctrl-C must not leave half the stack running.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            stack.stop()
    if rows:
        print_table(rows, notes)
    print(f"full run: {time.monotonic() - started:.0f}s", flush=True)
    if code == 0 and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"stack log and load logs kept in {workdir}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
