"""Zero-downtime figures of the blue-green deployer, through a real HAProxy under load.

    .venv/bin/python bench/zero_downtime.py [--healthy 20] [--failing 5] [--concurrency 50]
                                            [--rate 400] [--modes keepalive,close]
                                            [--traffic haproxy|service]

Starts redis, etcd, HAProxy, proxysync and a 3-node localcluster on free loopback ports
and a throwaway SQLite database, then, for each connection mode, runs a load process
(asyncio + aiohttp, ``--concurrency`` connections, at most ``--rate`` requests/s,
GET /health with ``Host: bench.localhost``) while the deployer runs ``--healthy``
consecutive deploys of a 3-replica demo/hello app and ``--failing`` failing ones
(demo/broken, demo/crash, an image that cannot be pulled). The deployer runs in this
process through deployer.runner (the worker's code path, without the Celery queue).

Printed: failed and non-2xx requests; per deploy, responses from an old version after
the deploy finished; switch latency (all pods healthy -> first response of the new
version through the load balancer; target p95 < 250 ms); the deployer's own overhead
(deploy wall time minus the slowest pod's time to healthy; target < 1.5 s).
With ``--traffic service`` the app switches through its stable Service (deployer.traffic)
and the load goes to that Service's ClusterIP on localcluster's kube-proxy (no Host header,
no HAProxy on the way); the switch latency is then healthy -> first answer of the new
version through the ClusterIP.

Everything binds 127.0.0.1 (or 127.x for the ClusterIP) and every process is stopped at
the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOST = "bench.localhost"
STEP_SECONDS: dict[str, list[float]] = {}


# The load process ------------------------------------------------------------------


async def _load(
    address: str, port: int, concurrency: int, rate: float, keepalive: bool, out: Path
) -> None:
    import aiohttp

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    records: list[tuple[float, float, int, str]] = []
    interval = concurrency / rate  # each connection's pause keeps the total under ``rate``
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=not keepalive)
    timeout = aiohttp.ClientTimeout(total=5)
    url = f"http://{address}:{port}/health"

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with session.get(url, headers={"Host": HOST}) as response:
                    body = await response.read()
                    try:
                        version = str(json.loads(body).get("version", "?"))
                    except ValueError:
                        version = "?"
                    records.append((started, time.monotonic(), response.status, version))
            except (TimeoutError, aiohttp.ClientError) as exc:
                records.append((started, time.monotonic(), 0, type(exc).__name__))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), max(0.0, interval - (time.monotonic() - started))
                )

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    out.write_text("\n".join(f"{a:.6f} {b:.6f} {s} {v}" for a, b, s, v in records))


def load_main(argv: list[str]) -> None:
    """``--load ADDRESS PORT CONCURRENCY RATE keepalive|close OUT``: run until SIGTERM, then write records."""
    address, port, concurrency, rate, mode, out = argv
    asyncio.run(
        _load(address, int(port), int(concurrency), float(rate), mode == "keepalive", Path(out))
    )


# The bench -------------------------------------------------------------------------


@dataclass
class DeployFigure:
    """One deploy's outcome and timings (time.monotonic, shared by both processes on Linux)."""

    image: str
    status: str
    version: int | None
    requested: float
    healthy_at: float | None
    finished: float
    slowest_pod: float | None
    reason: str = ""
    retired_at: float | None = None
    routed_at: float | None = None


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_deploy(app: Any, image: str) -> DeployFigure:
    """Request a deploy and run it in this process with the worker's collaborators."""
    from deployer import runner, services
    from deployer.models import Deployment

    requested = time.monotonic()
    deployment = services.request_deploy(app, image=image, trigger=Deployment.Trigger.API)
    claimed = runner.claim(deployment.pk, "bench")
    assert claimed is not None
    create_started: list[float] = []
    routed: list[float] = []
    with runner.workflow_for(claimed) as workflow:
        original_create = workflow.create

        def timed_create() -> None:
            create_started.append(time.monotonic())
            original_create()

        workflow.create = timed_create  # type: ignore[method-assign]
        original_retire = workflow.retire

        def timed_retire() -> None:
            create_started.append(time.monotonic())  # [1]: old pods start to go
            original_retire()

        workflow.retire = timed_retire  # type: ignore[method-assign]
        # The switch is the frontend's etcd write (the backend record was written earlier).
        original_point_frontend = workflow.lb.point_frontend

        def timed_point_frontend(*args: Any, **kwargs: Any) -> int:
            revision = original_point_frontend(*args, **kwargs)
            routed.append(time.monotonic())
            return revision

        workflow.lb.point_frontend = timed_point_frontend  # type: ignore[method-assign]
        workflow.execute()
        healthy_at = workflow.healthy_at
    finished = time.monotonic()
    claimed.refresh_from_db()
    slowest = healthy_at - create_started[0] if healthy_at and create_started else None
    retired_at = create_started[1] if len(create_started) > 1 else None
    for name, step in claimed.steps.items():
        if "seconds" in step and claimed.status == "succeeded":
            STEP_SECONDS.setdefault(name, []).append(float(step["seconds"]))
    return DeployFigure(
        image,
        claimed.status,
        claimed.version,
        requested,
        healthy_at,
        finished,
        slowest,
        claimed.failure_reason,
        retired_at,
        routed[0] if routed else None,
    )


