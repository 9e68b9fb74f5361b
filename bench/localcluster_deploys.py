"""Benchmark localcluster under many deploys at once, as Greenlight's deployer makes them.

    .venv/bin/python bench/localcluster_deploys.py [--apps 50] [--replicas 2] [--nodes 4]
                                                   [--rounds 1] [--timeout 300]

Starts a private ``python -m localcluster`` on a free loopback port and, for each round,
deploys one app alone, then ``--apps`` apps at once. Each app is what the deployer creates
for a version (a PodDisruptionBudget, a Deployment of demo/hello with an HTTP readiness probe
every second, a Service), created from its own thread through the official client, which
then follows the app's pods as the deployer does: a list, then one-second watch windows of
the pods of its selector, beside a one-second watch of the namespace's pod events.

Printed per round: the time from a Deployment's creation to all its pods Ready (p50, p95,
max), the wall time of the round (it includes the last one-second event watch), the ratios
of the wall time and of the slowest deploy to the app deployed alone, and the CPU seconds
localcluster's own process used per deploy (``/proc/<pid>/stat``, the pods' processes not
included), with the CPU the pods' processes used, per pod. Everything binds 127.0.0.1, every
wait has a deadline and the cluster is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.servers import LocalCluster, localcluster_server  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
MANAGED = "app.kubernetes.io/managed-by"


@contextlib.contextmanager
def cluster(nodes: int) -> Iterator[tuple[LocalCluster, client.Configuration]]:
    """A private localcluster and a client configuration for it; stopped afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="lc-deploys-") as tmp,
        localcluster_server(
            Path(tmp), nodes=nodes, extra_args=["--log-level", "WARNING"]
        ) as server,
    ):
        cfg = client.Configuration()
        config.load_kube_config(str(server.kubeconfig), client_configuration=cfg)
        cfg.connection_pool_maxsize = 200
        yield server, cfg


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children_cpu(pid: int) -> tuple[float, int]:
    """CPU seconds of the live child processes of ``pid`` and their number."""
    total, count = 0.0, 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and b"demo_app" in (entry / "cmdline").read_bytes():
                total += (int(fields[11]) + int(fields[12])) / TICKS
                count += 1
    return total, count


def manifests(name: str, namespace: str, replicas: int) -> tuple[dict[str, Any], ...]:
    """The budget, Deployment and Service the deployer creates for version 1 of ``name``."""
    labels = {"app": name, "version": "1", MANAGED: "greenlight"}
    selector = {"app": name, "version": "1"}
    meta = {"name": f"{name}-v1", "namespace": namespace, "labels": labels}
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }
    container = {
        "name": name,
        "image": "demo/hello:1",
        "ports": [{"containerPort": 8080, "name": "http"}],
        "env": [{"name": "APP_NAME", "value": name}, {"name": "PORT", "value": "8080"}],
        "readinessProbe": {
            "httpGet": {"path": "/health", "port": 8080},
            "periodSeconds": 1,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"terminationGracePeriodSeconds": 5, "containers": [container]},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 8080}]},
    }
    return budget, deployment, service


def ready(pod: Any) -> bool:
    """Whether the pod's Ready condition is True."""
    return (
        any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
        and not pod.metadata.deletion_timestamp
    )


def follow_events(core: client.CoreV1Api, namespace: str, stop: threading.Event) -> None:
    """The deployer's pod event feed: one-second watches of the namespace's pod events."""
    listed = core.list_namespaced_event(namespace, field_selector="involvedObject.kind=Pod")
    rv = listed.metadata.resource_version
    while not stop.is_set():
        for event in watch.Watch().stream(
            core.list_namespaced_event,
            namespace,
            field_selector="involvedObject.kind=Pod",
            resource_version=rv,
            timeout_seconds=1,
        ):
            rv = event["object"].metadata.resource_version or rv


