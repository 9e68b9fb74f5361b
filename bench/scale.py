"""Greenlight at scale: the dashboard at 500 apps, proxysync at 500 backends.

    .venv/bin/python bench/scale.py [--sections dashboard,render]

runs every section with the defaults; all options, with their defaults:

    .venv/bin/python bench/scale.py [--sections dashboard,render]
                                    [--apps 500] [--deployments-per-app 20] [--runs 30]
                                    [--backends 50,200,500] [--pods 20] [--keep]

Sections, each printing its figures with their target and PASS or FAIL:

    dashboard  A throwaway SQLite database (the embedded default) with ``--apps`` apps and
               ``--deployments-per-app`` deployments each. Full requests through Django's
               test client (middleware, view, queries, template) of the app list ``/``
               and the deployment list ``/deployments/`` (its first and 100th page):
               p50, p95 and max of ``--runs`` requests and the number of SQL queries. The
               app list's live state comes from a localcluster (``--no-runtime``: API
               only) holding ``2 x --apps`` Greenlight-managed pods, so the page pays the
               pod list it pays in production. The queries of the app list are also
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

Missed targets never change the exit code; it is 1 only when a step of the bench itself
could not be carried out (the step is named and everything started is stopped), 130 on
Ctrl-C. Everything binds 127.0.0.1, every wait has a deadline, and every process the
bench starts is stopped at the end; with ``--keep`` the work dir (logs, var dirs, request
records) is kept and its path printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loadgen import percentile, tied_child  # noqa: E402
from bench.stackrun import StepFailed  # noqa: E402

SECTIONS = ("dashboard", "render")
APP_LIST_P95_MS = 200.0
LINEAR_SLACK = 1.5
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


def seed_apps(admin: Any, first: int, count: int, per_app: int) -> list[Any]:
    """Apps ``first``..``first+count-1`` (live at version ``per_app``) with their history."""
    from django.utils import timezone

    from deployer.models import App, Deployment

    apps = App.objects.bulk_create(
        App(
            name=f"app{i}",
            image="demo/hello:1",
            frontend=f"app{i}.localhost",
            replicas=2,
            live_version=per_app,
        )
        for i in range(first, first + count)
    )
    now = timezone.now()
    Deployment.objects.bulk_create(
        (
            Deployment(
                app=app,
                version=version,
                image=f"demo/hello:{version}",
                status="failed" if version % 7 == 0 else "succeeded",
                triggered_by=admin,
                created_at=now - timedelta(minutes=per_app - version),
                started_at=now - timedelta(minutes=per_app - version),
                finished_at=now - timedelta(minutes=per_app - version, seconds=-8),
                steps={"create": {"state": "done", "seconds": 1.0}},
            )
            for app in apps
            for version in range(1, per_app + 1)
        ),
        batch_size=2000,
    )
    return apps


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

        admin = get_user_model().objects.create_superuser("bench", password="bench")
        client = Client()
        client.force_login(admin)
        queries_at: dict[int, int] = {}
        seeded: list[Any] = []
        for size in sorted({min(5, args.apps), min(50, args.apps), args.apps}):
            apps = seed_apps(admin, len(seeded), size - len(seeded), args.deployments_per_app)
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
    runners = {"dashboard": run_dashboard, "render": run_render}
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


if __name__ == "__main__":
    sys.exit(main())
