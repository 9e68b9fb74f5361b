"""A real Prometheus (Debian's) scrapes a Greenlight web server and a real HAProxy.

The scrape configuration is deploy/prometheus/prometheus.yml with the addresses of the
servers this test starts; Greenlight's series and HAProxy's are then read back through
Prometheus's HTTP API, and every query of the Grafana dashboard runs there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.models import App, Deployment
from tests.dashboard.test_metrics_dashboard import PROMETHEUS_CONFIG, dashboard_queries
from tests.servers import (
    Server,
    free_port,
    python_command,
    stack_env,
    start_process,
    stop_process,
    wait_for_port,
)

TOKEN = "prometheus-scrapes-with-this-token-42"
MISSING = (
    "Debian's `prometheus` binary is not on PATH: `make test` installs the prometheus "
    "package (apt-get install prometheus)"
)


class Prometheus:
    """A Prometheus server under test and its HTTP API."""

    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.port = port
        self.process = process
        self.log = log

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data`` (AssertionError on an error status)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Poll ``/-/ready`` until it answers 200: Prometheus listens before its storage opens."""
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/-/ready"
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited:\n{self.log.read_text()}"
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass  # 503 while starting, or no answer yet
            time.sleep(0.2)
        pytest.fail(f"prometheus was not ready within {timeout}s:\n{self.log.read_text()}")

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector ``expr`` evaluates to now."""
        return list(self.api("query", query=expr)["result"])

    def wait_for(self, expr: str, timeout: float = 90.0) -> list[dict[str, Any]]:
        """Poll until ``expr`` has a sample (Prometheus offers no push for new samples)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited:\n{self.log.read_text()}"
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        targets = self.api("targets")
        pytest.fail(f"no sample of {expr} within {timeout}s; targets: {targets}")


def scrape_config(web_port: int, stats_port: int, token_file: Path) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml pointed at this test's servers, scraping every second."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    greenlight, haproxy = jobs["greenlight"], jobs["haproxy"]
    greenlight.update(scrape_interval="1s", scrape_timeout="1s")
    greenlight["authorization"]["credentials_file"] = str(token_file)
    greenlight["static_configs"] = [{"targets": [f"127.0.0.1:{web_port}"]}]
    haproxy["static_configs"][0]["targets"] = [f"127.0.0.1:{stats_port}"]
    return config


@pytest.fixture
def prometheus_binary() -> str:
    """Debian's prometheus; a missing one fails the test (the package is a test dependency)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(MISSING)
    return binary


@pytest.fixture
def web_and_proxysync(
    etcd: Server, haproxy: Server, tmp_path: Path, transactional_db: None
) -> Iterator[int]:
    """proxysync for ``haproxy`` and a daphne web server with the metrics token; its port."""
    web_port = free_port()
    (tmp_path / "staticfiles").mkdir()
    env = stack_env(
        redis_url="redis://127.0.0.1:1/0",
        etcd_endpoint=str(etcd.extra["endpoint"]),
        etcd_prefix=f"/greenlight-metrics-{uuid.uuid4().hex[:8]}",
        kubeconfig=tmp_path / "no-kubeconfig",
        haproxy=haproxy,
        extra={
            "GREENLIGHT_METRICS_TOKEN": TOKEN,
            "GREENLIGHT_VAR_DIR": str(tmp_path),
            "GREENLIGHT_WEB_PORT": str(web_port),
        },
    )
    web = python_command(
        "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port), "dashboard.asgi:application"
    )  # fmt: skip
    processes = [
        start_process("proxysync", python_command("manage.py", "proxysync"), tmp_path, env),
        start_process("web", web, tmp_path, env),
    ]
    try:
        wait_for_port(web_port, process=processes[1], timeout=60)
        yield web_port
    finally:
        for process in reversed(processes):
            stop_process(process)


@pytest.fixture
def prometheus(
    prometheus_binary: str, web_and_proxysync: int, haproxy: Server, tmp_path: Path
) -> Iterator[Prometheus]:
    """Prometheus on a free loopback port with a storage folder of its own."""
    token_file = tmp_path / "metrics-token"
    token_file.write_text(TOKEN)
    config = tmp_path / "prometheus.yml"
    stats_port = int(haproxy.extra["stats_port"])  # type: ignore[call-overload]
    config.write_text(yaml.safe_dump(scrape_config(web_and_proxysync, stats_port, token_file)))
    port = free_port()
    log = tmp_path / "prometheus.log"
    command = [
        prometheus_binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_for_port(port, process=process, timeout=60)
        server = Prometheus(port, process, log)
        server.wait_ready()
        yield server
    finally:
        stop_process(process)


def test_prometheus_reads_greenlight_and_haproxy_series_through_its_api(
    make_app: Callable[..., App],
    make_deployment: Callable[..., Deployment],
    prometheus: Prometheus,
) -> None:
    app = make_app(name="hello", frontend="hello.localhost")
    make_deployment(app, steps={"switch": {"state": "done", "seconds": 0.02}})
    make_deployment(app, status=Deployment.Status.FAILED)

    failed = prometheus.wait_for(
        'greenlight_deployments_total{job="greenlight",app="hello",outcome="failed"}'
    )
    assert [sample["value"][1] for sample in failed] == ["1"]
    switches = prometheus.wait_for('greenlight_switch_seconds_count{kind="deploy"}')
    assert switches[0]["value"][1] == "1"
    # proxysync's first apply is a reload, timed in its registration and read from etcd.
    applies = prometheus.wait_for('greenlight_proxysync_apply_seconds_count{how="reload"}')
    assert applies[0]["metric"]["lb"] == "lb-0" and float(applies[0]["value"][1]) >= 1
    # HAProxy's exporter on the stats port: its own frontends, each with its request count.
    frontends = prometheus.wait_for('haproxy_frontend_http_requests_total{job="haproxy"}')
    assert {sample["metric"]["proxy"] for sample in frontends} >= {"stats", "http"}
    assert all(sample["metric"]["lb"] == "lb-0" for sample in frontends)
    up = {s["metric"]["job"]: s["value"][1] for s in prometheus.query("up")}
    assert up == {"greenlight": "1", "haproxy": "1"}

    # Every query of the Grafana dashboard is one Prometheus evaluates.
    for title, expr in dashboard_queries():
        try:
            prometheus.api("query", query=expr)
        except AssertionError as exc:
            pytest.fail(f"panel {title!r}: Prometheus refused its query: {exc}")
