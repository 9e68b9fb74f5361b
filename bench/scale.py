"""Greenlight at scale: the dashboard at 500 apps, proxysync at 500 backends, 50 deploys at once.

    .venv/bin/python bench/scale.py [--sections dashboard,render,deploys]

runs every section with the defaults; all options, with their defaults:

    .venv/bin/python bench/scale.py [--sections dashboard,render,deploys]
                                    [--apps 500] [--deployments-per-app 20] [--runs 30]
                                    [--backends 50,200,500] [--pods 20]
                                    [--deploy-apps 50] [--replicas 2] [--lbs 2]
                                    [--concurrency 100] [--rate 200] [--step-timeout 600]
                                    [--database sqlite] [--keep]

Sections, each printing its figures with their target and PASS or FAIL:

    dashboard  A throwaway SQLite database (the embedded default) with ``--apps`` apps and
               ``--deployments-per-app`` deployments each. Full requests through Django's
               test client (middleware, view, queries, template) of the app list ``/``
               and the deployment list ``/deployments/`` (its first and 100th page):
               p50, p95 and max of ``--runs`` requests and the number of SQL queries. The
               app list's live state comes from a localcluster (``--no-runtime``: API
               only) holding ``2 x --apps`` Greenlight-managed pods, so the page pays the
               pod list it pays in production; the process imports its views and
               freezes its heap first, as the web process does (dashboard.startup). The
               queries of the app list are also
               counted at 5 and 50 apps. Targets: the app list's p95 under 200 ms at
               ``--apps`` apps, with the same number of queries at every size.
    render     A real etcd and a real master-worker HAProxy on free loopback ports, and
               proxysync's own code (``ProxySync.render``, ``validate`` = ``haproxy -c``,
               ``write`` + ``reload`` = the master's reload until the new worker serves
               the revision) at each of ``--backends`` backend records (2 servers each,
               pointing at a shared set of ``--pods`` listeners), each routed by its own
               frontend. Printed per size: the median of 5 runs of each phase and their
               sum, and the time per backend against the smallest size's. Target: each
               phase grows no faster than linearly (from the smallest to the largest
               size, at most 1.5x the growth of the number of backends). The phases
               that run in this process (snapshot, render) are judged by its CPU time,
               printed beside their wall time, which on a busy machine mostly measures
               the wait for a core; ``haproxy -c``, the reload and the total by wall time.
    deploys    The whole stack as ``make run`` starts it (bench/stackrun.py) on free
               loopback ports with ``--lbs`` load balancers, and ``--deploy-apps`` apps
               of demo/hello with ``--replicas`` replicas created through the REST API,
               on ``--database``: ``sqlite`` (the embedded default of ``make run``) or
               ``postgres`` (production's: a throwaway PostgreSQL 15 started as the
               tests start it, tests.servers.postgres_server),
               plus ``solo`` (deployed alone) and ``warmup`` (deployed once before
               anything is measured: a worker's first deploy also imports and connects
               its clients). Four rounds, each under its own load process that sends
               ``--concurrency`` connections (half keep-alive, half a new connection
               per request), at most ``--rate`` requests/s in all, spread over every
               app's hostname and every load balancer: ``solo`` deployed alone, every
               app deployed at once, ``solo`` redeployed alone, every app redeployed at
               once. Figures per round, from the API's deployment rows (queued, started,
               finished, and each step's recorded start and seconds), their logs, and
               the load's records:
                 deploys succeeded   (target: all)
                 failed requests     requests without a 2xx answer among those sent to
                                     an app once it was live (after the verify step of
                                     its first deploy; before, it has no route by
                                     design) (target: 0)
                 wall time           first deploy queued -> last one finished, and the
                                     ratio to the same kind of deploy alone (target:
                                     within 3x)
                 HAProxy reloads     the masters' reload counters, summed
                 switch p95          every pod healthy -> the new version answered
                                     through every load balancer: the verify step's log
                                     line "... ms after the last pod became healthy",
                                     the last load balancer's (target: < 50 ms alone,
                                     < 150 ms at once)
                 overhead p95        the run's start -> the verify step's end, less the
                                     pods and health steps (the wait for the pods to run
                                     and answer) (target: < 0.2 s)
               and, for reading them, the queue wait (queued -> a worker started it) and
               the pods + health steps' p95.

Missed targets never change the exit code; it is 1 only when a step of the bench itself
could not be carried out (the step is named and everything started is stopped), 130 on
Ctrl-C. Everything binds 127.0.0.1, every wait has a deadline, and every process the
bench starts is stopped at the end; with ``--keep`` the work dir (logs, var dirs, request
records) is kept and its path printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loadgen import percentile, tied_child  # noqa: E402
from bench.stackrun import Api, Cluster, Stack, StepFailed  # noqa: E402
from deployer.haproxycli import master_command  # noqa: E402
from tests.servers import create_database, postgres_server  # noqa: E402

SECTIONS = ("dashboard", "render", "deploys")
APP_LIST_P95_MS = 200.0
LINEAR_SLACK = 1.5
NODES = 4  # bench/stackrun.py's cluster
RENDER_RUNS = 5


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


def machine() -> str:
    """The machine's load, printed with each section: figures taken on a busy one are slower."""
    one, five, fifteen = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {one:.1f} {five:.1f} {fifteen:.1f}"


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, value) of one call."""
    started = time.perf_counter()
    value = function()
    return time.perf_counter() - started, value


# Django, in this process, for the sections that call the product's code directly ----------


def setup_django(var_dir: Path, kubeconfig: Path) -> None:
    """Django with the embedded defaults (SQLite) under ``var_dir``, migrated."""
    (var_dir / "staticfiles").mkdir(parents=True, exist_ok=True)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="dashboard.settings",
        GREENLIGHT_VAR_DIR=str(var_dir),
        GREENLIGHT_KUBECONFIG=str(kubeconfig),
        SECRET_KEY="bench-scale",
        GREENLIGHT_LOG_LEVEL="ERROR",
    )
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.ALLOWED_HOSTS = ["*"]
    call_command("migrate", verbosity=0)


# dashboard ---------------------------------------------------------------------------------


@dataclass
class PageFigures:
    """One page's request times and query count."""

    label: str
    times_ms: list[float]
    queries: int

    @property
    def p95(self) -> float:
        """95th percentile of the request times."""
        return percentile(self.times_ms, 0.95)