def analyse(
    mode: str, records: list[tuple[float, float, int, str]], deploys: list[DeployFigure]
) -> dict[str, Any]:
    """The figures of one run."""
    failed = [r for r in records if not 200 <= r[2] < 300]
    latencies, overheads, stale = [], [], 0
    to_etcd: list[float] = []
    to_lb: list[float] = []
    live: str | None = None
    for index, deploy in enumerate(deploys):
        if deploy.status == "succeeded":
            live = str(deploy.version)
            new = [r for r in records if r[3] == live and r[0] >= (deploy.healthy_at or 0)]
            if new and deploy.healthy_at:
                latencies.append(min(r[1] for r in new) - deploy.healthy_at)
                if deploy.routed_at:
                    to_etcd.append(deploy.routed_at - deploy.healthy_at)
                    to_lb.append(min(r[1] for r in new) - deploy.routed_at)
            if deploy.slowest_pod is not None:
                overheads.append((deploy.finished - deploy.requested) - deploy.slowest_pod)
        until = deploys[index + 1].requested if index + 1 < len(deploys) else float("inf")
        if live is not None:
            after = [r for r in records if deploy.finished <= r[0] < until and r[2] == 200]
            stale += sum(1 for r in after if r[3] != live)
    for record in failed[:20]:
        nearest = min(deploys, key=lambda d: abs(record[0] - d.requested))
        marks = {
            "requested": nearest.requested,
            "healthy": nearest.healthy_at,
            "retire": nearest.retired_at,
            "finished": nearest.finished,
        }
        offsets = ", ".join(f"{k} {record[0] - v:+.3f}s" for k, v in marks.items() if v)
        print(f"  failed request ({record[2]} {record[3]}) vs v{nearest.version}: {offsets}")
    return {
        "mode": mode,
        "requests": len(records),
        "failed": len(failed),
        "failures": sorted({f"{r[2]} {r[3]}" for r in failed})[:5],
        "stale_after_switch": stale,
        "latencies": latencies,
        "to_etcd": to_etcd,
        "to_lb": to_lb,
        "overheads": overheads,
        "deploys": deploys,
    }


