"""proxysync: one etcd watch on the prefix -> full render -> ``haproxy -c`` -> atomic write -> reload.

After HAProxy's new worker answers with the rendered revision, ``<prefix>/applied`` is
written; the workflow waits for that record. An invalid render is refused and logged
(HAProxy keeps the last good configuration) and recorded under ``applied.rejected``.
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
from dataclasses import dataclass
from pathlib import Path

from deployer.errors import StoreError
from deployer.etcdstore import EtcdStore, Snapshot, event_key
from deployer.lbconfig import REVISION_PATH, render_config

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


def master_command(socket_path: Path, command: str, timeout: float = 5.0) -> str:
    """Send one command to HAProxy's master CLI and return its answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        conn.connect(str(socket_path))
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


class ProxySync:
    """Keeps one HAProxy's configuration equal to the records in etcd."""

    def __init__(
        self, store: EtcdStore, target: HAProxyTarget, drain_timeout: float = 60.0
    ) -> None:
        self.store = store
        self.target = target
        self.drain_timeout = drain_timeout
        self._applied_routes: str | None = None
        self._stop = threading.Event()
        self._cancel: list[object] = []
        self._drain = threading.Condition()
        self._drain_target = 0
        self._drained = 0

    def _note_applied(self, revision: int) -> None:
        with self._drain:
            self._drain_target = max(self._drain_target, revision)
            self._drain.notify_all()

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
            left = old_workers(self.target.master_socket)
            if left == 0:
                break
            if time.monotonic() >= deadline:
                logger.warning(
                    "%s old HAProxy workers still run after %.0fs; reporting drained anyway",
                    left,
                    self.drain_timeout,
                )
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
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

    def render(self, snapshot: Snapshot) -> str:
        """The complete configuration for ``snapshot``."""
        return render_config(
            lb_port=self.target.lb_port,
            stats_port=self.target.stats_port,
            frontends=list(snapshot.frontends.values()),
            backends=snapshot.backends,
            bind_host=self.target.bind_host,
            revision=snapshot.revision,
        )

    @staticmethod
    def _routes(text: str) -> str:
        # The configuration without its revision line: equal routes need no reload.
        return "\n".join(line for line in text.splitlines() if REVISION_PATH not in line)

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

    def write(self, text: str) -> None:
        """Replace the configuration file atomically (write a sibling, rename over)."""
        path = self.target.config
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".haproxy.", suffix=".cfg")
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
        """Render, validate, write, reload and acknowledge ``snapshot``; False when refused.

        Raises ReloadError when HAProxy could not be reloaded (not running yet, say).
        """
        text = self.render(snapshot)
        routes = self._routes(text)
        if routes == self._applied_routes:
            self.store.put_applied(snapshot.revision, reloaded=False)
            self._note_applied(snapshot.revision)
            return True
        started = time.monotonic()
        try:
            self.validate(text)
        except ReloadError as exc:
            logger.error("revision %s refused: %s", snapshot.revision, exc)
            previous = snapshot.applied or {}
            self.store.put_applied(
                int(previous.get("revision", 0)),
                rejected={"revision": snapshot.revision, "error": str(exc)[:2000]},
            )
            return False
        validated = time.monotonic()
        self.write(text)
        seconds = self.reload(snapshot.revision)  # ReloadError: the caller retries
        self._applied_routes = routes
        self.store.put_applied(snapshot.revision, reloaded=True, reload_seconds=round(seconds, 4))
        self._note_applied(snapshot.revision)
        logger.info(
            "applied revision %s (%d frontends): validated in %.0f ms, reloaded in %.0f ms",
            snapshot.revision,
            len(snapshot.frontends),
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
