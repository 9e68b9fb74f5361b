"""Drain a node with 30 pods: it must take no longer than the longest grace period plus 3 s.

Usage: .venv/bin/python bench/drain.py [--pods 30] [--max-grace 5] [--rounds 3]

Starts a throwaway localcluster (3 nodes) on a free loopback port with an image that
ignores SIGTERM, so each pod lives for exactly its grace period after eviction. Puts
``--pods`` pods with grace periods spread over 1..``--max-grace`` seconds on one node
(the others cordoned meanwhile), drains that node with scaling.drain and prints the
wall time next to the longest grace period and the sum of all grace periods (what a
sequential drain would take). Repeats ``--rounds`` times.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STUBBORN = {"bench/stubborn:*": {"command": ["/bin/sh", "-c", 'trap "" TERM; sleep 3600']}}


def main() -> None:
    """Start the cluster, drain, print figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--max-grace", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings

    from deployer import k8s
    from scaling.drain import DrainOptions, drain_node
    from scaling.kube import KubeNodes
    from tests.scaling.kubehelp import Cluster, running
    from tests.servers import start_localcluster

    workdir = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    catalog = workdir / "images.json"
    catalog.write_text(json.dumps(STUBBORN))
    server = start_localcluster(workdir, nodes=3, images=catalog)
    settings.KUBECONFIG = server.kubeconfig
    k8s.reset()
    results: list[tuple[float, int, int, int, int]] = []
    try:
        cluster = Cluster()
        for round_no in range(1, args.rounds + 1):
            nodes = cluster.nodes()
            target, others = nodes[0], nodes[1:]
            for node in others:
                k8s.call(cluster.core.patch_node, node, {"spec": {"unschedulable": True}})
            apps: list[tuple[str, int]] = []
            per_grace = max(1, args.pods // args.max_grace)
            remaining = args.pods
            for grace in range(1, args.max_grace + 1):
                count = remaining if grace == args.max_grace else min(per_grace, remaining)
                if count <= 0:
                    continue
                name = cluster.deployment(count, image="bench/stubborn:1", grace=grace)
                apps.append((name, count))
                remaining -= count
            for name, count in apps:
                cluster.wait_pods(name, lambda ps, c=count: len(running(ps)) == c, timeout=60)
            for node in others:
                k8s.call(cluster.core.patch_node, node, {"spec": {"unschedulable": None}})
            pods, _ = KubeNodes().pods_on_node(target)
            graces = [p.grace_seconds for p in pods if not p.daemonset]
            started = time.monotonic()
            report = drain_node(
                KubeNodes(), target, DrainOptions(deadline_seconds=60), lambda level, msg: None
            )
            seconds = time.monotonic() - started
            results.append((seconds, max(graces), sum(graces), len(report.evicted), report.retries))
            print(
                f"round {round_no}: drained {target} with {len(report.evicted)} pods in "
                f"{seconds:.2f} s; longest grace {max(graces)} s, sum of graces {sum(graces)} s, "
                f"429 retries {report.retries}",
                flush=True,
            )
            for name, count in apps:
                cluster.wait_pods(name, lambda ps, c=count: len(running(ps)) == c, timeout=60)
            cluster.cleanup()
            cluster.deployments.clear()
    finally:
        server.stop()

    walls = [r[0] for r in results]
    longest = max(r[1] for r in results)
    budget = longest + 3
    print()
    print(f"pods per drain:        {args.pods}")
    print(f"longest grace period:  {longest} s (budget: {budget} s)")
    print(f"sum of grace periods:  {results[0][2]} s (what one-by-one eviction would take)")
    print(f"drain wall time:       median {statistics.median(walls):.2f} s, max {max(walls):.2f} s")
    verdict = "PASS" if max(walls) <= budget else "FAIL"
    print(f"{verdict}: max {max(walls):.2f} s {'<=' if verdict == 'PASS' else '>'} {budget} s")


if __name__ == "__main__":
    main()