def measure_page(client: Any, label: str, url: str, runs: int) -> PageFigures:
    """``runs`` full requests of ``url`` after one warm-up, and the queries of one more."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)
    times = []
    for _ in range(runs):
        seconds, response = timed(lambda: client.get(url))
        if response.status_code != 200:
            raise StepFailed(f"GET {url} answered {response.status_code}")
        times.append(seconds * 1000)
    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    return PageFigures(label, times, len(captured.captured_queries))


def seed_pods(kubeconfig: Path, apps: list[Any], replicas: int) -> None:
    """``replicas`` Greenlight-managed pods of each app's live version in the cluster's API."""
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    for app in apps:
        for index in range(replicas):
            labels = {
                "app": app.name,
                "version": str(app.live_version),
                "app.kubernetes.io/managed-by": "greenlight",
            }
            body = {
                "metadata": {"name": f"{app.name}-v{app.live_version}-{index}", "labels": labels},
                "spec": {"containers": [{"name": "app", "image": app.image}]},
            }
            core.create_namespaced_pod(app.namespace, body, _request_timeout=10)


def run_dashboard(args: argparse.Namespace, workdir: Path) -> None:
    """The app list and the deployment list at ``--apps`` apps."""
    from tests.servers import localcluster_server

    print(
        f"\n== dashboard: {args.apps} apps, {args.deployments_per_app} deployments each ({machine()})"
    )
    with localcluster_server(workdir / "localcluster", nodes=1, runtime=False) as cluster:
        setup_django(workdir / "var", cluster.kubeconfig)
        from django.contrib.auth import get_user_model
        from django.test import Client

        from dashboard.startup import freeze_startup_heap
        from tests.history import add_apps, numbered

        freeze_startup_heap()  # as the web process does before it serves (dashboard.asgi)

        admin = get_user_model().objects.create_superuser("bench", password="bench")
        client = Client()
        client.force_login(admin)
        queries_at: dict[int, int] = {}
        seeded: list[Any] = []
        for size in sorted({min(5, args.apps), min(50, args.apps), args.apps}):
            apps = add_apps(
                admin, numbered(len(seeded), size - len(seeded)), args.deployments_per_app
            )
            seed_pods(cluster.kubeconfig, apps, 2)
            seeded += apps
            queries_at[size] = measure_page(client, "/", "/", 1).queries
        pages = [
            measure_page(client, f"app list / ({args.apps} apps)", "/", args.runs),
            measure_page(client, "deployment list /deployments/", "/deployments/", args.runs),
            measure_page(client, "  its page 100", "/deployments/?page=100", args.runs),
        ]
    total = args.apps * args.deployments_per_app
    print(f"{total} deployments, {2 * args.apps} pods in the cluster's API, SQLite")
    print(f"{'page':38} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'queries':>8}")
    for page in pages:
        print(
            f"{page.label:38} {statistics.median(page.times_ms):8.1f} {page.p95:8.1f} "
            f"{max(page.times_ms):8.1f} {page.queries:8d}"
        )
    app_list = pages[0]
    print(
        f"app list p95 at {args.apps} apps: {app_list.p95:.1f} ms "
        f"(target < {APP_LIST_P95_MS:.0f} ms) {verdict(app_list.p95 < APP_LIST_P95_MS)}"
    )
    counts = ", ".join(f"{size} apps: {count}" for size, count in queries_at.items())
    constant = len(set(queries_at.values())) == 1
    print(f"app list queries ({counts}) (target: constant) {verdict(constant)}")


# render ------------------------------------------------------------------------------------


@dataclass
class RenderFigures:
    """Median seconds of each proxysync phase at one number of backends."""

    backends: int
    snapshot: float
    snapshot_cpu: float  # this process's CPU time of the phase, without waiting for a core
    render: float
    render_cpu: float
    check: float
    reload: float
    config_bytes: int

    @property
    def total(self) -> float:
        """Snapshot + render + haproxy -c + write and reload."""
        return self.snapshot + self.render + self.check + self.reload


# Pod stand-ins: ``count`` listeners answering 200, in a process of their own so that
# HAProxy's health checks of every server never compete with the phases measured here.
POD_LISTENERS = """
import asyncio, sys

