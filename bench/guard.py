"""The guard after the switch under load: how fast a bad release is swapped back, what it costs.

    .venv/bin/python bench/guard.py [--rounds 3] [--bake 10] [--clients 8] [--pause 0.01]

Starts redis, etcd, HAProxy, proxysync and a 3-node localcluster on free loopback ports
and a throwaway SQLite database, deploys a 3-replica demo/hello app (v1), then, for each
round, runs a load process (``--clients`` threads, half on kept-alive connections, half
on a new connection per request, GET / with ``Host: bench.localhost``, each pausing
``--pause`` s between requests) while the deployer runs a deploy of demo/bad-release
(whose ``/health`` passes and every other path answers 500), which the guard must swap
back, then a deploy of demo/hello, which must pass a bake of ``--bake`` s. The deployer
runs in this process through deployer.runner (the worker's code path, without the
Celery queue).

Printed per round: each deploy's outcome and reason; for the bad release, the seconds
from the switch to the guard's breach and to the swap back applied, the 500s its users
got, and the requests the guard counted; for both, every failed request that the old
version would have answered (connection errors, 502/503s, any other answer): the target
is 0.

Everything binds 127.0.0.1 and every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOST = "bench.localhost"


def load_main(argv: list[str]) -> None:
    """``--load PORT BAD CLIENTS PAUSE OUT``: run until SIGTERM, then write the figures as JSON."""
    from tests.deployer.guardkit import VersionedLoad

    port, bad, clients, pause, out = argv
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    with VersionedLoad(
        int(port), HOST, bad=bad, clients=int(clients), pause=float(pause), limit=600
    ) as load:
        while not stop:
            time.sleep(0.05)
    Path(out).write_text(
        json.dumps(
            {
                "answers": {f"{s} v{v}": n for (s, v), n in sorted(load.answers.items())},
                "failures": load.failures[:20],
                "failed": len(load.failures),
            }
        )
    )


def run_deploy(app: Any, image: str) -> Any:
    """Request a deploy and run it in this process with the worker's collaborators."""
    from deployer import runner, services
    from deployer.models import Deployment

    deployment = services.request_deploy(app, image=image, trigger=Deployment.Trigger.API)
    claimed = runner.claim(deployment.pk, "bench")
    assert claimed is not None
    with runner.workflow_for(claimed) as workflow:
        workflow.execute()
    claimed.refresh_from_db()
    return claimed


def under_load(
    workdir: Path, port: int, bad: str, args: argparse.Namespace, deploy: Any
) -> tuple[Any, dict[str, Any], float]:
    """Run ``deploy()`` while a load process runs; its result, the load's figures, seconds."""
    out = workdir / f"load-{time.monotonic_ns()}.json"
    load = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--load",
            str(port),
            bad,
            str(args.clients),
            str(args.pause),
            str(out),
        ],
        cwd=REPO,
    )
    try:
        time.sleep(1.0)  # the load runs before the deploy starts
        started = time.monotonic()
        result = deploy()
        seconds = time.monotonic() - started
        time.sleep(1.0)  # and goes on after it ended
    finally:
        load.send_signal(signal.SIGTERM)
        load.wait(30)
    return result, json.loads(out.read_text()), seconds


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one ISO time to another (None when either is missing)."""
    from django.utils.dateparse import parse_datetime

    first, last = parse_datetime(start or ""), parse_datetime(end or "")
    return (last - first).total_seconds() if first and last else None


def main() -> None:
    """Start the stack, run the rounds, print the figures, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bake", type=int, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--pause", type=float, default=0.01)
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

    workdir = Path(tempfile.mkdtemp(prefix="guard-bench-"))
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
                health_deadline=10,
                guard_bake_seconds=args.bake,
                guard_min_requests=20,
                guard_max_error_percent=5.0,
            )
            first = run_deploy(app, "demo/hello:1")
            assert first.status == "succeeded", first.failure_reason
            print(
                f"stack up in {workdir}; v1 live; {args.rounds} rounds, bake {args.bake}s, "
                f"{args.clients} clients (half keep-alive), pause {args.pause}s",
                flush=True,
            )
            failed_total = 0
            for round_number in range(1, args.rounds + 1):
                live = app.__class__.objects.get(pk=app.pk).live_version
                bad_version = str(live + 1)

                bad, bad_load, bad_seconds = under_load(
                    workdir,
                    haproxy.port,
                    bad_version,
                    args,
                    lambda image=f"demo/bad-release:{bad_version}": run_deploy(app, image),
                )
                guard = bad.guard or {}
                switched = bad.switched_at.isoformat() if bad.switched_at else None
                guard_started = (bad.steps.get("guard") or {}).get("started")
                print(
                    f"round {round_number}: bad release v{bad.version}: {bad.status} in "
                    f"{bad_seconds:.1f}s; reason: {bad.failure_reason}\n"
                    f"  switch -> guard start {seconds_between(switched, guard_started) or 0:.2f}s, "
                    f"breach after {guard.get('elapsed')}s of the bake, switch -> swap back "
                    f"applied {seconds_between(switched, bad.finished_at.isoformat()):.2f}s; "
                    f"guard counted {guard.get('new', {}).get('errors')} 5xx of "
                    f"{guard.get('new', {}).get('requests')} requests\n"
                    f"  clients: {bad_load['answers']}; failed that v{live} would have "
                    f"answered: {bad_load['failed']} {bad_load['failures'][:3]}",
                    flush=True,
                )
                good_version = str(live + 2)

                good, good_load, good_seconds = under_load(
                    workdir,
                    haproxy.port,
                    "none",
                    args,
                    lambda image=f"demo/hello:{good_version}": run_deploy(app, image),
                )
                guard = good.guard or {}
                print(
                    f"  good release v{good.version}: {good.status} in {good_seconds:.1f}s "
                    f"(bake {args.bake}s); guard {guard.get('state')}, counted "
                    f"{guard.get('new', {}).get('errors')} 5xx of "
                    f"{guard.get('new', {}).get('requests')} requests, average response "
                    f"{guard.get('new', {}).get('rtime_ms')} ms\n"
                    f"  clients: {good_load['answers']}; failed: {good_load['failed']} "
                    f"{good_load['failures'][:3]}",
                    flush=True,
                )
                failed_total += bad_load["failed"] + good_load["failed"]
                assert bad.status == "failed" and bad.failure_reason.startswith("guard:")
                assert good.status == "succeeded", good.failure_reason
            print(f"\nrequests failed that the old version would have answered: {failed_total}")
        finally:
            stop_process(proxysync)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--load":
        load_main(sys.argv[2:])
    else:
        main()
