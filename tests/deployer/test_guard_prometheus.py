"""The guard's PromQL query against a real Prometheus (Debian's binary, no scrape targets)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer.models import App, Deployment
from deployer.promql import PrometheusError, breaching, query_prometheus
from tests.deployer.fakes import FakeClock, ListSink
from tests.deployer.test_guard import StatsLB, baked
from tests.servers import free_port, stop_process, wait_for_port


@pytest.fixture
def lb() -> StatsLB:
    return StatsLB()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus on a free loopback port, with nothing to scrape: queries of constants."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's `prometheus` binary is not on PATH (apt-get install prometheus)"
    folder = tmp_path_factory.mktemp("prometheus")
    config = folder / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\n")
    port = free_port()
    log = folder / "prometheus.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={Path(folder) / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, process=process, timeout=60)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def test_a_query_returns_its_samples_and_only_non_zero_ones_breach(prometheus: str) -> None:
    samples = query_prometheus(prometheus, 'label_replace(vector(3), "job", "shop", "", "")')
    assert [(s.labels, s.value) for s in samples] == [({"job": "shop"}, 3.0)]
    assert breaching(samples) == samples
    assert breaching(query_prometheus(prometheus, "vector(0)")) == []
    assert breaching(query_prometheus(prometheus, "vector(1) > 2")) == []  # no sample
    assert breaching(query_prometheus(prometheus, "scalar(vector(0)) / 0")) == []  # NaN


def test_a_query_prometheus_refuses_is_an_error_that_names_it(prometheus: str) -> None:
    with pytest.raises(PrometheusError, match="parse error"):
        query_prometheus(prometheus, "sum(rate(")


def test_the_guard_swaps_back_on_a_real_query_and_goes_on_when_prometheus_refuses_it(
    app: App,
    run_workflow: Any,
    lb: StatsLB,
    clock: FakeClock,
    sink: ListSink,
    settings: Any,
    prometheus: str,
) -> None:
    settings.GREENLIGHT_PROMETHEUS_URL = prometheus
    lb.stats = {}
    run_workflow(app)
    baked(app, guard_promql="vector(1) > 0")

    swapped = run_workflow(app, image="demo/hello:2")

    assert swapped.status == Deployment.Status.FAILED
    assert swapped.failure_reason.startswith(
        "guard: the PromQL query 'vector(1) > 0' returned 1 non-zero sample in 1s ({} = 1)"
    ), swapped.failure_reason
    assert lb.live_version(app.frontend) == 1

    # Prometheus cannot evaluate this one (a function that does not exist): never a swap back.
    baked(app, guard_promql="no_such_function(up)")
    passed = run_workflow(app, image="demo/hello:3")

    assert passed.status == Deployment.Status.SUCCEEDED, passed.failure_reason
    assert any(
        m.startswith("Prometheus could not answer the guard's query") for _, _, m in sink.lines
    )