async def answer(reader, writer):
    try:
        while await reader.readuntil(b"\\r\\n\\r\\n"):
            writer.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()

async def main(count):
    servers = [await asyncio.start_server(answer, "127.0.0.1", 0) for _ in range(count)]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.Event().wait()

asyncio.run(main(int(sys.argv[1])))
"""


@contextlib.contextmanager
def pod_listeners(count: int) -> Iterator[list[int]]:
    """``count`` HTTP listeners on loopback that answer 200, standing in for shared pods."""
    process = subprocess.Popen(
        [sys.executable, "-c", POD_LISTENERS, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=tied_child,  # noqa: PLW1509 - setsid + prctl must run in the child
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise StepFailed(f"the pod listeners exited with {process.wait(5)}")
        yield [int(port) for port in line.split()]
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def measure_render(store: Any, sync: Any, count: int, ports: list[int]) -> RenderFigures:
    """Write backend records up to ``count``, then time each phase ``RENDER_RUNS`` times."""
    have = len(store.snapshot().backends)
    for index in range(have, count):
        servers = [
            {"name": f"pod-{k}", "address": "127.0.0.1", "port": ports[(index + k) % len(ports)]}
            for k in range(2)
        ]
        store.put_route(f"app{index}.localhost", f"default.app{index}-v1", servers)
    runs: list[tuple[float, ...]] = []
    for _ in range(RENDER_RUNS):
        store.put_route(
            "app0.localhost",
            "default.app0-v1",
            [{"name": "pod-0", "address": "127.0.0.1", "port": ports[len(runs) % len(ports)]}],
        )  # a new revision (and a changed server) for every run
        cpu_started = time.process_time()
        snapshot_s, snapshot = timed(store.snapshot)
        snapshot_cpu = time.process_time() - cpu_started
        cpu_started = time.process_time()
        render_s, rendered = timed(lambda snapshot=snapshot: sync.render(snapshot))
        render_cpu = time.process_time() - cpu_started
        sync.write(rendered.map_text, sync.target.map_file)
        check_s, _ = timed(lambda rendered=rendered: sync.validate(rendered.config))

        def write_and_reload(rendered: Any = rendered, revision: int = snapshot.revision) -> None:
            sync.write(rendered.config)
            sync.reload(revision)

        reload_s, _ = timed(write_and_reload)
        runs.append((snapshot_s, snapshot_cpu, render_s, render_cpu, check_s, reload_s))
    medians = [statistics.median(run[phase] for run in runs) for phase in range(6)]
    return RenderFigures(count, *medians, config_bytes=len(rendered.config))


def run_render(args: argparse.Namespace, workdir: Path) -> None:
    """proxysync's render, haproxy -c and reload at each of ``--backends`` backends."""
    sizes = sorted(int(size) for size in args.backends.split(","))
    print(f"\n== render: proxysync at {', '.join(map(str, sizes))} backends ({machine()})")
    from deployer.etcdstore import EtcdStore
    from deployer.haproxycli import HAProxyTarget
    from deployer.proxysync import ProxySync
    from tests.servers import etcd_server, haproxy_server

    with (
        etcd_server(workdir / "etcd") as etcd,
        haproxy_server(workdir / "haproxy") as haproxy,
        pod_listeners(args.pods) as ports,
        EtcdStore(str(etcd.extra["endpoint"]), f"/bench-{uuid.uuid4().hex[:8]}") as store,
    ):
        target = HAProxyTarget(
            config=haproxy.extra["config"],  # type: ignore[arg-type]
            master_socket=haproxy.extra["master_socket"],  # type: ignore[arg-type]
            lb_port=haproxy.port,
            stats_port=int(haproxy.extra["stats_port"]),  # type: ignore[arg-type]
            reload_timeout=60.0,
        )
        sync = ProxySync(store, target)
        figures = [measure_render(store, sync, size, ports) for size in sizes]
    print(
        f"{'backends':>8} {'config KiB':>10} {'snapshot':>9} {'(cpu)':>7} {'render':>9} {'(cpu)':>7} "
        f"{'haproxy -c':>10} "
        f"{'reload':>9} {'total ms':>9} {'ms/backend':>10} {'vs first':>8}"
    )
    base = figures[0].total / figures[0].backends
    for row in figures:
        per = row.total / row.backends
        print(
            f"{row.backends:8d} {row.config_bytes / 1024:10.1f} {row.snapshot * 1000:9.1f} "
            f"{row.snapshot_cpu * 1000:7.1f} "
            f"{row.render * 1000:9.1f} {row.render_cpu * 1000:7.1f} {row.check * 1000:10.1f} "
            f"{row.reload * 1000:9.1f} "
            f"{row.total * 1000:9.1f} {per * 1000:10.2f} {per / base:7.2f}x"
        )
    first, last = figures[0], figures[-1]
    size_ratio = last.backends / first.backends
    limit = size_ratio * LINEAR_SLACK
    # The phases in this process are judged by their CPU time: on a shared machine their
    # wall time mostly measures how long the process waited for a core (both are printed).
    for phase in ("snapshot_cpu", "render_cpu", "check", "reload", "total"):
        ratio = getattr(last, phase) / getattr(first, phase)
        print(
            f"{phase:12} {first.backends} -> {last.backends} backends ({size_ratio:.0f}x): "
            f"{ratio:5.2f}x the time (target: at most {limit:.0f}x, no faster than linear) "
            f"{verdict(ratio <= limit)}"
        )


