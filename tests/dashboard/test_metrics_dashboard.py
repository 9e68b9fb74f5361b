"""deploy/grafana and deploy/prometheus: the dashboard charts only series that exist, the config loads."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dashboard.metrics.collector import GreenlightCollector
from deployer.lbconfig import render_config
from launcher.stack import haproxy_command
from tests.servers import REPO, Server, free_port, spawn

DASHBOARD = REPO / "deploy" / "grafana" / "greenlight-dashboard.json"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
# Grafana's variables, as Grafana would expand them before sending a query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel, Grafana's variables expanded."""
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((panel["title"], expr))
    return queries


def selected_names(node: Any) -> Iterator[str]:
    """The metric name of every vector selector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        assert node.name, f"a selector without a metric name: {node}"
        yield node.name
        return
    for attribute in ("expr", "lhs", "rhs", "vector_selector", "param"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield from selected_names(child)
    for child in getattr(node, "args", None) or []:
        yield from selected_names(child)


def series_names(family_name: str, kind: str) -> set[str]:
    """The series a family of ``kind`` exposes."""
    if kind == "counter":
        return {f"{family_name}_total"}
    if kind == "histogram":
        return {f"{family_name}_{suffix}" for suffix in ("bucket", "sum", "count")}
    return {family_name}


@pytest.fixture
def greenlight_series(settings: Any, db: None) -> dict[str, set[str]]:
    """Each family of Greenlight's collector and its series (families are listed even when empty)."""
    settings.ETCD_ENDPOINT = "127.0.0.1:1"
    return {
        family.name: series_names(family.name, family.type)
        for family in GreenlightCollector().collect()
    }


@pytest.fixture
def haproxy_series(tmp_path: Path) -> Iterator[set[str]]:
    """Every series name a real HAProxy's exporter serves, with a backend and a server."""
    port, stats = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    backend = {"servers": [{"name": "hello-v1-a", "address": "127.0.0.1", "port": free_port()}]}
    config.write_text(render_config(lb_port=port, stats_port=stats, backends={"hello-v1": backend}))
    command = haproxy_command(config, tmp_path / "master.sock", tmp_path / "haproxy.pid")
    server: Server = spawn("haproxy", command, tmp_path, port)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stats}/metrics", timeout=10) as answer:
            text = answer.read().decode()
    finally:
        server.stop()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= series_names(family.name, family.type)
    yield names


def test_the_dashboard_is_json_with_a_query_in_every_panel() -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15
    dashboard = json.loads(DASHBOARD.read_text())
    charts = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert all(panel.get("targets") for panel in charts)
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def test_every_dashboard_query_parses_and_names_only_series_greenlight_or_haproxy_exports(
    greenlight_series: dict[str, set[str]], haproxy_series: set[str]
) -> None:
    exported = haproxy_series.union(*greenlight_series.values())
    used: set[str] = set()
    for title, expr in dashboard_queries():
        try:
            parsed = promql_parser.parse(expr)
        except ValueError as exc:
            pytest.fail(f"panel {title!r}: {expr!r} is no PromQL: {exc}")
        names = set(selected_names(parsed))
        assert names, f"panel {title!r}: {expr!r} selects no series"
        unknown = names - exported
        assert not unknown, f"panel {title!r} queries series nobody exports: {sorted(unknown)}"
        used |= names
    # Every Greenlight family is charted somewhere.
    uncharted = [family for family, series in greenlight_series.items() if not series & used]
    assert not uncharted, f"families on no panel: {uncharted}"


def test_the_selector_walk_sees_through_functions_and_operators() -> None:
    expr = "sum by (le) (rate(a_bucket[5m])) / ignoring(x) (b_total + on() group_left c)"
    assert set(selected_names(promql_parser.parse(expr))) == {"a_bucket", "b_total", "c"}


def test_the_prometheus_config_scrapes_greenlight_with_the_token_and_haproxy(
    tmp_path: Path,
) -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["greenlight"]["metrics_path"] == "/metrics"
    assert jobs["greenlight"]["authorization"]["type"] == "Bearer"
    assert jobs["haproxy"]["metrics_path"] == "/metrics"
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs Debian's prometheus package"
    token = tmp_path / "token"
    token.write_text("x" * 32)
    jobs["greenlight"]["authorization"]["credentials_file"] = str(token)
    checked = tmp_path / "prometheus.yml"
    checked.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(checked)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
