"""Failed requests through HAProxy while a running app changes, one kind of change at a time.

    .venv/bin/python bench/disruption.py

runs every scenario with the defaults (about 3 minutes); all options, with their defaults:

    .venv/bin/python bench/disruption.py [--scenarios scale,drain,nodegroup,deploy,swapback,
                                          undeploy-other,delete-pod,kill-pod,kill-node]
                                         [--concurrency 40] [--rate 400] [--slow-share 0.25]
                                         [--rest 5] [--settle 2] [--step-timeout 240] [--keep]

Starts the whole stack as ``make run`` does (``launcher.stack prepare``, migrate,
``manage.py bootstrap``, ``python -m launcher.supervisor Procfile``; see
``bench/stackrun.py``) on free loopback ports, with a 4-node localcluster and a throwaway
var dir; takes an API token with ``manage.py drf_create_token admin``; creates and deploys
through the REST API the app ``bench`` (demo/hello:1, 6 replicas, frontend bench.localhost,
old version kept warm) and a small second app ``other``.

Each scenario then runs with its own load process (``bench/loadgen.py``: asyncio + aiohttp,
``--concurrency`` connections through HAProxy with ``Host: bench.localhost``, half
keep-alive and half a new connection per request, at most ``--rate`` requests/s in all).
A ``--slow-share`` of the connections sends ``GET /sleep?seconds=0.2`` (the demo app's
slow answer), so that a pod killed mid-change has requests in flight, which HAProxy must
retry on another server (``retry-on empty-response``); the others send ``GET /health``
(a few ms). The load runs ``--rest`` seconds at rest, then through the change, then
``--settle`` seconds after the change has finished. A change has finished when its run or
deployment has and the app's live version has its replicas running and ready in the
cluster, each of them UP in HAProxy. Scenarios:

    scale           scale the app 6 -> 10, then 10 -> 3 (scaling API runs); back to 6 after
    drain           drain the node running most of the app's pods; uncordon it after
    nodegroup       node group ``default`` 4 -> 1 -> 3 nodes (capacity runs)
    deploy          deploy demo/hello:2
    swapback        swap back to the warm previous version (the app page's form)
    undeploy-other  undeploy the second app
    delete-pod      delete one pod of the app through the Kubernetes API
    kill-pod        SIGKILL the processes of one pod of the app
    kill-node       SIGKILL every pod process on the node running most of the app's pods

The target: no failed request in any scenario, and a p99 during the change no worse than
3 times the p99 of the same load at rest. Printed, one row per scenario after an ``at
rest`` row (2 x ``--rest`` seconds of load with no change), with these columns:

    requests   requests in flight at some moment of the change and the settle time (those
               started just before the change and still running count), fast and slow
    slow       of them, the slow ones (/sleep)
    failed     of them, those without a 2xx answer (an error status or no response)
    retries    retries and redispatches HAProxy counted on the app's backends in that
               window (wretr + wredis: a request sent again to another server may count
               in both); - when a reload replaced the worker that counted them
    p50 ms     median latency of the successful fast requests (/health) in that window
    p99 ms     99th percentile of the same
    rest p99   99th percentile of the successful fast requests that started and ended in
               the rest period just before the change, from the same load process
    ratio      p99 ms / rest p99
    0 failed   PASS when failed is 0, else FAIL
    p99 <=3x   PASS when ratio is at most 3, else FAIL (- for the at rest row)
    change s   seconds from the start of the change to its end (before the settle time)
    failures   failed requests by status (or the client's error when there was no
               response), path kind (fast, slow) and connection mode (keepalive, close),
               e.g. ``502/slow/closex1``

Slow requests count in requests and failed, never in the latency columns: they take 0.2 s
by design, and the fast ones alone keep the p99 of every row comparable. A total line
follows with the number of failed requests and of scenarios that meet both targets; then
notes: each failed request (the first 20 of a scenario: wall-clock start, time into the
change, duration, kind), a kill-node whose node ran every pod of the app, and each stack
process that exited. With ``--keep`` the work dir is kept: ``stack.log`` (every process's
output, HAProxy's and proxysync's included, with wall-clock times), ``var/`` and each
scenario's request records (``load-<scenario>.txt``: monotonic start and end, status,
error, connection mode, path kind).

Failed requests and missed targets never change the exit code; it is 1 only when a step
of the bench itself could not be carried out (the step is named and the stack stopped),
130 on Ctrl-C. Everything binds 127.0.0.1, every wait has a deadline, and every process
started is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.disruption_table import Row, failure_notes, print_table  # noqa: E402
from bench.loadgen import Load, LoadFailed, LoadSpec, Window  # noqa: E402
from bench.stackrun import NAMESPACE, POLL, Api, Cluster, Pod, Stack, StepFailed  # noqa: E402

HOST = "bench.localhost"
APP = "bench"
OTHER = "other"
REPLICAS = 6
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
            self.stack.lb_port,
            HOST,
            self.args.concurrency,
            self.args.rate,
            max_seconds,
            self.args.slow_share,
        )
        load = Load(spec, self.workdir, name)
        try:
            load.wait_ready()
            time.sleep(0.5)  # connections opened; the rest period starts warm
            rest_start = time.monotonic()
            before = self.stack.haproxy_retries(APP)
            time.sleep(self.args.rest * (2 if change is None else 1))
            change_start = time.monotonic()
            if change is not None:
                before = self.stack.haproxy_retries(APP)
                change()
            change_end = time.monotonic()
            time.sleep(self.args.settle if change is not None else 0)
            window_end = time.monotonic()
            after = self.stack.haproxy_retries(APP)
        finally:
            records = load.stop()
        retries = None
        if before is not None and after is not None and before[0] == after[0]:
            retries = after[1] - before[1]
        rest = Window.completed(records, rest_start, change_start)
        if change is None:
            row = Row(name, rest, rest, None, retries)
        else:
            window = Window.exposed(records, change_start, window_end)
            row = Row(name, window, rest, change_end - change_start, retries)
        self.rows.append(row)
        print("  " + "  ".join(row.cells()), flush=True)
        measured = Window.exposed(records, rest_start, window_end).records
        for note in failure_notes(name, measured, change_start):
            self.notes.append(note)
            print(f"  note: {note}", flush=True)
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
    ours = [p for p in pods if p.labels.get("app") == APP]
    if len(ours) >= bench.replicas:
        # Where earlier scenarios left the pods decides this: with none left elsewhere,
        # HAProxy has no server to retry on and answers 503 until the kubelet restarts them.
        bench.notes.append(f"kill-node: {node} runs every pod of {APP}; none is left to serve")

    def kill() -> None:
        bench.say(f"node {node}: {len(pods)} pods, {len(ours)} of {APP}'s {bench.replicas}")
        _kill(bench, pods)
        _wait_replaced(bench, ours)

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
    common = {"image": "demo/hello:1", "health_deadline": 60, "guard_bake_seconds": 0}
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
    parser.add_argument(
        "--slow-share",
        type=float,
        default=0.25,
        help="share of the connections that request /sleep?seconds=0.2 instead of /health",
    )
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
    if not 0 <= args.slow_share < 1:
        parser.error("--slow-share must be at least 0 and below 1 (fast requests are measured)")
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