# main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    """The command line (see the module's docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--apps", type=int, default=500, help="apps of the dashboard section")
    parser.add_argument("--deployments-per-app", type=int, default=20)
    parser.add_argument("--runs", type=int, default=30, help="requests per page")
    parser.add_argument("--backends", default="50,200,500", help="sizes of the render section")
    parser.add_argument("--pods", type=int, default=20, help="shared listeners of the records")
    parser.add_argument("--deploy-apps", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--lbs", type=int, default=2, help="load balancers of the stack")
    parser.add_argument("--concurrency", type=int, default=100, help="load connections")
    parser.add_argument("--rate", type=float, default=200.0, help="load requests/s in all")
    parser.add_argument("--step-timeout", type=float, default=600.0, help="deadline of each wait")
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the deploys section's database",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    args = parser.parse_args()
    unknown = set(args.sections.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main() -> int:
    """Run the chosen sections in order; 1 when a step of the bench failed."""
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="greenlight-scale-"))
    runners = {"dashboard": run_dashboard, "render": run_render, "deploys": run_deploys}
    try:
        for section in SECTIONS:
            if section in args.sections.split(","):
                runners[section](args, workdir / section)
    except StepFailed as exc:
        print(f"\nSTEP FAILED: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception:
        print("\nSTEP FAILED with an unexpected error:", file=sys.stderr, flush=True)
        traceback.print_exc()
        return 1
    finally:
        if args.keep:
            print(f"\nwork dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


# deploys ----------------------------------------------------------------------------------

SOLO = "solo"
WARMUP = "warmup"
SWITCH_LINE = re.compile(
    r"answers through (?:the )?load balancer.*; (\d+) ms after the last pod became healthy"
)

# The load process: ``python bench/scale.py load SPEC OUT READY`` (SPEC is JSON).
LOAD_TIMEOUT = 5.0


async def _load(spec: dict[str, Any], out: Path, ready: Path) -> None:
    """Connections spread over every hostname and load balancer until SIGTERM or the end."""
    import aiohttp

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.call_later(float(spec["max_seconds"]), stop.set)
    hosts, ports = spec["hosts"], spec["ports"]
    interval = spec["concurrency"] / spec["rate"]
    records: list[str] = []

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        host = hosts[index % len(hosts)]
        port = ports[(index // len(hosts)) % len(ports)]
        url = f"http://127.0.0.1:{port}/health"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), random.uniform(0, interval))
        while not stop.is_set():
            started, status, error = time.time(), 0, "-"
            try:
                async with session.get(url, headers={"Host": host}) as response:
                    await response.read()
                    status = response.status
            except TimeoutError:
                error = "Timeout"
            except aiohttp.ClientError as exc:
                error = type(exc).__name__
            records.append(f"{started:.6f} {time.time():.6f} {status} {error} {host} {port}\n")
            pause = max(0.0, interval - (time.time() - started))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)

    timeout = aiohttp.ClientTimeout(total=LOAD_TIMEOUT)
    half = spec["concurrency"] // 2
    async with (
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(1, half)), timeout=timeout
        ) as reuse,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True), timeout=timeout
        ) as fresh,
    ):
        ready.write_text("ready")
        await asyncio.gather(
            *(client(i, reuse if i % 2 else fresh) for i in range(spec["concurrency"]))
        )
    out.write_text("".join(records))


