"""Deploys through a fleet of load balancers under load, optionally with one of them killed.

    .venv/bin/python bench/fleet_deploys.py [--deploys 6] [--lbs 2] [--concurrency 16]
                                            [--rate 150] [--kill haproxy-1|proxysync-1]
                                            [--hang proxysync-1 [--hang-seconds 12]]

Starts the whole stack the way ``make run`` does with ``GREENLIGHT_LB_COUNT=--lbs``
(bench.stackrun), deploys a 3-replica demo/hello app, then runs one load process per
load balancer (bench.loadgen: half keep-alive, half new connections, a quarter of them
0.2 s requests) while ``--deploys`` deploys run one after the other. With ``--kill``,
that process is SIGKILLed a second after the second deploy is queued (the supervisor
starts it again). With ``--hang``, that process is SIGSTOPped as soon as the second
deploy is queued and SIGCONTed ``--hang-seconds`` later (longer than its lease: a hung
proxysync whose HAProxy goes on serving across the switch); the time printed for the
deploys includes the rest of the hang.

Printed, per load balancer: requests in flight during the deploys by connection mode,
failed ones by kind, latency p50/p99; then each deploy's switch line (every load
balancer and how long it took to apply) and its verify lines. The exit code is 0 when no
request failed through any load balancer. Everything binds 127.0.0.1 and is stopped at
the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loadgen import Load, LoadSpec, Window, percentile  # noqa: E402
from bench.stackrun import Api, Stack  # noqa: E402

HOST = "fleet.localhost"
FLEET_LINES = ("Load balancers applied", "answers through load balancer")
# What a deploy says about a load balancer whose proxysync is down.
DOWN_LINES = ("is not registered", "Held up by", "deferred", "drained in")


def parse_args() -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=6)
    parser.add_argument("--lbs", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--kill", choices=["haproxy-1", "proxysync-1"], default=None)
    parser.add_argument("--hang", choices=["proxysync-1"], default=None)
    parser.add_argument("--hang-seconds", type=float, default=12.0)
    return parser.parse_args()


def deploy(
    api: Api,
    app_id: int,
    image: str,
    stack: Stack,
    kill: str | None,
    hang: str | None = None,
    hang_seconds: float = 0.0,
) -> list[str]:
    """One deploy to its end (killing or hanging a process on the way); its fleet log lines."""
    queued = api.call("POST", f"/api/apps/{app_id}/deploy/", {"image": image})
    resume: threading.Timer | None = None
    if kill or hang:
        time.sleep(1.0 if kill else 0.0)
        name = kill or hang
        assert name is not None
        pid = stack.pid(name)
        if pid is not None and kill:
            os.killpg(pid, signal.SIGKILL)
            print(f"SIGKILLed {kill} (pid {pid}) during deployment #{queued['id']}", flush=True)
        elif pid is not None:
            os.killpg(pid, signal.SIGSTOP)
            print(
                f"SIGSTOPped {hang} (pid {pid}) for {hang_seconds:.0f}s during deployment "
                f"#{queued['id']}",
                flush=True,
            )
            resume = threading.Timer(hang_seconds, os.killpg, (pid, signal.SIGCONT))
            resume.start()
    try:
        api.wait_terminal(f"/api/deployments/{queued['id']}/", f"deployment #{queued['id']}", 180)
    finally:
        if resume is not None:
            resume.join()
    logs = api.call("GET", f"/api/deployments/{queued['id']}/logs/")
    entries = logs.get("results", []) if isinstance(logs, dict) else logs
    messages = [str(entry.get("message", "")) for entry in entries]
    return (
        [f"#{queued['id']}: {m}" for m in messages if m.startswith(FLEET_LINES[0])]
        + [f"#{queued['id']}: {m}" for m in messages if FLEET_LINES[1] in m]
        + [f"#{queued['id']}: {m}" for m in messages if any(d in m for d in DOWN_LINES)]
    )


def main() -> int:
    """Start the stack, deploy under load, print the figures, stop everything."""
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    stack = Stack(workdir, lb_count=args.lbs)
    print(f"stack in {workdir}: load balancers on {stack.lb_ports}", flush=True)
    try:
        stack.start(timeout=180)
        api = Api(stack.web_port, stack.token())
        app = api.call(
            "POST",
            "/api/apps/",
            {
                "name": "fleet",
                "image": "demo/hello:1",
                "replicas": 3,
                "frontend": HOST,
                "health_deadline": 60,
                "guard_bake_seconds": 0,
            },
        )
        deploy(api, app["id"], "demo/hello:1", stack, None)
        loads = [
            Load(LoadSpec(port, HOST, args.concurrency, args.rate, 900, 0.25), workdir, f"lb{i}")
            for i, port in enumerate(stack.lb_ports)
        ]
        for load in loads:
            load.wait_ready()
        time.sleep(1.0)  # connections opened
        start = time.monotonic()
        lines: list[str] = []
        for number in range(args.deploys):
            kill = args.kill if number == 1 else None
            hang = args.hang if number == 1 else None
            image = f"demo/hello:{2 + number % 2}"
            lines += deploy(api, app["id"], image, stack, kill, hang, args.hang_seconds)
        time.sleep(2.0)  # the last old workers finish
        end = time.monotonic()
        failed = 0
        for index, load in enumerate(loads):
            exposed = Window.exposed(load.stop(), start, end)
            latencies = exposed.latencies_ms()
            modes = {m: sum(r.mode == m for r in exposed.records) for m in ("keepalive", "close")}
            print(
                f"lb-{index} on {stack.lb_ports[index]}: {len(exposed.records)} requests "
                f"({modes['keepalive']} keep-alive, {modes['close']} new connections), "
                f"{len(exposed.failed)} failed [{exposed.kinds()}], "
                f"p50 {percentile(latencies, 0.5):.1f} ms, p99 {percentile(latencies, 0.99):.1f} ms",
                flush=True,
            )
            failed += len(exposed.failed)
        print("\n".join(lines))
        print(f"{args.deploys} deploys in {end - start:.1f}s; failed requests: {failed}")
        print(f"processes that exited: {stack.exits() or 'none'}")
        return 0 if failed == 0 else 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