def deploy(
    cfg: client.Configuration, name: str, namespace: str, replicas: int, timeout: float
) -> float:
    """Create one app's objects and follow its pods until all are Ready; return the seconds."""
    api = client.ApiClient(cfg)
    core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)
    budget, deployment, service = manifests(name, namespace, replicas)
    stop = threading.Event()
    feed = threading.Thread(target=follow_events, args=(core, namespace, stop), daemon=True)
    feed.start()
    try:
        policy.create_namespaced_pod_disruption_budget(namespace, budget)
        start = time.perf_counter()
        apps.create_namespaced_deployment(namespace, deployment)
        core.create_namespaced_service(namespace, service)
        selector = f"app={name},version=1"
        listed = core.list_namespaced_pod(namespace, label_selector=selector)
        pods = {p.metadata.name: p for p in listed.items}
        rv = listed.metadata.resource_version
        deadline = time.monotonic() + timeout
        while sum(ready(p) for p in pods.values()) < replicas:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name}: pods not Ready after {timeout:.0f} s")
            for event in watch.Watch().stream(
                core.list_namespaced_pod,
                namespace,
                label_selector=selector,
                resource_version=rv,
                timeout_seconds=1,
            ):
                pod = event["object"]
                rv = pod.metadata.resource_version or rv
                if event["type"] == "DELETED":
                    pods.pop(pod.metadata.name, None)
                else:
                    pods[pod.metadata.name] = pod
                if sum(ready(p) for p in pods.values()) >= replicas:
                    break
        return time.perf_counter() - start
    finally:
        stop.set()
        feed.join(5)
        api.close()


def run_round(
    server: LocalCluster,
    cfg: client.Configuration,
    label: str,
    count: int,
    replicas: int,
    timeout: float,
) -> tuple[float, float]:
    """Deploy ``count`` apps at once in a fresh namespace, print the figures.

    Returns the wall time and the slowest deploy's time from creation to pods Ready.
    """
    assert server.process is not None
    pid = server.process.pid
    api = client.ApiClient(cfg)
    core = client.CoreV1Api(api)
    namespace = f"bench-{label}"
    core.create_namespace({"metadata": {"name": namespace}})
    cpu_before = cpu_seconds(pid)
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [
            pool.submit(deploy, cfg, f"app{i}", namespace, replicas, timeout) for i in range(count)
        ]
        times = sorted(f.result() for f in futures)
    wall = time.perf_counter() - start
    cpu = cpu_seconds(pid) - cpu_before
    pods_cpu, pods = children_cpu(pid)
    p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
    print(f"{label}: {count} deploy(s) of {replicas} replicas at once")
    print(
        f"  created -> pods Ready  p50 {statistics.median(times):.2f} s, p95 {p95:.2f} s, "
        f"max {times[-1]:.2f} s"
    )
    print(f"  wall time            {wall:.2f} s")
    print(f"  localcluster CPU     {cpu:.2f} s, {cpu / count:.3f} s per deploy")
    if pods:
        print(f"  pods' own CPU        {pods_cpu / pods:.3f} s per pod ({pods} pods)")
    core.delete_namespace(namespace)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                break
            raise
        time.sleep(0.5)  # namespace deletion has no watch here worth the code
    api.close()
    return wall, times[-1]


def main() -> int:
    """Run the rounds and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0, help="deadline of each deploy")
    args = parser.parse_args()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"localcluster deploys on {os.cpu_count()} CPUs (load average {load})")
    with cluster(args.nodes) as (server, cfg):
        run_round(server, cfg, "warmup", 1, args.replicas, args.timeout)
        for n in range(1, args.rounds + 1):
            alone, alone_ready = run_round(server, cfg, f"alone{n}", 1, args.replicas, args.timeout)
            many, many_ready = run_round(
                server, cfg, f"many{n}", args.apps, args.replicas, args.timeout
            )
            print(
                f"  against one alone    {many / alone:.2f}x wall time, "
                f"{many_ready / alone_ready:.2f}x slowest to Ready (target: within 3x)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