@dataclass(frozen=True)
class Request:
    """One request of the load: wall-clock start and end, answer, hostname, LB port."""

    start: float
    end: float
    status: int
    error: str
    host: str
    port: int

    @property
    def ok(self) -> bool:
        """Answered 2xx."""
        return 200 <= self.status < 300


class SpreadLoad:
    """The load process, from its start to its records."""

    def __init__(self, spec: dict[str, Any], workdir: Path, name: str) -> None:
        self.out = workdir / f"load-{name}.txt"
        self.ready = workdir / f"load-{name}.ready"
        log = (workdir / f"load-{name}.log").open("ab")
        command = [
            sys.executable,
            __file__,
            "load",
            json.dumps(spec),
            str(self.out),
            str(self.ready),
        ]
        self.process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=tied_child,  # noqa: PLW1509 - setsid + prctl must run in the child
        )
        log.close()
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise StepFailed(f"the load process did not start; see {workdir}/load-{name}.log")
            time.sleep(0.05)  # a child starting up; nothing to watch

    def stop(self) -> list[Request]:
        """SIGTERM, let requests in flight finish, read the records."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(LOAD_TIMEOUT + 20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise StepFailed("the load process did not stop within 25 s of SIGTERM") from None
        if not self.out.exists():
            raise StepFailed(f"the load process wrote no records (exit {self.process.returncode})")
        records = []
        for line in self.out.read_text().splitlines():
            start, end, status, error, host, port = line.split(" ")
            records.append(
                Request(
                    float(start),
                    float(end),
                    int(status),
                    "" if error == "-" else error,
                    host,
                    int(port),
                )
            )
        return records


@dataclass
class Outcome:
    """One finished deployment as the API and its log tell it."""

    app: str
    status: str
    reason: str
    created: float  # wall-clock seconds
    started: float
    finished: float
    steps: dict[str, dict[str, Any]]
    switch_ms: float | None  # the log's "ms after the last pod became healthy", last LB

    def step_end(self, name: str) -> float | None:
        """Wall-clock end of step ``name`` (its recorded start plus its seconds)."""
        step = self.steps.get(name) or {}
        if "started" not in step or "seconds" not in step:
            return None
        return parse_time(step["started"]) + float(step["seconds"])

    @property
    def live_at(self) -> float | None:
        """When the new version answered through every load balancer (the verify step's end)."""
        return self.step_end("verify")

    @property
    def overhead(self) -> float | None:
        """Seconds to serving beyond the wait for the pods: start -> verify end - pods - health."""
        live = self.live_at
        if live is None:
            return None
        waiting = sum(
            float((self.steps.get(n) or {}).get("seconds", 0)) for n in ("pods", "health")
        )
        return live - self.started - waiting


def parse_time(text: str) -> float:
    """Wall-clock seconds of an ISO 8601 time (the API's and the step records')."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Fleet:
    """The stack for the deploys section: its API, apps and load balancers."""

    def __init__(
        self, args: argparse.Namespace, workdir: Path, database: str | None = None
    ) -> None:
        self.args = args
        self.workdir = workdir
        self.stack = Stack(workdir, lb_count=args.lbs, database=database)
        self.api: Api | None = None
        self.apps: dict[str, int] = {}

    def say(self, text: str) -> None:
        """A progress line."""
        print(f"  {time.strftime('%H:%M:%S')} {text}", flush=True)

    def start(self) -> None:
        """Start the stack, take a token, wait for the nodes, create the apps."""
        self.say(f"starting the stack ({self.args.lbs} load balancers)")
        self.stack.start(timeout=180)
        self.api = Api(self.stack.web_port, self.stack.token())
        cluster = Cluster(self.stack.kubeconfig, self.stack.stats_port, self.stack.web_port + 5)
        deadline = time.monotonic() + self.args.step_timeout
        while len([node for node in cluster.nodes() if node[1]]) < NODES:
            if time.monotonic() > deadline:
                raise StepFailed(f"{NODES} nodes not registered in time: {cluster.nodes()}")
            time.sleep(0.25)  # localcluster registers its nodes on its own
        names = [WARMUP, SOLO] + [f"scale{i}" for i in range(self.args.deploy_apps)]
        for name in names:
            body = {
                "name": name,
                "image": "demo/hello:1",
                "replicas": self.args.replicas,
                "frontend": f"{name}.localhost",
                "health_deadline": int(self.args.step_timeout),
                "guard_bake_seconds": 0,
            }
            self.apps[name] = int(self.call("POST", "/api/apps/", body)["id"])
        self.say(f"created {len(names)} apps of {self.args.replicas} replicas")

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call."""
        assert self.api is not None
        return self.api.call(method, path, body)

    def reloads(self) -> int:
        """HAProxy reloads so far, summed over the load balancers (each master's counter)."""
        total = 0
        for index in range(self.args.lbs):
            socket_path = self.stack.haproxy_dir(index) / "master.sock"
            answer = master_command(socket_path, "show proc", timeout=5.0)
            for line in answer.splitlines():
                fields = line.split()
                if len(fields) > 2 and fields[1] == "master":
                    total += int(fields[2])
        return total

    def deploy(self, names: list[str]) -> list[Outcome]:
        """Queue a deploy of each app at once, wait for all of them, read their records."""
        queued = {}
        for name in names:
            queued[name] = int(
                self.call("POST", f"/api/apps/{self.apps[name]}/deploy/", {"image": ""})["id"]
            )
        deadline = time.monotonic() + self.args.step_timeout
        pending = dict(queued)
        rows: dict[str, dict[str, Any]] = {}
        while pending:
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"{len(pending)} deploys not finished in {self.args.step_timeout:.0f}s"
                )
            for name, pk in list(pending.items()):
                row = self.call("GET", f"/api/deployments/{pk}/")
                if row["status"] in ("succeeded", "failed", "aborted"):
                    rows[name] = row
                    del pending[name]
            if pending:
                time.sleep(0.5)  # the API has no watch for a row's status
        return [self.outcome(name, rows[name]) for name in names]

    def outcome(self, name: str, row: dict[str, Any]) -> Outcome:
        """The deployment's times, steps and switch latency (from its log)."""
        latencies = []
        after = 0
        while True:
            page = self.call("GET", f"/api/deployments/{row['id']}/logs/?after={after}&limit=500")
            for line in page["results"]:
                match = SWITCH_LINE.search(line.get("message", ""))
                if match:
                    latencies.append(float(match.group(1)))
            after = page["last_seq"]
            if not page["has_more"]:
                break
        return Outcome(
            app=name,
            status=row["status"],
            reason=row.get("failure_reason") or "",
            created=parse_time(row["created_at"]),
            started=parse_time(row["started_at"]) if row["started_at"] else float("nan"),
            finished=parse_time(row["finished_at"]) if row["finished_at"] else float("nan"),
            steps=row.get("steps") or {},
            switch_ms=max(latencies) if latencies else None,
        )

    def load(self, name: str, hosts: list[str]) -> SpreadLoad:
        """A load process over ``hosts`` and every load balancer."""
        spec = {
            "hosts": hosts,
            "ports": self.stack.lb_ports,
            "concurrency": max(self.args.concurrency, len(hosts)),
            "rate": self.args.rate,
            "max_seconds": self.args.step_timeout + 60,
        }
        return SpreadLoad(spec, self.workdir, name)


