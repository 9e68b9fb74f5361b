"""proxysync: one etcd watch on the prefix -> render -> runtime map update, or full reload.

The render is a configuration (every backend) and a frontends map (hostname -> backend).
When only the map changed, it is applied to the running worker through the master CLI
(``@1 add/set/del map``) and written to disk, without ``haproxy -c`` or a reload; if that
fails, and for any other change, the configuration is validated with ``haproxy -c``,
written atomically and HAProxy reloaded. Once HAProxy's worker serves the render,
``<prefix>/applied`` is written; the workflow waits for that record. An invalid render
is refused and logged (HAProxy keeps the last good configuration) and recorded under
``applied.rejected``.
Once no HAProxy worker of an older configuration is left (``show proc`` on the master
CLI), ``<prefix>/drained`` is written: only then may old pods go without cutting off
requests that the old worker still carries.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deployer.errors import StoreError
from deployer.etcdstore import EtcdStore, Snapshot, event_key
from deployer.lbconfig import (
    REVISION_PATH,
    checked_servers,
    map_text,
    render_config,
    render_map,
    safe_name,
)

logger = logging.getLogger(__name__)


class ReloadError(Exception):
    """HAProxy refused the configuration or did not come back with it."""


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


@dataclass(frozen=True)
class Render:
    """One snapshot's configuration and frontends map."""

    config: str
    # Hostname -> HAProxy backend name, as in the map file.
    routes: dict[str, str]
    # HAProxy backend name -> its health-checked ``backend/server`` names.
    checked: dict[str, list[str]]

    @property
    def stable(self) -> str:
        """The configuration without its revision line: equal ones need no reload."""
        return "\n".join(line for line in self.config.splitlines() if REVISION_PATH not in line)

    @property
    def map_text(self) -> str:
        """The map file's text."""
        return map_text(self.routes)


def map_commands(
    old: Mapping[str, str], new: Mapping[str, str], checked: Mapping[str, list[str]], map_file: Path
) -> list[str]:
    """Runtime API commands turning the running map ``old`` into ``new``.

    Servers of a backend that gets its first route are marked up first: HAProxy may have
    marked them down while the pods were still starting, and the workflow has just
    health-checked them; a reload would also have started them up.
    """
    commands = [
        f"set server {server} health up"
        for backend in sorted(set(new.values()) - set(old.values()))
        for server in checked.get(backend, [])
    ]
    for host, backend in new.items():
        if host not in old:
            commands.append(f"add map {map_file} {host} {backend}")
        elif old[host] != backend:
            commands.append(f"set map {map_file} {host} {backend}")
    commands += [f"del map {map_file} {host}" for host in old if host not in new]
    return commands


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


def backend_sessions(socket_path: Path, backends: set[str]) -> int | None:
    """Requests the current HAProxy worker still carries to ``backends`` (None if unknown)."""
    try:
        answer = master_command(socket_path, "@1 show stat", timeout=2.0)
    except OSError:
        return None
    lines = answer.splitlines()
    if not lines or not lines[0].startswith("# "):
        return None
    header = lines[0][2:].split(",")
    if "scur" not in header:
        return None
    scur = header.index("scur")
    total = 0
    for line in lines[1:]:
        fields = line.split(",")
        if len(fields) > scur and fields[1] == "BACKEND" and fields[0] in backends:
            total += int(fields[scur] or 0)
    return total


