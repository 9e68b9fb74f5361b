"""Benchmark the localcluster API: watch delivery latency, large lists, sequential GETs.

Run: .venv/bin/python bench/localcluster_api.py [--pods 1000] [--writes 200] [--gets 2000]

Starts its own ``python -m localcluster --no-runtime`` on a free loopback port
(API only, so kubelets do not compete for the CPU) and prints the figures the
issue asks for: watch delivery p95 < 20 ms, listing 1,000 pods < 150 ms,
>= 500 sequential GETs per second.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.servers import LocalCluster, start_localcluster, tls_context  # noqa: E402

HEADERS: dict[str, str] = {}  # the kubeconfig's Authorization header, once started
TLS: list[ssl.SSLContext] = []  # trusting the kubeconfig's CA, once started


def connect(port: int, timeout: float | None = None) -> http.client.HTTPSConnection:
    """A keep-alive connection to the API, verified against its CA."""
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=TLS[0])


def start(workdir: Path) -> LocalCluster:
    """Start localcluster (API only) and take its CA and token from its kubeconfig."""
    cluster = start_localcluster(workdir, runtime=False, extra_args=["--log-level", "WARNING"])
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    TLS.append(tls_context(cluster.kubeconfig))
    HEADERS["Authorization"] = f"Bearer {config['users'][0]['user']['token']}"
    return cluster


def request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: object | None = None,
    ctype: str = "application/json",
) -> tuple[int, bytes]:
    """One request on a keep-alive connection."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {**HEADERS, "Content-Type": ctype} if data is not None else HEADERS
    conn.request(method, path, body=data, headers=headers)
    resp = conn.getresponse()
    return resp.status, resp.read()


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def bench_watch(port: int, writes: int) -> list[float]:
    """Latency from starting a write to receiving its watch event, in ms."""
    conn = connect(port)
    status, body = request(
        conn,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        {"metadata": {"name": "watched"}, "data": {"n": "0"}},
    )
    assert status == 201, body
    rv = json.loads(body)["metadata"]["resourceVersion"]
    wconn = connect(port)
    wconn.request(
        "GET",
        f"/api/v1/namespaces/default/configmaps?watch=1&fieldSelector=metadata.name%3Dwatched&resourceVersion={rv}",
        headers=HEADERS,
    )
    wresp = wconn.getresponse()
    arrived: dict[str, float] = {}
    done = threading.Event()

    def reader() -> None:
        buf = b""
        while len(arrived) < writes:
            chunk = wresp.read1(65536)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                ev = json.loads(line)
                arrived[ev["object"]["data"]["n"]] = time.perf_counter()
        done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    started: dict[str, float] = {}
    for i in range(1, writes + 1):
        n = str(i)
        started[n] = time.perf_counter()
        status, body = request(
            conn,
            "PATCH",
            "/api/v1/namespaces/default/configmaps/watched",
            {"data": {"n": n}},
            "application/merge-patch+json",
        )
        assert status == 200, body
        # Wait for delivery before the next write, so each latency is measured alone.
        while n not in arrived and t.is_alive():
            time.sleep(0.0005)
    done.wait(5)
    wconn.close()
    return [(arrived[n] - started[n]) * 1000 for n in started if n in arrived]


def bench_list(port: int, pods: int) -> list[float]:
    """Time to GET and decode a list of ``pods`` pods, in ms (several runs)."""
    conn = connect(port)
    request(conn, "POST", "/api/v1/namespaces", {"metadata": {"name": "bench"}})
    for i in range(pods):
        pod = {
            "metadata": {"name": f"pod-{i:04d}", "labels": {"app": "bench", "shard": str(i % 10)}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "demo/hello:1",
                        "env": [{"name": "APP_NAME", "value": "bench"}],
                        "ports": [{"containerPort": 8080}],
                    }
                ]
            },
        }
        status, body = request(conn, "POST", "/api/v1/namespaces/bench/pods", pod)
        assert status == 201, body
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        status, body = request(conn, "GET", "/api/v1/namespaces/bench/pods")
        items = json.loads(body)["items"]
        times.append((time.perf_counter() - t0) * 1000)
        assert status == 200 and len(items) == pods
    return times


def bench_gets(port: int, count: int) -> float:
    """Sequential GETs of one pod per second over a keep-alive connection."""
    conn = connect(port)
    t0 = time.perf_counter()
    for _ in range(count):
        status, _body = request(conn, "GET", "/api/v1/namespaces/bench/pods/pod-0001")
        assert status == 200
    return count / (time.perf_counter() - t0)


def bench_client_list(kubeconfig: Path) -> float:
    """The same list through the official client (includes its pydantic decoding), in ms."""
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    t0 = time.perf_counter()
    core.list_namespaced_pod("bench")
    return (time.perf_counter() - t0) * 1000


def bench_client_gets(kubeconfig: Path, count: int) -> float:
    """Sequential read_namespaced_pod calls per second through the official client."""
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    t0 = time.perf_counter()
    for _ in range(count):
        core.read_namespaced_pod("pod-0001", "bench")
    return count / (time.perf_counter() - t0)


def main() -> None:
    """Run every benchmark and print the figures."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--writes", type=int, default=200)
    p.add_argument("--gets", type=int, default=2000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = start(Path(tmp))
        port, kubeconfig = cluster.port, cluster.kubeconfig
        assert port is not None
        try:
            lat = bench_watch(port, args.writes)
            print(
                f"watch delivery after a write: n={len(lat)} p50={statistics.median(lat):.2f} ms p95={pct(lat, 95):.2f} ms max={max(lat):.2f} ms (target p95 < 20 ms)"
            )
            lt = bench_list(port, args.pods)
            print(
                f"list {args.pods} pods (HTTP GET + json decode): median={statistics.median(lt):.1f} ms p95={pct(lt, 95):.1f} ms (target < 150 ms)"
            )
            print(
                f"list {args.pods} pods via the official client (incl. pydantic models): {bench_client_list(kubeconfig):.0f} ms"
            )
            rate = bench_gets(port, args.gets)
            print(f"sequential GETs: {rate:.0f}/s over {args.gets} requests (target >= 500/s)")
            crate = bench_client_gets(kubeconfig, 500)
            print(f"sequential GETs via the official client: {crate:.0f}/s over 500 requests")
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
