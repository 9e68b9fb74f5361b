"""Everything under the var dir is private (files 0600, folders 0700) and no log holds a webhook secret."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.stack import StackConfig, prepare, process_command

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cret-webhook-token-in-the-path"


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """A umask of 022, as in a login shell; restored after the test."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def config_for(var_dir: Path, web_port: int = 18000) -> StackConfig:
    return StackConfig(
        var_dir=var_dir,
        web_port=web_port,
        lb_port=web_port + 10,
        redis_port=web_port + 1,
        etcd_port=web_port + 2,
        etcd_peer_port=web_port + 3,
        etcd_metrics_port=web_port + 4,
        cluster_port=web_port + 5,
        haproxy_stats_port=web_port + 6,
        nodes=1,
        db_path=var_dir / "greenlight.sqlite3",
    )


def loose_entries(var_dir: Path) -> list[str]:
    """Paths under ``var_dir`` (itself included) that a group or other user may use."""
    found = []
    for path in [var_dir, *var_dir.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        if mode & 0o077:
            found.append(f"{path.relative_to(var_dir.parent)} {oct(mode)}")
    return found


def test_prepare_creates_the_var_dir_private_even_under_a_loose_umask(
    tmp_path: Path, loose_umask: None
) -> None:
    config = config_for(tmp_path / "var")
    try:
        prepare(config)
    finally:
        os.umask(0o022)
    assert (config.var_dir / "secret_key").read_text()
    assert config.db_path.exists() and (config.haproxy_dir / "haproxy.cfg").exists()
    assert not loose_entries(config.var_dir)
    assert stat.S_IMODE(config.var_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((config.var_dir / "secret_key").stat().st_mode) == 0o600


def test_prepare_keeps_an_existing_secret_key_and_configuration(tmp_path: Path) -> None:
    config = config_for(tmp_path / "var")
    prepare(config)
    key = (config.var_dir / "secret_key").read_text()
    (config.haproxy_dir / "haproxy.cfg").write_text("# edited\n")
    prepare(config)
    assert (config.var_dir / "secret_key").read_text() == key
    assert (config.haproxy_dir / "haproxy.cfg").read_text() == "# edited\n"


def test_prepare_closes_a_var_dir_left_open_by_an_older_version(
    tmp_path: Path, loose_umask: None
) -> None:
    config = config_for(tmp_path / "var")
    config.var_dir.mkdir(mode=0o755)
    (config.var_dir / "greenlight.sqlite3").write_text("")
    try:
        prepare(config)
    finally:
        os.umask(0o022)
    assert stat.S_IMODE(config.var_dir.stat().st_mode) == 0o700


def test_the_web_process_is_daphne_with_a_redacting_access_log() -> None:
    command = process_command("web", config_for(Path("/tmp/unused")))
    assert command[1:3] == ["-m", "dashboard.webserver"]
    assert command[-1] == "dashboard.asgi:application"


def free_port_block(size: int) -> int:
    """A base port such that ``base`` .. ``base + size - 1`` were free a moment ago."""
    for _ in range(200):
        base = random.randint(20000, 60000)
        try:
            sockets = []
            for port in range(base, base + size):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError("no block of free ports")


def make_run_steps() -> list[str]:
    """The shell lines of the Makefile's ``run`` recipe, before the supervisor starts."""
    recipe = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip().lstrip("@") for line in recipe.splitlines()[1:]]
    return [line.replace("$(PY)", sys.executable) for line in lines if "supervisor" not in line]


def supervisor_line() -> str:
    recipe = (ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    line = next(line for line in recipe.splitlines() if "launcher.supervisor" in line)
    return line.strip().lstrip("@").replace("$(PY)", sys.executable)


def wait_until(check: object, what: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert process.poll() is None, f"the stack stopped while waiting for {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.2)  # the stack's processes start on their own; nothing to watch


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


@pytest.mark.e2e
def test_make_run_keeps_the_var_dir_private_and_secrets_out_of_the_logs(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    web = free_port_block(12)
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "GREENLIGHT_VAR_DIR": str(var_dir),
        "GREENLIGHT_WEB_PORT": str(web),
        "GREENLIGHT_LB_PORT": str(web + 10),
        "GREENLIGHT_CLUSTER_NODES": "1",
        "GREENLIGHT_ADMIN_PASSWORD": "a-long-demo-password",
        "PYTHONUNBUFFERED": "1",
    }
    for name in ("DJANGO_SETTINGS_MODULE", "SECRET_KEY", "GREENLIGHT_DB_PATH", "DATABASE_URL"):
        env.pop(name, None)
    for step in make_run_steps():
        result = subprocess.run(
            ["bash", "-c", step], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{step}: {result.stdout}{result.stderr}"
    output = tmp_path / "stack.log"
    with output.open("wb") as sink:
        stack = subprocess.Popen(
            ["bash", "-c", supervisor_line()],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{web}/login/"), "dashboard", stack, 60)
        wait_until(lambda: (var_dir / "localcluster" / "kubeconfig").exists(), "cluster", stack, 60)
        wait_until(lambda: list(var_dir.glob("celerybeat-schedule*")), "scheduler", stack, 60)
        request = urllib.request.Request(
            f"http://127.0.0.1:{web}/api/hooks/dockerhub/{SECRET}/",
            data=b"{}",
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 404
        wait_until(lambda: "dockerhub" in output.read_text(errors="replace"), "log", stack, 10)
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        try:
            stack.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait(10)
    log = output.read_text(errors="replace")
    assert SECRET not in log
    # Daphne's access line and Django's "Not Found" warning both name the hook, redacted.
    assert re.search(r'"POST /api/hooks/dockerhub/<redacted>/" 404', log), log[-3000:]
    assert "Not Found: /api/hooks/dockerhub/<redacted>/" in log
    assert (var_dir / "greenlight.sqlite3-wal").exists() or (var_dir / "greenlight.sqlite3").stat()
    assert not loose_entries(var_dir), loose_entries(var_dir)