class ProxySync:
    """Keeps one HAProxy's configuration equal to the records in etcd."""

    def __init__(
        self, store: EtcdStore, target: HAProxyTarget, drain_timeout: float = 60.0
    ) -> None:
        self.store = store
        self.target = target
        self.drain_timeout = drain_timeout
        # What the running HAProxy worker serves: the last render reloaded or mapped.
        self._applied: Render | None = None
        self._stop = threading.Event()
        self._cancel: list[object] = []
        self._drain = threading.Condition()
        self._drain_target = 0
        self._drained = 0
        # HAProxy backend -> revision of the runtime map update that took its last route:
        # the worker may still carry requests to it, which "drained" must wait for too.
        self._unrouted: dict[str, int] = {}

    def _note_applied(
        self, revision: int, running: Render | None = None, render: Render | None = None
    ) -> None:
        with self._drain:
            if render is None:
                pass  # nothing changed in the running worker
            elif running is None:
                self._unrouted = {}  # a reload: the old workers carry what the old map routed
            else:
                routed = set(render.routes.values())
                for backend in set(running.routes.values()) - routed:
                    self._unrouted[backend] = revision
                for backend in routed:
                    self._unrouted.pop(backend, None)
            self._drain_target = max(self._drain_target, revision)
            self._drain.notify_all()

    def _draining(self) -> tuple[int | None, int | None]:
        """Old workers left and requests to unrouted backends (None when unknown)."""
        left = old_workers(self.target.master_socket)
        with self._drain:
            unrouted = set(self._unrouted)
        if not unrouted:
            return left, 0
        return left, backend_sessions(self.target.master_socket, unrouted)

    def drain_once(self) -> int | None:
        """Wait until no old worker is left, then write ``drained``; return the revision written."""
        with self._drain:
            target = self._drain_target
        if target <= self._drained:
            return None
        deadline = time.monotonic() + self.drain_timeout
        delay = 0.01
        # HAProxy offers nothing to watch: ask the master with a short backoff.
        while not self._stop.is_set():
            left, sessions = self._draining()
            if left == 0 and sessions == 0:
                break
            if time.monotonic() >= deadline:
                logger.warning(
                    "%s old HAProxy workers and %s requests to unrouted backends left after "
                    "%.0fs; reporting drained anyway",
                    left,
                    sessions,
                    self.drain_timeout,
                )
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        with self._drain:
            self._unrouted = {b: r for b, r in self._unrouted.items() if r > target}
        self.store.put_drained(target)
        self._drained = target
        return target

    def _drain_loop(self) -> None:
        while not self._stop.is_set():
            with self._drain:
                self._drain.wait_for(
                    lambda: self._stop.is_set() or self._drain_target > self._drained, timeout=1.0
                )
            if self._stop.is_set():
                return
            try:
                self.drain_once()
            except StoreError:
                logger.warning("could not write drained; retrying", exc_info=True)
                self._stop.wait(0.5)

    def render(self, snapshot: Snapshot) -> Render:
        """The complete configuration and map for ``snapshot``."""
        config = render_config(
            lb_port=self.target.lb_port,
            stats_port=self.target.stats_port,
            backends=snapshot.backends,
            map_path=str(self.target.map_file),
            bind_host=self.target.bind_host,
            revision=snapshot.revision,
        )
        routes = render_map(list(snapshot.frontends.values()), snapshot.backends)
        checked = {
            safe_name(name): checked_servers(name, record)
            for name, record in snapshot.backends.items()
        }
        return Render(config, routes, checked)

    def validate(self, text: str) -> None:
        """Run ``haproxy -c`` on ``text``; ReloadError with HAProxy's output when invalid."""
        directory = self.target.config.parent
        with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".check.cfg") as candidate:
            candidate.write(text)
            candidate.flush()
            result = subprocess.run(
                [self.target.haproxy_bin, "-c", "-q", "-f", candidate.name],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise ReloadError(f"haproxy -c refused the configuration: {output}")

    def write(self, text: str, path: Path | None = None) -> None:
        """Replace the configuration (or ``path``) atomically: write a sibling, rename over."""
        path = path or self.target.config
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
        try:
            # No fsync: it is on the switch's critical path, and after a crash proxysync
            # renders the file again from etcd before HAProxy needs it.
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def update_map(self, running: Render, render: Render) -> float:
        """Apply ``render``'s map to the running worker and to the map file; return seconds.

        Raises ReloadError when the runtime API refused a command or could not be reached
        (the map may then be half-updated: the caller reloads).
        """
        started = time.monotonic()
        map_file = self.target.map_file
        # The file first: the next reload (or a restarted HAProxy) reads it.
        self.write(render.map_text, map_file)
        commands = map_commands(running.routes, render.routes, render.checked, map_file)
        # The master forwards ``@1 <command>`` to the current worker; batches keep each
        # line well under HAProxy's buffer size.
        for first in range(0, len(commands), 50):
            line = "; ".join(f"@1 {command}" for command in commands[first : first + 50])
            try:
                answer = master_command(self.target.master_socket, line, retry_for=2.0)
            except OSError as exc:
                raise ReloadError(f"could not reach the HAProxy master socket: {exc}") from exc
            errors = [text.strip() for text in answer.splitlines() if text.strip()]
            if errors:
                raise ReloadError(f"the runtime API refused {line!r}: {' '.join(errors)[:500]}")
        return time.monotonic() - started

    def reload(self, revision: int) -> float:
        """Reload the master-worker HAProxy and wait until it serves ``revision``; return seconds."""
        started = time.monotonic()
        try:
            master_command(self.target.master_socket, "reload")
        except OSError as exc:
            raise ReloadError(f"could not reach the HAProxy master socket: {exc}") from exc
        deadline = started + self.target.reload_timeout
        # HAProxy offers nothing to watch: ask the stats frontend every few milliseconds
        # (a reload takes ~100 ms; a longer backoff would add to every switch).
        while time.monotonic() < deadline:
            if served_revision(self.target.bind_host, self.target.stats_port) == revision:
                return time.monotonic() - started
            time.sleep(0.005)
        raise ReloadError(f"HAProxy did not serve revision {revision} within the timeout")

    def apply(self, snapshot: Snapshot) -> bool:
        """Apply ``snapshot`` (through the runtime API when only the map changed); False when refused.

        Raises ReloadError when HAProxy could not be reloaded (not running yet, say).
        """
        render = self.render(snapshot)
        running = self._applied
        if running is not None and render.stable == running.stable:
            if render.routes == running.routes:
                self.store.put_applied(snapshot.revision, reloaded=False)
                self._note_applied(snapshot.revision)
                return True
            try:
                seconds = self.update_map(running, render)
            except ReloadError as exc:
                logger.warning(
                    "revision %s: runtime map update failed, reloading instead: %s",
                    snapshot.revision,
                    exc,
                )
            else:
                self._applied = render
                self.store.put_applied(
                    snapshot.revision, reloaded=False, map_seconds=round(seconds, 4)
                )
                self._note_applied(snapshot.revision, running, render)
                logger.info(
                    "applied revision %s (%d routes) through the runtime API in %.1f ms",
                    snapshot.revision,
                    len(render.routes),
                    seconds * 1000,
                )
                return True
        return self.apply_with_reload(snapshot, render)

    def apply_with_reload(self, snapshot: Snapshot, render: Render) -> bool:
        """Validate, write and reload ``render``, then acknowledge it; False when refused."""
        started = time.monotonic()
        # haproxy -c opens the map the configuration names, so it is written first.
        self.write(render.map_text, self.target.map_file)
        try:
            self.validate(render.config)
        except ReloadError as exc:
            logger.error("revision %s refused: %s", snapshot.revision, exc)
            if self._applied is not None:
                # The running worker keeps its map; the file must match it for the next reload.
                self.write(self._applied.map_text, self.target.map_file)
            previous = snapshot.applied or {}
            self.store.put_applied(
                int(previous.get("revision", 0)),
                rejected={"revision": snapshot.revision, "error": str(exc)[:2000]},
            )
            return False
        validated = time.monotonic()
        self.write(render.config)
        seconds = self.reload(snapshot.revision)  # ReloadError: the caller retries
        self._applied = render
        self.store.put_applied(snapshot.revision, reloaded=True, reload_seconds=round(seconds, 4))
        self._note_applied(snapshot.revision, None, render)
        logger.info(
            "applied revision %s (%d routes): validated in %.0f ms, reloaded in %.0f ms",
            snapshot.revision,
            len(render.routes),
            (validated - started) * 1000,
            seconds * 1000,
        )
        return True

    def stop(self) -> None:
        """Make :meth:`run` return (from a signal handler or another thread)."""
        self._stop.set()
        with self._drain:
            self._drain.notify_all()
        for cancel in list(self._cancel):
            with contextlib.suppress(Exception):
                cancel()  # type: ignore[operator]

    def run(self) -> None:
        """Apply the current state, then follow the watch until stopped; survive etcd outages."""
        drainer = threading.Thread(target=self._drain_loop, name="haproxy-drain", daemon=True)
        drainer.start()
        backoff = 0.2
        while not self._stop.is_set():
            try:
                self._follow()
                backoff = 0.2
            except StoreError as exc:
                # HAProxy keeps serving the last good configuration meanwhile.
                logger.warning("etcd unavailable (%s); retrying in %.1fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def apply_current(self) -> None:
        """Apply the current state; retry while HAProxy cannot be reloaded (e.g. still starting)."""
        backoff = 0.1
        while not self._stop.is_set():
            try:
                self.apply(self.store.snapshot())
                return
            except ReloadError as exc:
                logger.warning("HAProxy not reloaded (%s); retrying in %.1fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _follow(self) -> None:
        snapshot = self.store.snapshot()
        self.apply_current()
        responses, cancel = self.store.watch_prefix(snapshot.revision + 1)
        self._cancel.append(cancel)
        try:
            for response in responses:
                if self._stop.is_set():
                    return
                events = getattr(response, "events", [])
                own = {self.store.applied_key, self.store.drained_key}
                if events and all(event_key(e) in own for e in events):
                    continue  # our own acknowledgements
                # A fresh snapshot includes every write up to now: bursts collapse into one reload.
                self.apply_current()
        except Exception as exc:
            if self._stop.is_set():
                return
            raise StoreError(f"watch ended: {exc}") from exc
        finally:
            self._cancel.remove(cancel)
            with contextlib.suppress(Exception):
                cancel()
