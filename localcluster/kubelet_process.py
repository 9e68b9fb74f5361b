"""Container processes: spawn in their own process group, capture output, stop gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
REAPER = Path(__file__).with_name("reaper.py")

# Loaded before any fork: dlopen in a forked child of a threaded parent can deadlock.
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


# setpriv(1) (util-linux) sets the parent-death signal and execs the command: with it, a
# child needs no preexec hook, so Python starts it with vfork instead of fork, which takes
# a few milliseconds instead of tens of them (a fork copies this process's page tables,
# on the event loop, once per container and exec probe).
SETPRIV = shutil.which("setpriv")


def tied_command(argv: list[str], env: dict[str, str], cwd: str) -> list[str]:
    """``argv`` run so that it dies with this process: setpriv's parent-death signal.

    Raises the OSError exec would (a missing or non-executable command), before anything
    starts, so a command that cannot run fails as it would without setpriv in front.
    """
    if not argv:
        raise ValueError("empty command")
    program = argv[0]
    if "/" in program:
        path = program if os.path.isabs(program) else os.path.join(cwd, program)
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    elif shutil.which(program, path=env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    return [str(SETPRIV), "--pdeathsig", "KILL", "--", *argv]


async def spawn_tied(argv: list[str], env: dict[str, str], cwd: str, **options: Any) -> Any:
    """``asyncio.create_subprocess_exec`` in a new session, tied to this process's life."""
    if SETPRIV is not None:
        proc = await asyncio.create_subprocess_exec(
            *tied_command(argv, env, cwd), env=env, cwd=cwd, start_new_session=True, **options
        )
        await _tied(proc.pid)
        return proc
    return await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=child_setup(os.getpid()),
        **options,
    )


async def _tied(pid: int, limit: float = 2.0) -> None:
    """Wait until setpriv has set the parent-death signal, which it does before its exec.

    Until then the child would outlive a parent that dies, so the tie holds only once the
    child runs its own program (or has already ended). Checked every millisecond, off the
    event loop's time; the Reaper covers a parent that dies within this window.
    """
    setpriv = os.path.realpath(str(SETPRIV))
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if os.readlink(f"/proc/{pid}/exe") != setpriv:
                return
        except OSError:
            return  # already ended (or a zombie): nothing left to tie
        await asyncio.sleep(0.001)


def child_setup(parent_pid: int) -> Callable[[], None]:
    """Return a preexec hook that ties the child's life to this process."""

    def setup() -> None:
        # The kernel sends SIGKILL to the child when the forking thread exits, even on SIGKILL;
        # the getppid check closes the window where the parent died before prctl ran.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(137)

    return setup


class Reaper:
    """A watchdog process that kills every registered process group when this process dies."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the watchdog; its stdin pipe closes when this process dies, however it dies."""
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(REAPER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        os.set_blocking(self._proc.stdin.fileno(), True)  # type: ignore[union-attr]

    def _send(self, line: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.write(line.encode())
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            log.warning("orphan reaper is gone; pod processes may outlive localcluster")

    def add(self, pgid: int) -> None:
        """Register a process group to kill if localcluster dies."""
        self._send(f"+{pgid}\n")

    def remove(self, pgid: int) -> None:
        """Forget a process group that has ended."""
        self._send(f"-{pgid}\n")

    def stop(self) -> None:
        """Stop the watchdog after a clean shutdown (all groups already stopped)."""
        if self._proc is None:
            return
        with contextlib.suppress(Exception):
            self._proc.stdin.close()  # type: ignore[union-attr]
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None


OutputSink = Callable[[str, bytes], None]


class ContainerProcess:
    """One running container: its process group, output pumps and exit status."""

    def __init__(self, proc: asyncio.subprocess.Process, reaper: Reaper | None) -> None:
        self.proc = proc
        self.pid = proc.pid
        self._reaper = reaper
        self._pumps: list[asyncio.Task[None]] = []
        self.exit_code: int | None = None
        self.signal: int | None = None
        self.killed_by_us = False

    @classmethod
    async def spawn(
        cls,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        sink: OutputSink,
        reaper: Reaper | None = None,
    ) -> ContainerProcess:
        """Start ``argv`` in a new session; raise OSError when it cannot be executed."""
        proc = await spawn_tied(
            argv,
            env,
            cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self = cls(proc, reaper)
        if reaper is not None:
            reaper.add(proc.pid)
        assert proc.stdout is not None and proc.stderr is not None
        self._pumps = [
            asyncio.create_task(_pump(proc.stdout, "stdout", sink)),
            asyncio.create_task(_pump(proc.stderr, "stderr", sink)),
        ]
        return self

    async def wait(self) -> int:
        """Wait for the process to exit and its output to drain; return the container exit code."""
        try:
            code = await self.proc.wait()
        except asyncio.CancelledError:
            for task in self._pumps:
                task.cancel()
            raise
        # Whatever the main process left behind in its group goes with it, as in a container.
        self._killpg(signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*self._pumps, return_exceptions=True), 2)
        for task in self._pumps:
            task.cancel()
        self._forget()
        if code < 0:
            self.signal = -code
            code = 128 - code  # what a container runtime reports for death by signal
        self.exit_code = code
        return code

    def _forget(self) -> None:
        # Once the process is gone its pgid may be reused: the reaper must not kill it later.
        if self._reaper is not None:
            self._reaper.remove(self.pid)
            self._reaper = None

    def _killpg(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    async def stop(self, grace: float, hurry: asyncio.Event | None = None) -> None:
        """SIGTERM the group, wait up to ``grace`` seconds (or until ``hurry``), then SIGKILL it."""
        if self.proc.returncode is not None:
            return
        self.killed_by_us = True
        if grace > 0:
            self._killpg(signal.SIGTERM)
            exited = asyncio.ensure_future(self.proc.wait())
            waiters: set[asyncio.Future[Any]] = {exited}
            if hurry is not None:
                waiters.add(asyncio.ensure_future(hurry.wait()))
            done, pending = await asyncio.wait(
                waiters, timeout=grace, return_when=asyncio.FIRST_COMPLETED
            )
            for future in pending:
                future.cancel()
            if exited not in done:
                log.info("pid %s still running after SIGTERM, killing it", self.pid)
        # The group goes with its main process, stragglers included, as with a container.
        self._killpg(signal.SIGKILL)
        await self.proc.wait()
        self._forget()


async def _pump(stream: asyncio.StreamReader, name: str, sink: OutputSink) -> None:
    while True:
        try:
            chunk = await stream.read(65536)
        except (ConnectionError, ValueError):
            return
        if not chunk:
            return
        sink(name, chunk)