@dataclass
class Round:
    """One measured round: deploys at once under load."""

    label: str
    outcomes: list[Outcome]
    requests: list[Request]
    reloads: int
    live_before: dict[str, float]  # hostname -> since when it was live (wall clock)

    @property
    def wall(self) -> float:
        """First deploy queued -> last deploy finished."""
        return max(o.finished for o in self.outcomes) - min(o.created for o in self.outcomes)

    def counted(self) -> list[Request]:
        """Requests to an app that was live when they started (the others had no route yet)."""
        live = dict(self.live_before)
        for outcome in self.outcomes:
            host = f"{outcome.app}.localhost"
            if host not in live and outcome.live_at is not None:
                live[host] = outcome.live_at
        return [r for r in self.requests if r.host in live and r.start >= live[r.host]]


def p95(values: list[float]) -> float:
    """95th percentile by nearest rank; NaN for none."""
    return percentile(values, 0.95)


def report_round(fleet: Fleet, current: Round, alone: Round | None) -> None:
    """Print one round's figures with their targets."""
    outcomes = current.outcomes
    ok = [o for o in outcomes if o.status == "succeeded"]
    counted = current.counted()
    failed = [r for r in counted if not r.ok]
    switch = [o.switch_ms for o in ok if o.switch_ms is not None]
    overhead = [o.overhead for o in ok if o.overhead is not None]
    queue = [o.started - o.created for o in outcomes]
    pods = [
        float(o.steps.get("pods", {}).get("seconds", 0))
        + float(o.steps.get("health", {}).get("seconds", 0))
        for o in ok
    ]
    many = len(outcomes) > 1
    print(f"\n{current.label}: {len(outcomes)} deploy{'s' if many else ''} at once")
    print(
        f"  deploys succeeded      {len(ok)}/{len(outcomes)} (target: all) {verdict(len(ok) == len(outcomes))}"
    )
    for outcome in outcomes:
        if outcome.status != "succeeded":
            print(f"    {outcome.app}: {outcome.status}: {outcome.reason[:300]}")
    kinds = Counter(f"{r.status or r.error}@{r.port}" for r in failed)
    print(
        f"  failed requests        {len(failed)} of {len(counted)} to live apps "
        f"(target: 0) {verdict(not failed)}"
        + (f"  [{' '.join(f'{k}x{v}' for k, v in kinds.most_common())}]" if failed else "")
    )
    print(f"  wall time              {current.wall:.2f} s (first queued -> last finished)")
    if alone is not None:
        ratio = current.wall / alone.wall
        print(
            f"  against one alone      {ratio:.2f}x ({alone.wall:.2f} s) (target: within 3x) "
            f"{verdict(ratio <= 3)}"
        )
    print(f"  HAProxy reloads        {current.reloads} (all load balancers)")
    target = 150 if many else 50
    print(
        f"  switch p95             {p95(switch):.0f} ms, max {max(switch, default=float('nan')):.0f} ms "
        f"(all pods healthy -> answers through every LB; target < {target} ms) "
        f"{verdict(bool(switch) and p95(switch) < target and len(switch) == len(ok))}"
    )
    print(
        f"  overhead p95           {p95(overhead):.3f} s, max {max(overhead, default=float('nan')):.3f} s "
        f"(run start -> serving, less pods + health; target < 0.2 s) "
        f"{verdict(bool(overhead) and p95(overhead) < 0.2)}"
    )
    print(f"  queue wait p95         {p95(queue):.2f} s (queued -> a worker started it)")
    print(f"  pods + health p95      {p95(pods):.2f} s (pods started and healthy)")


