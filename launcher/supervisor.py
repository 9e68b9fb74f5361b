"""A small process supervisor for ``make run``: starts every Procfile entry, stops them all together.

Each process runs in its own process group with a parent-death signal, so Ctrl-C,
SIGTERM or even SIGKILL of the supervisor leaves nothing behind. A process that exits
on its own is started again after a backoff (1 s, doubling up to 30 s; back to 1 s once
it has run for a minute), with a line saying so: one crashing process never takes
the rest of the stack down. Only Ctrl-C or SIGTERM stops the stack.

A Procfile line whose name holds ``{lb}`` is started once per load balancer
(``GREENLIGHT_LB_COUNT``), ``{lb}`` replaced by 0, 1, ... in its name and command: each
copy is a process of its own, restarted on its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from launcher.stack import StackConfig

_PR_SET_PDEATHSIG = 1
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
# A process that ran this long before exiting starts again after the first backoff.
STABLE_SECONDS = 60.0
_COLOURS = ["32", "36", "33", "35", "34", "31", "92", "96", "93"]
PER_LB = "{lb}"


@dataclass
class Entry:
    """One Procfile line: a name and a shell command."""

    name: str
    command: str


def read_procfile(path: Path, load_balancers: int = 1) -> list[Entry]:
    """Parse ``name: command`` lines, skipping blanks and comments.

    A line named ``<name>-{lb}`` gives ``load_balancers`` entries, ``{lb}`` replaced by
    each load balancer's index in the name and the command.
    """
    entries: list[Entry] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise SystemExit(f"{path}:{number}: expected 'name: command', got {raw!r}")
        name, command = name.strip(), command.strip()
        if PER_LB not in name:
            entries.append(Entry(name, command))
            continue
        for index in range(load_balancers):
            entries.append(
                Entry(name.replace(PER_LB, str(index)), command.replace(PER_LB, str(index)))
            )
    return entries


def _child_setup() -> None:
    # Own process group so one killpg stops a process and everything it forked;
    # the parent-death signal covers a supervisor killed with SIGKILL.
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Supervisor:
    """Runs the entries, multiplexes their output with a name prefix, stops them together."""

    def __init__(
        self, entries: list[Entry], *, grace: float = 10.0, backoff_first: float = BACKOFF_FIRST
    ) -> None:
        self.entries = entries
        self.grace = grace
        self.backoff_first = backoff_first
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}
        self.backoff: dict[str, float] = {}
        self.restart_at: dict[str, float] = {}
        self.restarts: dict[str, int] = {}
        self.stopping = False
        self.width = max(len(e.name) for e in entries) if entries else 0

    def _say(self, name: str, text: str, colour: str = "0") -> None:
        stamp = time.strftime("%H:%M:%S")
        prefix = f"{stamp} {name.ljust(self.width)} |"
        if sys.stdout.isatty():
            prefix = f"\033[{colour}m{prefix}\033[0m"
        try:
            sys.stdout.write(f"{prefix} {text}\n")
            sys.stdout.flush()
        except OSError:
            # The terminal or a pipe reader (tee) went away first; keep supervising.
            pass

    def start(self) -> None:
        """Start every entry."""
        for entry in self.entries:
            self._launch(entry)

    def _launch(self, entry: Entry) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {entry.command}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_child_setup,  # noqa: PLW1509 - setsid + prctl must run in the child
        )
        self.processes[entry.name] = process
        self.started_at[entry.name] = time.monotonic()
        self._say("system", f"{entry.name} started (pid {process.pid})")
        return process

    def _exited(self, name: str, code: int) -> None:
        """Plan the restart of a process that exited on its own."""
        now = time.monotonic()
        ran = now - self.started_at.get(name, now)
        delay = self.backoff.get(name, self.backoff_first)
        if ran >= STABLE_SECONDS:
            delay = self.backoff_first
        self.backoff[name] = min(delay * 2, BACKOFF_MAX)
        self.restart_at[name] = now + delay
        self.restarts[name] = self.restarts.get(name, 0) + 1
        self._say(
            "system",
            f"{name} exited with code {code} after {ran:.1f}s; restarting it in {delay:.0f}s",
        )

    def stop(self, reason: str) -> None:
        """SIGTERM every process group, then SIGKILL whatever is left after the grace period."""
        if self.stopping:
            return
        self.stopping = True
        self._say("system", f"stopping all processes: {reason}")
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for name, process in self.processes.items():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._say("system", f"{name} did not stop within {self.grace:.0f}s; killing it")
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def run(self) -> int:
        """Start, pump output until a signal or an unexpected exit, stop everything; the exit code."""
        selector = selectors.DefaultSelector()
        colours = {e.name: _COLOURS[i % len(_COLOURS)] for i, e in enumerate(self.entries)}
        reason: list[str] = []

        def on_signal(signum: int, _frame: object) -> None:
            reason.append(signal.Signals(signum).name)

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        buffers: dict[str, bytes] = {}

        def follow(name: str, process: subprocess.Popen[bytes]) -> None:
            assert process.stdout is not None
            os.set_blocking(process.stdout.fileno(), False)
            selector.register(process.stdout, selectors.EVENT_READ, name)
            buffers[name] = b""

        self.start()
        for name, process in self.processes.items():
            follow(name, process)
        entries = {entry.name: entry for entry in self.entries}
        while not reason:
            for key, _ in selector.select(timeout=0.2):
                name = key.data
                chunk = key.fileobj.read(65536)  # type: ignore[union-attr]
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                data = buffers[name] + chunk
                *lines, buffers[name] = data.split(b"\n")
                for line in lines:
                    self._say(name, line.decode(errors="replace").rstrip(), colours[name])
            now = time.monotonic()
            for name, process in list(self.processes.items()):
                if reason:
                    break
                if name in self.restart_at:
                    if now >= self.restart_at[name]:
                        del self.restart_at[name]
                        if process.stdout is not None:
                            with contextlib.suppress(KeyError, ValueError):
                                selector.unregister(process.stdout)
                            process.stdout.close()
                        follow(name, self._launch(entries[name]))
                elif process.poll() is not None:
                    self._exited(name, process.returncode)
        self.stop(reason[0])
        self._say("system", "all processes stopped")
        return 0


def main(argv: list[str]) -> None:
    """``python -m launcher.supervisor [Procfile]``."""
    procfile = Path(argv[0]) if argv else Path("Procfile")
    try:
        load_balancers = StackConfig.from_env().lb_count
    except ImproperlyConfigured as exc:
        raise SystemExit(f"greenlight: {exc}") from None
    raise SystemExit(Supervisor(read_procfile(procfile, load_balancers)).run())


if __name__ == "__main__":
    main(sys.argv[1:])
