"""Container and probe processes are started with vfork behind setpriv, and still die with us."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localcluster.kubelet_process import SETPRIV, spawn_tied, tied_command

pytestmark = pytest.mark.skipif(SETPRIV is None, reason="util-linux setpriv is not installed")

ENV = {"PATH": "/usr/bin:/bin"}


def test_a_command_on_the_path_runs_behind_setpriv(tmp_path: Path) -> None:
    assert tied_command(["sleep", "1"], ENV, str(tmp_path)) == [
        str(SETPRIV),
        "--pdeathsig",
        "KILL",
        "--",
        "sleep",
        "1",
    ]


def test_a_command_that_cannot_run_fails_as_exec_would(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("not a program")
    with pytest.raises(FileNotFoundError):
        tied_command(["/nonexistent/binary"], ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError):
        tied_command(["no-such-command-anywhere"], ENV, str(tmp_path))
    with pytest.raises(PermissionError):
        tied_command(["./plain.txt"], ENV, str(tmp_path))
    with pytest.raises(PermissionError):
        tied_command([str(tmp_path)], ENV, str(tmp_path))


def test_the_child_keeps_its_arguments_environment_and_output(tmp_path: Path) -> None:
    async def run() -> bytes:
        proc = await spawn_tied(
            ["sh", "-c", 'echo "$GREETING $0"', "there"],
            {**ENV, "GREETING": "hello"},
            str(tmp_path),
            stdout=subprocess.PIPE,
        )
        output, _ = await proc.communicate()
        return output

    assert asyncio.run(run()) == b"hello there\n"


PARENT = """
import asyncio, sys
from localcluster.kubelet_process import spawn_tied

async def main():
    proc = await spawn_tied(["sleep", "60"], {"PATH": "/usr/bin:/bin"}, "/")
    print(proc.pid, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_the_child_is_killed_when_its_parent_dies() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # running
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.05)  # the kernel delivers the parent-death signal on its own
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)


def _alive(pid: int) -> bool:
    """Running and not a zombie (a killed child waits for its new parent to reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