def run_deploys(args: argparse.Namespace, workdir: Path) -> None:
    """The deploys section on ``--database``: see :func:`deploy_rounds`."""
    print(
        f"\n== deploys: {args.deploy_apps} apps of {args.replicas} replicas, "
        f"{args.lbs} load balancers, a load of {args.concurrency} connections at most "
        f"{args.rate:.0f} requests/s over every app, on {args.database} ({machine()})"
    )
    workdir.mkdir(parents=True, exist_ok=True)
    if args.database == "sqlite":
        deploy_rounds(args, workdir, None)
        return
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(postgres_server())
        except RuntimeError as exc:
            raise StepFailed(f"starting PostgreSQL: {exc}") from exc
        url = create_database(str(server.extra["url"]), "greenlight_scale")
        deploy_rounds(args, workdir, url)


def deploy_rounds(args: argparse.Namespace, workdir: Path, database: str | None) -> None:
    """One deploy alone, then every app deployed at once, alone and at once again, under load."""
    fleet = Fleet(args, workdir, database)
    try:
        fleet.start()
        scale = [name for name in fleet.apps if name not in (SOLO, WARMUP)]
        # The worker's first deploy also imports and connects its clients: a deploy before
        # the measured ones keeps that out of the figures of one deploy alone.
        fleet.say("warm-up deploy (not measured)")
        warmup = fleet.deploy([WARMUP])[0]
        if warmup.status != "succeeded":
            # It warmed the worker all the same; the rounds say whether deploys succeed.
            fleet.say(f"the warm-up deploy {warmup.status}: {warmup.reason[:300]}")
        live: dict[str, float] = {}
        rounds: list[tuple[Round, Round | None]] = []
        alone: Round | None = None
        for label, names in [
            ("first deploy alone", [SOLO]),
            ("first deploys", scale),
            ("redeploy alone", [SOLO]),
            ("redeploys", scale),
        ]:
            fleet.say(f"{label}: {len(names)} app(s)")
            hosts = [f"{name}.localhost" for name in fleet.apps if name != WARMUP]
            load = fleet.load(label.replace(" ", "-"), hosts)
            before = fleet.reloads()
            outcomes = fleet.deploy(names)
            time.sleep(1.0)  # requests in flight at the end still count
            requests = load.stop()
            current = Round(label, outcomes, requests, fleet.reloads() - before, dict(live))
            for outcome in outcomes:
                if outcome.live_at is not None:
                    live.setdefault(f"{outcome.app}.localhost", outcome.live_at)
            rounds.append((current, None if len(names) == 1 else alone))
            if len(names) == 1:
                alone = current
        for current, baseline in rounds:
            report_round(fleet, current, baseline)
        exits = fleet.stack.exits()
        if exits:
            print("\nprocesses that exited (restarted by the supervisor):")
            for line in exits:
                print(f"  {line}")
    finally:
        fleet.stack.stop()


def load_main(argv: list[str]) -> None:
    """``load SPEC OUT READY``: the load process."""
    spec, out, ready = argv
    asyncio.run(_load(json.loads(spec), Path(out), Path(ready)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["load"]:
        load_main(sys.argv[2:])
    else:
        sys.exit(main())
