"""HAProxy's master CLI: commands to the current worker, and what the workers report.

The master listens on a Unix socket; ``@1 <command>`` is forwarded to the current worker
(runtime API), bare commands (``show proc``, ``reload``) are the master's own.
"""

from __future__ import annotations

import contextlib
import http.client
import re
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
# Last in every batch: it always answers (the version), after the commands before it ran.
_PROOF = "show version"
_VERSION = re.compile(r"^\d+\.\d+")

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


def run_commands(socket_path: Path, commands: Sequence[str], retry_for: float = 2.0) -> None:
    """Send runtime API ``commands`` to the current worker, in order, in batches.

    Each batch ends with ``show version``: most commands answer nothing when they succeed,
    and a master still starting after a reload closes connections without forwarding them,
    so only the worker's version at the end proves that the batch ran. A batch nothing
    answered at all is sent again for ``retry_for`` seconds. Raises RuntimeAPIError when a
    command was refused, the master could not be reached, or the answer stopped before the
    version (the batch's other commands may have run then: the caller reloads to a known
    state).
    """
    for first in range(0, len(commands), _BATCH):
        batch = [*commands[first : first + _BATCH], _PROOF]
        line = "; ".join(f"@1 {command}" for command in batch)
        answer = _answered(socket_path, line, retry_for)
        texts = [text.strip() for text in answer.splitlines() if text.strip()]
        if not texts or not _VERSION.match(texts[-1]):
            raise RuntimeAPIError(
                f"the HAProxy worker did not confirm {line!r} (answer: {answer[:300]!r})"
            )
        errors = [text for text in texts[:-1] if text not in _SUCCESS]
        if errors:
            raise RuntimeAPIError(f"the runtime API refused {line!r}: {' '.join(errors)[:500]}")


def _answered(socket_path: Path, line: str, retry_for: float) -> str:
    """The master's answer to ``line``; sent again while it answers nothing (still starting)."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            answer = master_command(
                socket_path, line, retry_for=max(0.0, deadline - time.monotonic())
            )
        except OSError as exc:
            raise RuntimeAPIError(f"could not reach the HAProxy master socket: {exc}") from exc
        if answer.strip() or time.monotonic() >= deadline:
            return answer
        time.sleep(0.005)


def show_map(socket_path: Path, map_file: Path, retry_for: float = 2.0) -> dict[str, str]:
    """The current worker's entries of ``map_file`` (key -> value).

    Raises RuntimeAPIError when the worker did not answer or refused.
    """
    line = f"@1 show map {map_file}; @1 {_PROOF}"
    answer = _answered(socket_path, line, retry_for)
    texts = [text.strip() for text in answer.splitlines() if text.strip()]
    if not texts or not _VERSION.match(texts[-1]):
        raise RuntimeAPIError(
            f"the HAProxy worker did not show {map_file} (answer: {answer[:300]!r})"
        )
    entries: dict[str, str] = {}
    for text in texts[:-1]:
        fields = text.split()
        if len(fields) != 3 or not fields[0].startswith("0x"):
            raise RuntimeAPIError(f"the runtime API refused to show {map_file}: {text[:300]}")
        if fields[1] in entries:
            raise RuntimeAPIError(f"{map_file} holds {fields[1]} twice in the current worker")
        entries[fields[1]] = fields[2]
    return entries


def accepting_old_workers(socket_path: Path) -> list[str] | None:
    """Pids of workers of older configurations not yet stopping (None if HAProxy did not say).

    A worker stops accepting connections when it starts stopping; until then it serves
    new connections with its own configuration and map.
    """
    try:
        answer = master_command(socket_path, "show proc", timeout=2.0)
    except OSError:
        return None
    if not answer.strip():
        return None  # a master still starting after a reload
    pids, in_old = [], False
    for line in answer.splitlines():
        if line.startswith("#"):
            in_old = line.strip() == "# old workers"
        elif in_old and line.split():
            pids.append(line.split()[0])
    accepting = []
    for pid in pids:
        try:
            info = master_command(socket_path, f"@!{pid} show info", timeout=2.0)
        except OSError:
            return None
        if not info.strip():
            return None
        if "Stopping: 1" not in info.splitlines() and f"Pid: {pid}" in info.splitlines():
            accepting.append(pid)
    return accepting


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
