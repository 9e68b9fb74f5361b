"""The project skeleton: settings helpers, the stack's processes, sign-in, the compose file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from launcher import env
from launcher.stack import StackConfig, process_command
from launcher.supervisor import Entry, Supervisor, read_procfile

ROOT = Path(__file__).resolve().parents[2]


def test_it_reads_integers_and_rejects_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENLIGHT_X", "42")
    assert env.env_int("GREENLIGHT_X", 1) == 42
    monkeypatch.setenv("GREENLIGHT_X", "forty")
    with pytest.raises(ImproperlyConfigured, match="GREENLIGHT_X must be an integer"):
        env.env_int("GREENLIGHT_X", 1)
    monkeypatch.setenv("GREENLIGHT_X", "0")
    with pytest.raises(ImproperlyConfigured, match="at least 1"):
        env.env_int("GREENLIGHT_X", 1, minimum=1)


def test_it_reads_booleans_and_rejects_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENLIGHT_FLAG", "yes")
    assert env.env_bool("GREENLIGHT_FLAG", False) is True
    monkeypatch.setenv("GREENLIGHT_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="must be a boolean"):
        env.env_bool("GREENLIGHT_FLAG", False)


def test_it_derives_a_second_stack_from_another_web_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENLIGHT_WEB_PORT", "9000")
    monkeypatch.setenv("GREENLIGHT_VAR_DIR", "/tmp/greenlight-second")
    monkeypatch.delenv("GREENLIGHT_REDIS_PORT", raising=False)
    second = StackConfig.from_env()
    monkeypatch.setenv("GREENLIGHT_WEB_PORT", "8000")
    first = StackConfig.from_env()
    first_ports = {first.web_port, first.redis_port, first.etcd_port, first.cluster_port}
    second_ports = {second.web_port, second.redis_port, second.etcd_port, second.cluster_port}
    assert not first_ports & second_ports
    assert second.var_dir == Path("/tmp/greenlight-second")


def test_it_knows_the_command_of_every_procfile_process() -> None:
    config = StackConfig.from_env()
    entries = read_procfile(ROOT / "Procfile", config.lb_count)
    # Each Procfile line runs the stack process it is named after.
    assert [entry.command.split()[-1] for entry in entries] == [entry.name for entry in entries]
    commands = {entry.name: process_command(entry.name, config) for entry in entries}
    assert set(commands) == {
        "redis", "etcd", "haproxy-0", "web", "worker", "scheduler", "proxysync-0", "localcluster",
    }  # fmt: skip
    for name, command in commands.items():
        assert command[0] == sys.executable or shutil.which(command[0]), (name, command)
    assert commands["redis"][:5] == [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(config.redis_port),
    ]
    assert f"http://127.0.0.1:{config.etcd_port}" in commands["etcd"]
    assert commands["web"][-3:] == ["-p", str(config.web_port), "dashboard.asgi:application"]
    assert commands["worker"][2:6] == ["celery", "-A", "dashboard", "worker"]
    assert commands["scheduler"][2:6] == ["celery", "-A", "dashboard", "beat"]
    assert commands["proxysync-0"][1:] == [str(ROOT / "manage.py"), "proxysync"]
    assert commands["haproxy-0"][-1] == str(config.haproxy_dir / "haproxy.cfg")
    cluster = commands["localcluster"]
    assert cluster[1:3] == ["-m", "localcluster"]
    assert cluster[cluster.index("--port") + 1] == str(config.cluster_port)
    assert cluster[cluster.index("--kubeconfig") + 1] == str(config.kubeconfig)
    with pytest.raises(SystemExit, match="unknown stack process 'nginx'"):
        process_command("nginx", config)


def test_it_rejects_a_malformed_procfile(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    procfile.write_text("web python -m something\n")
    with pytest.raises(SystemExit, match="expected 'name: command'"):
        read_procfile(procfile)


def test_it_restarts_a_process_that_exits_with_backoff_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    starts = tmp_path / "starts"
    sleeper = tmp_path / "sleeper.pid"
    supervisor = Supervisor(
        [
            Entry("sleeper", f"sh -c 'echo $$ > {sleeper}; exec sleep 60'"),
            Entry("quitter", f"sh -c 'echo start >> {starts}; exit 3'"),
        ],
        grace=5,
        backoff_first=0.2,
    )

    def stop_after_three_starts() -> None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if starts.exists() and len(starts.read_text().split()) >= 3:
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_after_three_starts, daemon=True).start()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert supervisor.run() == 0
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert len(starts.read_text().split()) >= 3
    assert supervisor.restarts["quitter"] >= 2
    # Backoff doubles: 0.2 s, 0.4 s, ...
    assert supervisor.backoff["quitter"] >= 0.8
    assert "sleeper" not in supervisor.restarts
    assert all(process.poll() is not None for process in supervisor.processes.values())
    with pytest.raises(ProcessLookupError):
        os.kill(int(sleeper.read_text()), 0)


def test_it_leaves_no_process_behind_after_sigint(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    marker = tmp_path / "child.pid"
    procfile.write_text(f"child: sh -c 'echo $$ > {marker}; exec sleep 60'\n")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "launcher.supervisor", str(procfile)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 10
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(marker.read_text())
    supervisor.send_signal(signal.SIGINT)
    output, _ = supervisor.communicate(timeout=15)
    assert b"all processes stopped" in output
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


def test_it_leaves_no_process_behind_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    procfile = tmp_path / "Procfile"
    marker = tmp_path / "child.pid"
    procfile.write_text(f"child: sh -c 'echo $$ > {marker}; exec sleep 60'\n")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "launcher.supervisor", str(procfile)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not marker.exists() or not marker.read_text().strip():
        assert time.monotonic() < deadline, "the child never started"
        time.sleep(0.05)
    child = int(marker.read_text())
    supervisor.kill()
    supervisor.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("the child outlived a SIGKILLed supervisor")


@pytest.mark.django_db
def test_it_redirects_anonymous_users_to_sign_in(client: Client) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login/")


@pytest.mark.django_db
def test_it_signs_in_the_demo_user(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.management import call_command

    monkeypatch.setenv("GREENLIGHT_ADMIN_PASSWORD", "correct-horse-battery")
    call_command("bootstrap", stdout=open(os.devnull, "w"))  # noqa: SIM115
    page = client.get("/login/")
    assert page.status_code == 200
    assert b"Sign in to Greenlight" in page.content
    bad = client.post("/login/", {"username": "admin", "password": "wrong"})
    assert bad.status_code == 200
    assert b"Please enter a correct username and password" in bad.content
    good = client.post("/login/", {"username": "admin", "password": "correct-horse-battery"})
    assert good.status_code == 302
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_it_keeps_the_demo_user_password_when_bootstrapping_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    monkeypatch.delenv("GREENLIGHT_ADMIN_PASSWORD", raising=False)
    with open(os.devnull, "w") as sink:
        call_command("bootstrap", stdout=sink)
        first = get_user_model().objects.get(username="admin").password
        call_command("bootstrap", stdout=sink)
    assert get_user_model().objects.get(username="admin").password == first


def test_it_ships_a_valid_compose_file() -> None:
    compose = shutil.which("docker-compose")
    assert compose is not None, "make test installs Debian's docker-compose"
    result = subprocess.run(
        [compose, "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
        capture_output=True,
        text=True,
        env={**os.environ, "SECRET_KEY": "compose-check"},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    expected = {"postgres", "redis", "etcd", "web", "worker", "scheduler"}
    expected |= {"haproxy-0", "proxysync-0", "haproxy-1", "proxysync-1"}  # two load balancers
    assert expected <= services


def test_it_documents_every_environment_variable_in_the_readme() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    pattern = re.compile(r"env_(?:str|int|bool|list|path|optional)\(\s*\"([A-Z_]+)\"")
    names: set[str] = set()
    for package in ("dashboard", "deployer", "scaling"):
        for path in (ROOT / package).rglob("*.py"):
            names.update(pattern.findall(path.read_text()))
    assert names, "the settings read no variable at all?"
    missing = sorted(name for name in names if f"`{name}`" not in readme)
    assert not missing, f"README's configuration table lacks {missing}"
