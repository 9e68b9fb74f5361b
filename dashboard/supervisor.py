"""A small process supervisor for ``make run``: starts every Procfile entry, stops them all together.

Each process runs in its own process group with a parent-death signal, so Ctrl-C,
SIGTERM or even SIGKILL of the supervisor leaves nothing behind. When one process
exits on its own the whole stack is stopped: a half-running stack hides failures.
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

_PR_SET_PDEATHSIG = 1
_COLOURS = ["32", "36", "33", "35", "34", "31", "92", "96", "93"]


@dataclass
class Entry:
    """One Procfile line: a name and a shell command."""

    name: str
    command: str


def read_procfile(path: Path) -> list[Entry]:
    """Parse ``name: command`` lines, skipping blanks and comments."""
    entries: list[Entry] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise SystemExit(f"{path}:{number}: expected 'name: command', got {raw!r}")
        entries.append(Entry(name.strip(), command.strip()))
    return entries


def _child_setup() -> None:
    # Own process group so one killpg stops a process and everything it forked;
    # the parent-death signal covers a supervisor killed with SIGKILL.
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Supervisor:
    """Runs the entries, multiplexes their output with a name prefix, stops them together."""

    def __init__(self, entries: list[Entry], *, grace: float = 10.0) -> None:
        self.entries = entries
        self.grace = grace
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
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
            process = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {entry.command}"],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_child_setup,  # noqa: PLW1509 - setsid + prctl must run in the child
            )
            self.processes[entry.name] = process
            self._say("system", f"{entry.name} started (pid {process.pid})")

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
        self.start()
        buffers: dict[str, bytes] = {}
        for name, process in self.processes.items():
            assert process.stdout is not None
            os.set_blocking(process.stdout.fileno(), False)
            selector.register(process.stdout, selectors.EVENT_READ, name)
            buffers[name] = b""
        exit_code = 0
        while not reason:
            for key, _ in selector.select(timeout=0.5):
                name = key.data
                chunk = key.fileobj.read(65536)  # type: ignore[union-attr]
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                data = buffers[name] + chunk
                *lines, buffers[name] = data.split(b"\n")
                for line in lines:
                    self._say(name, line.decode(errors="replace").rstrip(), colours[name])
            for name, process in self.processes.items():
                if process.poll() is not None and not reason:
                    reason.append(f"{name} exited with code {process.returncode}")
                    exit_code = 1
        self.stop(reason[0])
        self._say("system", "all processes stopped")
        return exit_code


def main(argv: list[str]) -> None:
    """``python -m dashboard.supervisor [Procfile]``."""
    procfile = Path(argv[0]) if argv else Path("Procfile")
    raise SystemExit(Supervisor(read_procfile(procfile)).run())


if __name__ == "__main__":
    main(sys.argv[1:])
