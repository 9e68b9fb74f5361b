"""``GREENLIGHT_LB_COUNT`` load balancers in the embedded stack: ports, folders, processes, restarts."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from launcher.stack import StackConfig, banner, prepare, process_command, process_env
from launcher.supervisor import Supervisor, read_procfile

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """``make run``'s defaults: web port 8000, load balancers from 8080, a var dir of the test's own."""
    for name in list(os.environ):
        if name.startswith("GREENLIGHT_") and name.endswith(("_PORT", "_COUNT")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GREENLIGHT_WEB_PORT", "8000")
    monkeypatch.setenv("GREENLIGHT_LB_PORT", "8080")
    monkeypatch.setenv("GREENLIGHT_VAR_DIR", str(tmp_path / "var"))
    return monkeypatch


@pytest.mark.parametrize("count", [1, 2, 3])
def test_it_runs_one_haproxy_and_one_proxysync_per_load_balancer_on_ports_of_their_own(
    stack_env: pytest.MonkeyPatch, tmp_path: Path, count: int
) -> None:
    stack_env.setenv("GREENLIGHT_LB_COUNT", str(count))
    config = StackConfig.from_env()
    var = tmp_path / "var"

    names = [entry.name for entry in read_procfile(ROOT / "Procfile", config.lb_count)]

    assert sorted(name for name in names if name.startswith(("haproxy", "proxysync"))) == [
        *(f"haproxy-{i}" for i in range(count)),
        *(f"proxysync-{i}" for i in range(count)),
    ]
    assert len(names) == 6 + 2 * count
    for i in range(count):
        folder = var / ("haproxy" if i == 0 else f"haproxy-{i}")
        assert process_command(f"haproxy-{i}", config) == [
            "haproxy", "-W", "-db",
            "-S", f"{folder / 'master.sock'},mode,600",
            "-p", str(folder / "haproxy.pid"),
            "-f", str(folder / "haproxy.cfg"),
        ]  # fmt: skip
        assert process_command(f"proxysync-{i}", config)[1:] == [
            str(ROOT / "manage.py"),
            "proxysync",
        ]
        assert process_env(f"proxysync-{i}", config) == {
            "GREENLIGHT_LB_ID": f"lb-{i}",
            "GREENLIGHT_LB_ADDRESS": f"http://127.0.0.1:{8080 + i}",
            "GREENLIGHT_LB_PORT": str(8080 + i),
            "GREENLIGHT_LB_COUNT": "1",
            "GREENLIGHT_HAPROXY_STATS_PORT": str(8006 + i),
            "GREENLIGHT_HAPROXY_CONFIG": str(folder / "haproxy.cfg"),
            "GREENLIGHT_HAPROXY_MASTER_SOCKET": str(folder / "master.sock"),
        }
        assert process_env(f"haproxy-{i}", config) == {}
    ports = list(config.ports().values())
    assert len(ports) == len(set(ports)) == 6 + 2 * count
    assert sorted(ports) == [*range(8000, 8006 + count), *range(8080, 8080 + count)]
    with pytest.raises(SystemExit, match=f"haproxy-{count} names load balancer {count}"):
        process_command(f"haproxy-{count}", config)
    assert process_env("worker", config) == {}


def test_a_proxysync_sees_the_stack_as_its_one_load_balancer(
    stack_env: pytest.MonkeyPatch,
) -> None:
    stack_env.setenv("GREENLIGHT_LB_COUNT", "3")
    config = StackConfig.from_env()
    for name, value in process_env("proxysync-2", config).items():
        stack_env.setenv(name, value)

    seen = StackConfig.from_env()

    assert (seen.lb_port, seen.haproxy_stats_port, seen.lb_count) == (8082, 8008, 1)
    assert seen.redis_port == config.redis_port and seen.etcd_port == config.etcd_port


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("0", "GREENLIGHT_LB_COUNT must be between 1 and 16, got 0"),
        ("17", "GREENLIGHT_LB_COUNT must be between 1 and 16, got 17"),
        ("two", "GREENLIGHT_LB_COUNT must be an integer, got 'two'"),
    ],
)
def test_it_refuses_a_load_balancer_count_outside_1_to_16(
    stack_env: pytest.MonkeyPatch, raw: str, message: str
) -> None:
    stack_env.setenv("GREENLIGHT_LB_COUNT", raw)
    with pytest.raises(ImproperlyConfigured, match=message):
        StackConfig.from_env()


def test_make_run_stops_at_once_with_the_reason_for_a_bad_count(tmp_path: Path) -> None:
    env = {**os.environ, "GREENLIGHT_LB_COUNT": "20", "GREENLIGHT_VAR_DIR": str(tmp_path)}
    for module in ("launcher.stack", "launcher.supervisor"):
        argv = ["prepare"] if module == "launcher.stack" else [str(ROOT / "Procfile")]
        done = subprocess.run(
            [sys.executable, "-m", module, *argv],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, (module, done.stdout, done.stderr)
        assert done.stderr.strip() == (
            "greenlight: GREENLIGHT_LB_COUNT must be between 1 and 16, got 20"
        )
    assert not (tmp_path / "haproxy").exists()


def test_it_refuses_load_balancer_ports_that_land_on_another_port_of_the_stack(
    stack_env: pytest.MonkeyPatch,
) -> None:
    stack_env.setenv("GREENLIGHT_LB_PORT", "8003")
    stack_env.setenv("GREENLIGHT_LB_COUNT", "2")
    with pytest.raises(ImproperlyConfigured) as refused:
        StackConfig.from_env()
    assert str(refused.value).startswith(
        "port 8003 would serve both etcd's peers (GREENLIGHT_ETCD_PEER_PORT) "
        "and load balancer lb-0 (GREENLIGHT_LB_PORT + 0)"
    )
    # The second load balancer's stats page would take the LB port the user chose.
    stack_env.setenv("GREENLIGHT_LB_PORT", "8007")
    with pytest.raises(ImproperlyConfigured, match="port 8007 would serve both load balancer"):
        StackConfig.from_env()
    stack_env.setenv("GREENLIGHT_LB_PORT", "65535")
    with pytest.raises(ImproperlyConfigured, match="would be port 65536, outside 1..65535"):
        StackConfig.from_env()


def test_prepare_writes_a_valid_private_config_for_each_load_balancer(
    stack_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stack_env.setenv("GREENLIGHT_LB_COUNT", "2")
    config = StackConfig.from_env()

    prepare(config)

    for slot, folder in zip(config.load_balancers, ("haproxy", "haproxy-1"), strict=True):
        assert slot.haproxy_dir == tmp_path / "var" / folder
        assert stat.S_IMODE(slot.haproxy_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(slot.config.stat().st_mode) == 0o600
        text = slot.config.read_text()
        assert f"127.0.0.1:{slot.port}" in text and f"127.0.0.1:{slot.stats_port}" in text
        checked = subprocess.run(
            ["haproxy", "-c", "-q", "-f", str(slot.config)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stderr


def test_the_banner_lists_every_load_balancer(stack_env: pytest.MonkeyPatch) -> None:
    stack_env.setenv("GREENLIGHT_LB_COUNT", "2")
    lines = banner(StackConfig.from_env()).splitlines()
    assert (
        "  Load balancers: http://127.0.0.1:8080/  (lb-0; the demo app: http://hello.localhost:8080/)"
        in lines
    )
    assert (
        "                  http://127.0.0.1:8081/  (lb-1; the demo app: http://hello.localhost:8081/)"
        in lines
    )
    stack_env.setenv("GREENLIGHT_LB_COUNT", "1")
    one = banner(StackConfig.from_env())
    assert "  Load balancer:  http://127.0.0.1:8080/  (lb-0;" in one and "8081" not in one


def test_the_supervisor_restarts_one_load_balancers_process_and_leaves_the_others(
    tmp_path: Path,
) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        f"haproxy-{{lb}}: sh -c 'echo $$ >> {tmp_path}/started-{{lb}}; exec sleep 60'\n"
    )
    supervisor = Supervisor(read_procfile(procfile, 2), grace=5, backoff_first=0.2)
    starts = [tmp_path / "started-0", tmp_path / "started-1"]
    killed: list[int] = []

    def pids(path: Path) -> list[int]:
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def kill_lb_1_then_stop() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(pids(path) for path in starts):
            time.sleep(0.05)  # the supervisor starts them; nothing to watch
        killed.append(pids(starts[1])[0])
        os.kill(killed[0], signal.SIGKILL)
        while time.monotonic() < deadline and len(pids(starts[1])) < 2:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=kill_lb_1_then_stop, daemon=True).start()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert supervisor.run() == 0
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert [entry.name for entry in supervisor.entries] == ["haproxy-0", "haproxy-1"]
    assert len(pids(starts[1])) == 2 and pids(starts[1])[0] == killed[0]
    assert len(pids(starts[0])) == 1, "lb-0's process was restarted too"
    assert supervisor.restarts == {"haproxy-1": 1}
