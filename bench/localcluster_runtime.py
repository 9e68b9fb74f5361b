"""Benchmark the localcluster runtime and print the figures issue 4 asks for.

    .venv/bin/python bench/localcluster_runtime.py [--runs 5] [--pods 100] [--nodes 5]

Starts a private ``python -m localcluster`` on a free loopback port and measures, through the
official client and watches:

* create -> Available for a 3-replica demo/hello Deployment (target < 2 s), with no probe and
  with an HTTP readiness probe (periodSeconds 1);
* a rolling update of that Deployment to demo/hello:2;
* 100 pods over 5 nodes from create to all Running (target < 15 s) and to all Ready;
* resident memory of an idle demo pod (target < 30 MB);
* deleting the busiest node: time until its pods run again elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kubernetes import client, config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.localcluster.runtime_support import deployment, watch_until  # noqa: E402
from tests.servers import localcluster_server  # noqa: E402

# How long a benchmark step may take before it counts as stuck.
STEP_TIMEOUT = 120.0


@contextlib.contextmanager
def localcluster(nodes: int) -> Iterator[client.ApiClient]:
    """Run a private localcluster for the benchmark; stop it afterwards."""
    with (
        tempfile.TemporaryDirectory(prefix="lc-bench-") as tmp,
        localcluster_server(
            Path(tmp), nodes=nodes, extra_args=["--log-level", "WARNING"]
        ) as cluster,
    ):
        cfg = client.Configuration()
        config.load_kube_config(str(cluster.kubeconfig), client_configuration=cfg)
        api = client.ApiClient(cfg)
        try:
            yield api
        finally:
            api.close()


def hello(
    name: str, replicas: int, image: str = "demo/hello:1", probe: bool = False, marker: str = ""
) -> dict[str, Any]:
    """A demo Deployment manifest; its ``MESSAGE`` (``marker``, else the name) finds its processes."""
    manifest = deployment(name, image, replicas, readiness=probe)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [{"name": "MESSAGE", "value": marker or name}]
    return manifest


def available(name: str, replicas: int, generation: int = 1) -> Callable[[dict[str, Any]], bool]:
    """Deployment ``name`` is Available with all replicas updated and available."""

    def check(objects: dict[str, Any]) -> bool:
        status = (objects.get(name) or {}).get("status") or {}
        if status.get("observedGeneration", 0) < generation:
            return False
        conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
        return conditions.get("Available") == "True" and all(
            status.get(field) == replicas
            for field in ("availableReplicas", "updatedReplicas", "replicas")
        )

    return check


def rss_of(marker: str) -> list[int]:
    """VmRSS in kB of every process carrying ``marker`` in its environment."""
    sizes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() not in (entry / "environ").read_bytes():
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(int(line.split()[1]))
    return sizes


def main() -> int:
    """Run the measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=5)
    args = parser.parse_args()
    print(f"localcluster runtime benchmark on {os.cpu_count()} CPUs, {args.nodes} nodes")
    with localcluster(args.nodes) as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)

        def deployments(namespace: str) -> Callable[..., Any]:
            return lambda **kw: apps.list_namespaced_deployment(namespace, **kw)

        for probe in (False, True):
            times = []
            for run in range(args.runs):
                ns = f"b{uuid.uuid4().hex[:6]}"
                core.create_namespace({"metadata": {"name": ns}})
                start = time.perf_counter()
                apps.create_namespaced_deployment(ns, hello("hello", 3, probe=probe))
                watch_until(deployments(ns), available("hello", 3), STEP_TIMEOUT)
                times.append(time.perf_counter() - start)
                if probe and run == 0:
                    start = time.perf_counter()
                    patch = {
                        "spec": {
                            "template": {
                                "spec": {"containers": [{"name": "app", "image": "demo/hello:2"}]}
                            }
                        }
                    }
                    apps.patch_namespaced_deployment("hello", ns, patch)
                    watch_until(deployments(ns), available("hello", 3, generation=2), STEP_TIMEOUT)
                    print(
                        f"rolling update 3 replicas demo/hello:1 -> :2 (readiness probe): {time.perf_counter() - start:.2f} s"
                    )
                core.delete_namespace(ns)
            label = "with readiness probe" if probe else "no probe"
            print(
                f"create -> Available, 3 replicas, {label}: median {statistics.median(times):.2f} s, "
                f"max {max(times):.2f} s over {len(times)} runs (target < 2 s)"
            )

        ns = "bulk"
        marker = f"bench-{uuid.uuid4().hex[:8]}"
        core.create_namespace({"metadata": {"name": ns}})

        def pods(**kw: Any) -> Any:
            return core.list_namespaced_pod(ns, **kw)

        start = time.perf_counter()
        apps.create_namespaced_deployment(ns, hello("bulk", args.pods, marker=marker))
        watch_until(
            pods,
            lambda ps: (
                sum(1 for p in ps.values() if (p.get("status") or {}).get("phase") == "Running")
                >= args.pods
            ),
            STEP_TIMEOUT,
        )
        running = time.perf_counter() - start
        watch_until(deployments(ns), available("bulk", args.pods), STEP_TIMEOUT)
        ready = time.perf_counter() - start
        placed: dict[str, int] = {}
        for p in core.list_namespaced_pod(ns).items:
            placed[p.spec.node_name] = placed.get(p.spec.node_name, 0) + 1
        print(
            f"{args.pods} pods over {len(placed)} nodes: all Running after {running:.2f} s (target < 15 s), Available after {ready:.2f} s"
        )
        print(f"  placement: {dict(sorted(placed.items()))}")
        time.sleep(2)  # let the pods go idle before measuring memory
        sizes = rss_of(marker)
        print(
            f"idle demo pod RSS over {len(sizes)} pods: mean {statistics.mean(sizes) / 1024:.1f} MB, "
            f"max {max(sizes) / 1024:.1f} MB (target < 30 MB)"
        )

        lost = max(placed, key=lambda n: placed[n])
        start = time.perf_counter()
        core.delete_node(lost)
        watch_until(
            pods,
            lambda ps: (
                sum(
                    1
                    for p in ps.values()
                    if (p.get("status") or {}).get("phase") == "Running"
                    and p["spec"].get("nodeName") != lost
                )
                >= args.pods
            ),
            STEP_TIMEOUT,
        )
        print(
            f"node {lost} deleted with {placed[lost]} pods: all {args.pods} Running elsewhere "
            f"after {time.perf_counter() - start:.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
