"""HAProxy's master CLI: commands to the current worker, and what the workers report.

The master listens on a Unix socket; ``@1 <command>`` is forwarded to the current worker
(runtime API), bare commands (``show proc``, ``reload``) are the master's own.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deployer.lbconfig import REVISION_PATH

# What the runtime API answers on success to the commands Greenlight sends; every other
# command answers nothing when it succeeds.
_SUCCESS = {"New server registered.", "Server deleted."}
# Commands per master connection: each line stays well under HAProxy's buffer size.
_BATCH = 50

# (backend, server) -> current sessions; servers are keyed by their own name, a backend's
# total by "BACKEND".
Sessions = dict[tuple[str, str], int]


@dataclass(frozen=True)
class HAProxyTarget:
    """Where and how to run the configuration: paths, ports and the master CLI socket."""

    config: Path
    master_socket: Path
    lb_port: int
    stats_port: int
    haproxy_bin: str = "haproxy"
    bind_host: str = "127.0.0.1"
    reload_timeout: float = 10.0

    @property
    def map_file(self) -> Path:
        """The frontends map the configuration routes by, next to it."""
        return self.config.parent / "frontends.map"


class RuntimeAPIError(Exception):
    """The runtime API refused a command or could not be reached."""


def _connect(socket_path: Path, timeout: float, retry_for: float) -> socket.socket:
    deadline = time.monotonic() + retry_for
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(timeout)
        try:
            conn.connect(str(socket_path))
            return conn
        except (ConnectionRefusedError, FileNotFoundError):
            conn.close()
            # The master re-executes itself on a reload and listens again a few ms later.
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def master_command(
    socket_path: Path, command: str, timeout: float = 5.0, *, retry_for: float = 0.0
) -> str:
    """Send one command to HAProxy's master CLI and return its answer.

    ``retry_for`` seconds of connection refusals are waited out (a master still reloading).
    """
    with _connect(socket_path, timeout, retry_for) as conn:
        conn.sendall(command.encode() + b"\n")
        # The master answers once our side is closed for writing.
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := conn.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def run_commands(socket_path: Path, commands: Sequence[str]) -> None:
    """Send runtime API ``commands`` to the current worker, in order, in batches.

    Raises RuntimeAPIError when one was refused or the master could not be reached; the
    batch's other commands have run then (the caller reloads to a known state).
    """
    for first in range(0, len(commands), _BATCH):
        line = "; ".join(f"@1 {command}" for command in commands[first : first + _BATCH])
        try:
            answer = master_command(socket_path, line, retry_for=2.0)
        except OSError as exc:
            raise RuntimeAPIError(f"could not reach the HAProxy master socket: {exc}") from exc
        errors = [
            text.strip()
            for text in answer.splitlines()
            if text.strip() and text.strip() not in _SUCCESS
        ]
        if errors:
            raise RuntimeAPIError(f"the runtime API refused {line!r}: {' '.join(errors)[:500]}")


def served_revision(host: str, port: int, timeout: float = 1.0) -> int | None:
    """The revision HAProxy's current worker serves on the stats port (None if unknown)."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", REVISION_PATH, headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read().strip()
        return int(body) if response.status == 200 and body.isdigit() else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def old_workers(socket_path: Path) -> int | None:
    """How many HAProxy workers of older configurations still run (None if unknown)."""
    try:
        answer = master_command(socket_path, "show proc", timeout=2.0)
    except OSError:
        return None
    count, in_old = 0, False
    for line in answer.splitlines():
        if line.startswith("#"):
            in_old = line.strip() == "# old workers"
        elif in_old and line.strip():
            count += 1
    return count


def sessions(socket_path: Path) -> Sessions | None:
    """Current sessions of every backend and server of the current worker (None if unknown).

    A server counts its queued requests too: they are bound to it.
    """
    try:
        answer = master_command(socket_path, "@1 show stat", timeout=2.0)
    except OSError:
        return None
    lines = answer.splitlines()
    if not lines or not lines[0].startswith("# "):
        return None
    header = lines[0][2:].split(",")
    if "scur" not in header or "qcur" not in header:
        return None
    scur, qcur = header.index("scur"), header.index("qcur")
    counts: Sessions = {}
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) <= max(scur, qcur) or fields[1] == "FRONTEND":
            continue
        count = int(fields[scur] or 0)
        if fields[1] != "BACKEND":
            count += int(fields[qcur] or 0)
        counts[(fields[0], fields[1])] = count
    return counts


def backend_sessions(socket_path: Path, backends: set[str]) -> int | None:
    """Requests the current HAProxy worker still carries to ``backends`` (None if unknown)."""
    counts = sessions(socket_path)
    if counts is None:
        return None
    return sum(counts.get((backend, "BACKEND"), 0) for backend in backends)