def run_mode(
    mode: str, args: argparse.Namespace, target: tuple[str, int], workdir: Path, app: Any
) -> dict[str, Any]:
    """One load run with its deploys."""
    out = workdir / f"load-{mode}.txt"
    load = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--load",
            target[0],
            str(target[1]),
            str(args.concurrency),
            str(args.rate),
            mode,
            str(out),
        ],
        start_new_session=True,
    )
    deploys: list[DeployFigure] = []
    try:
        time.sleep(1.0)  # let the load reach its rate before the first switch
        plan = [f"demo/hello:{i}" for i in range(2, args.healthy + 2)]
        failing = ["demo/broken", "demo/crash", "nope/missing:1", "demo/broken", "demo/crash"]
        step = max(1, args.healthy // max(1, args.failing))
        for i in range(args.failing):
            plan.insert(min(len(plan), (i + 1) * step + i), failing[i % len(failing)])
        for image in plan:
            figure = run_deploy(app, image)
            deploys.append(figure)
            print(
                f"  [{mode}] {image:18} {figure.status:9} v{figure.version} "
                f"{figure.finished - figure.requested:5.2f}s {figure.reason[:60]}",
                flush=True,
            )
        time.sleep(1.0)
    finally:
        load.send_signal(signal.SIGTERM)
        load.wait(30)
    records = []
    for line in out.read_text().splitlines():
        a, b, s, v = line.split(" ", 3)
        records.append((float(a), float(b), int(s), v))
    result = analyse(mode, records, deploys)
    result["target"] = f"{target[0]}:{target[1]}"
    result["traffic"] = args.traffic
    return result


def report(result: dict[str, Any]) -> None:
    """Print one run's figures."""
    deploys = result["deploys"]
    ok = sum(1 for d in deploys if d.status == "succeeded")
    print(f"\n== {result['mode']} ({result['target']}) ==")
    print(
        f"deploys: {ok} succeeded, {len(deploys) - ok} failed (expected failures: failing images)"
    )
    print(
        f"requests: {result['requests']}, failed or non-2xx: {result['failed']} {result['failures']}"
    )
    print(f"responses from an old version after a deploy finished: {result['stale_after_switch']}")
    if result["latencies"]:
        ms = [x * 1000 for x in result["latencies"]]
        print(
            f"switch latency (healthy -> first new response at {result['target']}): "
            f"p50 {pct(ms, 0.5):.0f} ms, "
            f"p95 {pct(ms, 0.95):.0f} ms, max {max(ms):.0f} ms"
        )
    # In service mode the selector moves first; the frontend's etcd write comes after it.
    if result["latencies"] and result["traffic"] != "service":
        etcd_ms = [x * 1000 for x in result["to_etcd"]]
        lb_ms = [x * 1000 for x in result["to_lb"]]
        print(
            f"  of which healthy -> etcd written: p50 {pct(etcd_ms, 0.5):.0f} ms; "
            f"etcd written -> new version answers (proxysync, runtime map update): "
            f"p50 {pct(lb_ms, 0.5):.0f} ms, p95 {pct(lb_ms, 0.95):.0f} ms"
        )
    if result["overheads"]:
        s = result["overheads"]
        print(
            f"deployer overhead (wall - slowest pod to healthy): p50 {pct(s, 0.5):.2f} s, "
            f"p95 {pct(s, 0.95):.2f} s, max {max(s):.2f} s"
        )


def main() -> None:
    """Start the stack, run each mode, print the figures, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--healthy", type=int, default=20)
    parser.add_argument("--failing", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument("--modes", default="keepalive,close")
    parser.add_argument(
        "--traffic",
        choices=["haproxy", "service"],
        default="haproxy",
        help="the app's traffic mode; service: the load goes through the stable Service's "
        "ClusterIP",
    )
    parser.add_argument(
        "--sqlite-wal",
        action="store_true",
        help="run this process's SQLite in WAL mode with synchronous=NORMAL",
    )
    args = parser.parse_args()

    from tests.servers import (
        etcd_server,
        haproxy_server,
        localcluster_server,
        python_command,
        redis_server,
        stack_env,
        start_process,
        stop_process,
    )

    workdir = Path(tempfile.mkdtemp(prefix="zero-downtime-"))
    with (
        redis_server(workdir / "redis") as redis,
        etcd_server(workdir / "etcd") as etcd,
        haproxy_server(workdir / "haproxy") as haproxy,
        localcluster_server(workdir / "localcluster", nodes=3) as cluster,
    ):
        env = stack_env(
            db_path=workdir / "bench.sqlite3",
            redis_url=str(redis.extra["url"]),
            etcd_endpoint=str(etcd.extra["endpoint"]),
            etcd_prefix="/greenlight",
            kubeconfig=cluster.kubeconfig,
            haproxy=haproxy,
            extra={
                "DJANGO_SETTINGS_MODULE": "dashboard.settings",
                "SECRET_KEY": "bench-only",
                "GREENLIGHT_VAR_DIR": str(workdir),
                "GREENLIGHT_LOG_LEVEL": "WARNING",
            },
        )
        os.environ.update(env)  # this process runs the deployer with the same settings
        import django

        django.setup()
        if args.sqlite_wal:
            from django.db.backends.signals import connection_created

            def wal(sender: Any, connection: Any, **kwargs: Any) -> None:
                with connection.cursor() as cursor:
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")

            connection_created.connect(wal)
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        proxysync = start_process(
            "proxysync",
            python_command("manage.py", "proxysync"),
            workdir,
            {**env, "GREENLIGHT_LOG_LEVEL": "INFO"},
        )
        try:
            from deployer import services
            from deployer.models import App

            services.enqueue = lambda deployment_id: None  # this process runs it directly
            app = App.objects.create(
                name="bench",
                image="demo/hello:1",
                replicas=3,
                frontend=HOST,
                health_deadline=5,
                traffic=args.traffic,
                guard_bake_seconds=0,
            )
            print(f"stack up in {workdir}; first deploy (v1) before the load starts", flush=True)
            first = run_deploy(app, "demo/hello:1")
            assert first.status == "succeeded", first.reason
            target = ("127.0.0.1", haproxy.port)
            if args.traffic == "service":
                from deployer import k8s

                stable = k8s.core_v1().read_namespaced_service("bench", "default")
                target = (str(stable.spec.cluster_ip), int(stable.spec.ports[0].port))
            print(f"traffic mode {args.traffic}: load goes to {target[0]}:{target[1]}", flush=True)
            results = []
            for mode in args.modes.split(","):
                results.append(run_mode(mode, args, target, workdir, app))
            for result in results:
                report(result)
            print(
                "\nmedian step durations of successful deploys (s): "
                + ", ".join(
                    f"{name} {statistics.median(values):.3f}"
                    for name, values in STEP_SECONDS.items()
                )
            )
        finally:
            stop_process(proxysync)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load_main(sys.argv[2:])
    else:
        main()
