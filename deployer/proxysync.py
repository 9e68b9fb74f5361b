"""proxysync: one etcd watch on the prefix -> render -> runtime API changes, or full reload.

The render is a configuration (every backend) and a frontends map (hostname -> backend,
with two entries per preview: its hostname and ``<frontend>@<version>``, deployer.preview).
When only the map and the server lists of existing backends changed, the running worker
is changed through the master CLI (``@1 add/set/del map``; ``add server`` then ``enable
health`` and ``enable server`` for a new server; ``set server ... state drain`` for a
removed one) and the files are written for the next reload, without ``haproxy -c`` or a
reload. If the runtime API refuses, and for any other change, the configuration is
validated with ``haproxy -c``, written atomically and HAProxy reloaded. A reload counts
as applied once the new worker serves the revision, every old worker has stopped
accepting connections (each serves its own map until then), and the new worker's map
(``show map``) equals the render; a difference is corrected through the runtime API and
logged. Runtime commands are confirmed by the worker (haproxycli.run_commands): a master
still starting after a reload drops what it is sent unanswered.

Each proxysync is one load balancer of the fleet (deployer.lbregistration): it registers
under ``<prefix>/lbs/<id>`` on an etcd lease, and its acknowledgements live on that lease.
Once HAProxy's worker serves the render, ``<prefix>/applied/<id>`` is written::

    {"revision": R, "at": ISO time, "reloaded": bool, "runtime_seconds" | "reload_seconds": s,
     "left_rotation": {"<backend record>": {"<server>": sessions when set to drain}}}

(no seconds when nothing changed.) ``left_rotation`` names the servers that left
rotation at R or before, in the last minute
(so that a later revision's acknowledgement does not hide them from whoever waited for
R); a session count is null when HAProxy did not say. The workflow waits for that record.
An invalid render is refused and logged (HAProxy keeps the last good configuration) and
recorded under ``applied.rejected``.

Bursts of changes coalesce: the watch only marks that something changed, and each apply
reads everything written up to then; a render that needs a reload waits until
``min_reload_interval`` (100 ms) has passed since the last reload began, and then takes
in everything that arrived meanwhile, so a load balancer reloads at most once per
interval. Changes the running worker can take through the runtime API (switches,
servers coming and going) never wait.

Nor do they wait for another record's reload: when a render needs one (a new backend,
a deleted one), the part of it the running worker can take is applied first through the
runtime API (lbrender.runtime_part: routes to backends it has, servers added to them;
removed servers wait for the reload, which drains them), and acknowledged as such::

    "runtime": {"revision": S, "pending": ["backends/<new>", "frontends/<host>", ...]}

beside the last full acknowledgement: every record of revision S but those listed is
served as at S. A wait on given records (a switch waits on its frontend) counts that
(lbfleet.reaches); the reload follows, and its acknowledgement covers everything.

``<prefix>/drained/<id>`` says from which revision nothing older carries requests in
this load balancer (deployer.drainreport).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from deployer.drainreport import DrainReport
from deployer.errors import StoreError
from deployer.etcdstore import EtcdStore, Snapshot, event_key
from deployer.haproxycli import (
    HAProxyTarget,
    RuntimeAPIError,
    Sessions,
    accepting_old_workers,
    master_command,
    run_commands,
    served_revision,
    sessions,
    show_map,
)
from deployer.lbconfig import ServerSpec
from deployer.lbregistration import Identity, Registration
from deployer.lbrender import (
    Render,
    ServerChanges,
    backend_at_line,
    map_commands,
    pending_records,
    removed_servers,
    render,
    runtime_part,
    server_changes,
)
from deployer.serverdrain import LeavingServer, ServerDrains

logger = logging.getLogger(__name__)


class ReloadError(Exception):
    """HAProxy refused the configuration or did not come back with it."""


# How many times one render is narrowed down to what HAProxy accepts before it is refused.
MAX_ISOLATIONS = 5
# "[/path/to/file.cfg:123]" in an alert: the line HAProxy complains about.
_LINE = re.compile(r"\[[^\]:]+:(\d+)\]")


def _as_key(record: Any) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def _alert_text(line: str) -> str:
    """An alert without its timestamp and process prefix."""
    return line.split(" : ", 1)[-1].strip() if " : " in line else line.strip()


class ProxySync:
    """Keeps one HAProxy's configuration equal to the records in etcd."""

    def __init__(
        self,
        store: EtcdStore,
        target: HAProxyTarget,
        drain_timeout: float = 60.0,
        *,
        identity: Identity | None = None,
        min_reload_interval: float = 0.1,
    ) -> None:
        self.store = store
        self.target = target
        self.drain_timeout = drain_timeout
        self.identity = identity or Identity(
            "lb-0",
            f"http://{target.bind_host}:{target.lb_port}",
            stats_address=f"http://{target.bind_host}:{target.stats_port}",
        )
        self.registration = Registration(
            store, self.identity, target.master_socket, self.request_reapply
        )
        self.min_reload_interval = min_reload_interval
        self._last_reload_started = -min_reload_interval
        # The revision last acknowledged: a refusal is recorded beside it.
        self._acknowledged = 0
        # Set when anything under frontends/ or backends/ changed (or a reapply is due).
        self._changed = threading.Event()
        # Set when HAProxy must get the whole configuration through a reload.
        self._reapply = threading.Event()
        # What the running HAProxy worker serves: the last render reloaded or mapped, and
        # the snapshot it was rendered from.
        self._applied: Render | None = None
        self._applied_snapshot: Snapshot | None = None
        # The render the drain report last heard of: the routes it counts unrouted from.
        self._noted: Render | None = None
        # The last full acknowledgement's record, repeated beside a runtime one.
        self._ack_record: dict[str, Any] = {}
        # The revision of the last runtime acknowledgement (of part of a render).
        self._runtime_revision = 0
        self._runtime_ack: dict[str, Any] | None = None
        # The routing change count of the snapshot being applied, and of the last one
        # acknowledged: a load balancer's lag is counted from the latter.
        self._changes = 0
        self._changes_acknowledged = 0
        self._stop = threading.Event()
        self._cancel: list[object] = []
        # Held while the running worker is changed (apply, reload, a server's deletion).
        self._mutations = threading.Lock()
        self.leaving = ServerDrains(target.master_socket, self._mutations)
        self.drains = DrainReport(
            target.master_socket, self.leaving, self.registration.drained, self._stop, drain_timeout
        )
        # Backends ``haproxy -c`` refused: name -> (the record as JSON, HAProxy's words).
        # Left out while the record stays as it is, so one app never blocks the others.
        self._refused: dict[str, tuple[str, str]] = {}
        self._reported: dict[str, str] = {}

    def render(self, snapshot: Snapshot) -> Render:
        """The complete configuration and map for ``snapshot``, without refused records."""
        refused = {
            name: message
            for name, (record, message) in self._refused.items()
            if _as_key(snapshot.backends.get(name)) == record
        }
        running = self._applied.routes if self._applied is not None else None
        result = render(snapshot, self.target, refused, running)
        if result.skipped != self._reported:
            for key, reason in sorted(result.skipped.items()):
                if self._reported.get(key) != reason:
                    logger.warning("skipping record %s: %s", key, reason)
            self._reported = dict(result.skipped)
        return result

    def validate(self, text: str) -> None:
        """Run ``haproxy -c`` on ``text``; ReloadError with HAProxy's output when invalid."""
        directory = self.target.config.parent
        with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".check.cfg") as candidate:
            candidate.write(text)
            candidate.flush()
            # Without -q: HAProxy's alerts name the file and line, and say what is wrong.
            result = subprocess.run(
                [self.target.haproxy_bin, "-c", "-f", candidate.name],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise ReloadError(f"haproxy -c refused the configuration: {output}")

    def isolate(self, snapshot: Snapshot, render: Render, error: ReloadError) -> Render | None:
        """The render without the backends HAProxy's message blames; None when none is to blame."""
        blamed: dict[str, list[str]] = {}
        for line in str(error).splitlines():
            for number in _LINE.findall(line):
                backend = backend_at_line(render.config, int(number))
                if backend is not None and backend in render.names:
                    blamed.setdefault(render.names[backend], []).append(_alert_text(line))
        if not blamed:
            return None
        for name, lines in blamed.items():
            message = "haproxy -c refused it: " + " ".join(lines)[:1000]
            self._refused[name] = (_as_key(snapshot.backends.get(name)), message)
            logger.error(
                "revision %s: leaving backend %s out: %s", snapshot.revision, name, message
            )
        return self.render(snapshot)

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
        try:
            run_commands(self.target.master_socket, commands)
        except RuntimeAPIError as exc:
            raise ReloadError(str(exc)) from exc
        return time.monotonic() - started

    def update_servers(
        self, changes: ServerChanges, render: Render, revision: int
    ) -> list[LeavingServer]:
        """Add and drain servers in the running worker; return the servers now leaving.

        A new server enters rotation at once (the record lists ready pods only); a removed
        one gets no new request. The caller registers the leaving servers once the whole
        revision is applied. Raises ReloadError when the runtime API refused a command or
        could not be reached (the servers may then be half-updated: the caller reloads).
        """
        present = self.leaving.in_worker()
        commands: list[str] = []
        returning = []
        for backend, spec in changes.added:
            leaving = present.get((backend, spec.name))
            if leaving is None:
                # Added servers start in maintenance with their check disabled.
                commands += [
                    spec.add_command(backend),
                    f"enable health {backend}/{spec.name}",
                    f"enable server {backend}/{spec.name}",
                ]
            elif leaving.spec.line == spec.line:
                # Still draining (or left in maintenance): it only needs to take requests again.
                commands.append(f"set server {backend}/{spec.name} state ready")
                returning.append(leaving.key)
            else:
                raise ReloadError(f"{leaving.name} is still leaving with other settings")
        commands += [
            f"set server {backend}/{spec.name} state drain" for backend, spec in changes.removed
        ]
        try:
            run_commands(self.target.master_socket, commands)
        except RuntimeAPIError as exc:
            raise ReloadError(str(exc)) from exc
        for key in returning:
            self.leaving.take_back(key)
        if not changes.removed:
            return []
        # Requests already running on them finish; the drain thread waits for them.
        counts = sessions(self.target.master_socket)
        return self._leaving(changes.removed, render, revision, counts)

    def _leaving(
        self,
        removed: list[tuple[str, ServerSpec]],
        render: Render,
        revision: int,
        counts: Sessions | None,
    ) -> list[LeavingServer]:
        now = time.monotonic()
        return [
            LeavingServer(
                backend=backend,
                spec=spec,
                record=render.names.get(backend, backend),
                revision=revision,
                sessions=None if counts is None else counts.get((backend, spec.name), 0),
                started=now,
                deadline=now + self.drain_timeout,
            )
            for backend, spec in removed
        ]

    def reload(self, revision: int) -> float:
        """Reload the master-worker HAProxy and wait until it serves ``revision``; return seconds."""
        started = time.monotonic()
        self._last_reload_started = started
        try:
            master_command(self.target.master_socket, "reload")
        except OSError as exc:
            raise ReloadError(f"could not reach the HAProxy master socket: {exc}") from exc
        self.registration.note_reload()
        # Servers leaving the replaced worker finish with it; none of their deletions may
        # reach the new one, which may have a server of the same name.
        self.leaving.hand_to_old_worker()
        deadline = started + self.target.reload_timeout
        # HAProxy offers nothing to watch: ask the stats frontend every few milliseconds
        # (a reload takes ~100 ms; a longer backoff would add to every switch).
        while time.monotonic() < deadline:
            if served_revision(self.target.bind_host, self.target.stats_port) == revision:
                break
            time.sleep(0.005)
        else:
            raise ReloadError(f"HAProxy did not serve revision {revision} within the timeout")
        # The old worker accepts connections, with its own map, until the master tells it
        # to stop (once the new one is ready); only then does one map serve every request.
        while time.monotonic() < deadline:
            if accepting_old_workers(self.target.master_socket) == []:
                return time.monotonic() - started
            time.sleep(0.005)
        raise ReloadError("HAProxy's old worker still accepted connections after the timeout")

    def reconcile_map(self, render: Render, revision: int) -> None:
        """Make the current worker's map ``render``'s; log what had to be corrected.

        Raises ReloadError when the worker's map could not be read or corrected.
        """
        map_file = self.target.map_file
        try:
            served = show_map(self.target.master_socket, map_file)
            if served == render.routes:
                return
            commands = map_commands(served, render.routes, render.checked, map_file)
            logger.warning(
                "revision %s: the new worker's map differed from the render in %d entries; "
                "correcting it",
                revision,
                len(commands),
            )
            run_commands(self.target.master_socket, commands)
        except RuntimeAPIError as exc:
            raise ReloadError(f"the new worker's map could not be checked: {exc}") from exc

    def apply(self, snapshot: Snapshot) -> bool:
        """Apply ``snapshot`` (through the runtime API when it can); False when refused.

        Raises ReloadError when HAProxy could not be reloaded (not running yet, say).
        """
        return self.apply_render(snapshot, self.render(snapshot))

    def needs_reload(self, render: Render) -> bool:
        """Whether ``render`` can only reach HAProxy through a reload (not the runtime API)."""
        running = self._applied
        return running is None or server_changes(running, render) is None

    def apply_render(self, snapshot: Snapshot, render: Render) -> bool:
        """Apply ``render``, made from ``snapshot``: see :meth:`apply`."""
        with self._mutations:
            self._changes = snapshot.changes
            running = self._applied
            changes = None if running is None else server_changes(running, render)
            if running is None or changes is None:
                return self.apply_with_reload(snapshot, render)
            if not changes and render.routes == running.routes:
                self._acknowledge(snapshot.revision, render, [], reloaded=False)
                self._applied_snapshot = snapshot
                self._note_drains(snapshot.revision, running, render)
                return True
            try:
                seconds, leaving = self.update_running(running, render, changes, snapshot.revision)
            except ReloadError as exc:
                logger.warning(
                    "revision %s: runtime update failed, reloading instead: %s",
                    snapshot.revision,
                    exc,
                )
                return self.apply_with_reload(snapshot, render)
            self._acknowledge(snapshot.revision, render, leaving, reloaded=False, seconds=seconds)
            self._applied_snapshot = snapshot
            self._note_drains(snapshot.revision, running, render)
            logger.info(
                "applied revision %s (%d routes, %d servers added, %d leaving) through the "
                "runtime API in %.1f ms",
                snapshot.revision,
                len(render.routes),
                len(changes.added),
                len(changes.removed),
                seconds * 1000,
            )
            return True

    def update_running(
        self, running: Render, render: Render, changes: ServerChanges, revision: int
    ) -> tuple[float, list[LeavingServer]]:
        """Change the running worker's servers and map to ``render``; return seconds and leavers.

        Raises ReloadError as update_servers and update_map do.
        """
        started = time.monotonic()
        leaving = self.update_servers(changes, render, revision) if changes else []
        if render.routes != running.routes:
            self.update_map(running, render)
        if changes:
            # The running worker has it now; a later reload or restart must render the same.
            self.write(render.config)
        return time.monotonic() - started, leaving

    def _acknowledge(
        self,
        revision: int,
        render: Render,
        leaving: list[LeavingServer],
        *,
        reloaded: bool,
        seconds: float | None = None,
    ) -> None:
        """Make ``render`` the running one and write ``applied`` for ``revision``."""
        self._applied = render
        # Known before "applied" is: whoever waits for it may wait for "drained" next.
        self.leaving.add(leaving)
        # How many routing changes the applied state includes: the lag is counted from it.
        self._changes_acknowledged = self._changes
        record: dict[str, Any] = {"reloaded": reloaded, "changes": self._changes}
        if seconds is not None:
            record["reload_seconds" if reloaded else "runtime_seconds"] = round(seconds, 4)
            self.registration.note_apply("reload" if reloaded else "runtime", seconds)
        if left := self.leaving.left_rotation():
            record["left_rotation"] = left
        if render.skipped:
            record["skipped"] = render.skipped
        self.registration.note_error(None)
        self._ack_record = record
        if self._runtime_revision > revision and self._runtime_ack is not None:
            record = {**record, "runtime": self._runtime_ack}
        self.registration.acknowledge(revision, record)
        self._acknowledged = revision

    def _note_drains(self, revision: int, running: Render, render: Render) -> None:
        """Tell the drain report ``render`` is applied at ``revision`` through the runtime API.

        Backends are unrouted from the routes it last heard of, which a runtime part
        applied since may have changed already.
        """
        self.drains.note_applied(revision, self._noted or running, render)
        self._noted = render

    def apply_runtime_part(self, snapshot: Snapshot) -> bool:
        """Before ``snapshot``'s reload, apply what the running worker can take of it now.

        Routes to backends the worker has and servers added to them go through the
        runtime API and are acknowledged under ``runtime`` (see the module docstring),
        so that a switch never waits for another record's reload. False when nothing
        was applied (no running worker, nothing new, or the runtime API refused: the
        reload then takes everything).
        """
        with self._mutations:
            running, applied = self._applied, self._applied_snapshot
            if running is None or applied is None:
                return False
            if snapshot.revision <= max(self._acknowledged, self._runtime_revision):
                return False
            self._runtime_revision = snapshot.revision
            part_snapshot = runtime_part(applied, snapshot, running)
            refused = {
                name: message
                for name, (record, message) in self._refused.items()
                if _as_key(part_snapshot.backends.get(name)) == record
            }
            part = render(part_snapshot, self.target, refused, running.routes)
            changes = server_changes(running, part)
            if changes is None or changes.removed:
                return False
            try:
                seconds, _ = self.update_running(running, part, changes, snapshot.revision)
            except ReloadError as exc:
                logger.warning(
                    "revision %s: runtime part not applied, the reload takes it: %s",
                    snapshot.revision,
                    exc,
                )
                return False
            self._applied, self._applied_snapshot = part, part_snapshot
            pending = pending_records(part_snapshot, snapshot)
            self._runtime_ack = {
                "revision": snapshot.revision,
                "pending": pending,
                "seconds": round(seconds, 4),
            }
            record = dict(self._ack_record)
            if left := self.leaving.left_rotation():
                record["left_rotation"] = left
            record["runtime"] = self._runtime_ack
            self.registration.note_apply("runtime", seconds)
            self.registration.acknowledge(self._acknowledged, record)
            logger.info(
                "applied revision %s through the runtime API in %.1f ms but for %d records "
                "that wait for a reload",
                snapshot.revision,
                seconds * 1000,
                len(pending),
            )
            return True

    def apply_with_reload(self, snapshot: Snapshot, render: Render) -> bool:
        """Validate, write and reload ``render``, then acknowledge it; False when refused."""
        started = time.monotonic()
        # haproxy -c opens the map the configuration names, so it is written first.
        self.write(render.map_text, self.target.map_file)
        try:
            for _attempt in range(MAX_ISOLATIONS):
                try:
                    self.validate(render.config)
                    break
                except ReloadError as exc:
                    narrower = self.isolate(snapshot, render, exc)
                    if narrower is None:
                        raise
                    render = narrower
                    self.write(render.map_text, self.target.map_file)
            else:
                self.validate(render.config)
        except ReloadError as exc:
            logger.error("revision %s refused: %s", snapshot.revision, exc)
            if self._applied is not None:
                # The running worker keeps its map; the file must match it for the next reload.
                self.write(self._applied.map_text, self.target.map_file)
            self.registration.note_error(f"revision {snapshot.revision} refused: {exc}")
            # Whoever waits for this revision hears of the refusal, and from which load balancer.
            record: dict[str, Any] = {
                "changes": self._changes_acknowledged,
                "rejected": {"revision": snapshot.revision, "error": str(exc)[:2000]},
            }
            if self._runtime_revision > self._acknowledged and self._runtime_ack is not None:
                record["runtime"] = self._runtime_ack
            self.registration.acknowledge(self._acknowledged, record)
            return False
        validated = time.monotonic()
        running = self._applied
        removed = [] if running is None else removed_servers(running, render)
        # What they carry now stays with the old worker, which "drained" waits for.
        counts = sessions(self.target.master_socket) if removed else {}
        self.write(render.config)
        seconds = self.reload(snapshot.revision)  # ReloadError: the caller retries
        self.reconcile_map(render, snapshot.revision)
        leaving = self._leaving(removed, render, snapshot.revision, counts)
        for server in leaving:
            server.removed = server.in_old_worker = True
        self._acknowledge(snapshot.revision, render, leaving, reloaded=True, seconds=seconds)
        self._applied_snapshot = snapshot
        self.drains.note_applied(snapshot.revision, None, render)
        self._noted = render
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
        self._changed.set()
        self.drains.wake()
        for cancel in list(self._cancel):
            with contextlib.suppress(Exception):
                cancel()  # type: ignore[operator]

    def request_reapply(self) -> None:
        """Give HAProxy the whole configuration through a reload at the next chance.

        Called when this load balancer must register (again): its HAProxy came back, or
        its lease expired; the acknowledgement of that apply registers it.
        """
        self._reapply.set()
        self._changed.set()

    def run(self) -> None:
        """Apply the current state, then follow the watch until stopped; survive etcd outages.

        Beside it, the drain thread writes ``drained`` and the registration thread keeps
        this load balancer's lease alive while HAProxy answers.
        """
        drainer = threading.Thread(target=self.drains.run, name="haproxy-drain", daemon=True)
        drainer.start()
        # The lease is revoked once the apply loop has ended, so that no acknowledgement of
        # an apply still under way (a reload) registers this load balancer again after it.
        applying_ended = threading.Event()
        registrar = threading.Thread(
            target=self.registration.run, args=(applying_ended,), name="lb-lease", daemon=True
        )
        registrar.start()
        backoff = 0.2
        try:
            while not self._stop.is_set():
                try:
                    self._follow()
                    backoff = 0.2
                except StoreError as exc:
                    # HAProxy keeps serving the last good configuration meanwhile.
                    logger.warning("etcd unavailable (%s); retrying in %.1fs", exc, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            applying_ended.set()
            registrar.join(10)  # it revokes the lease on its way out

    def apply_current(self) -> None:
        """Apply the current state; retry while HAProxy cannot be reloaded (e.g. still starting).

        A render that needs a reload within ``min_reload_interval`` of the last one waits
        for the rest of the interval and is read again, so that one reload carries
        everything written meanwhile; a change written during that wait is read at once,
        so that its runtime part (apply_runtime_part) does not wait.
        """
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if self._reapply.is_set():
                    self._reapply.clear()
                    with self._mutations:
                        self._applied = self._applied_snapshot = None
                    self.drains.report_again()  # a new lease carries no drained record yet
                snapshot = self.store.snapshot()
                render = self.render(snapshot)
                if self.needs_reload(render):
                    # What needs no reload is served now, not after the interval and reload.
                    self.apply_runtime_part(snapshot)
                    wait = self._last_reload_started + self.min_reload_interval - time.monotonic()
                    if wait > 0:
                        # A change meanwhile is read at once: its runtime part goes in now.
                        if self._changed.wait(wait):
                            self._changed.clear()
                        continue
                self.apply_render(snapshot, render)
                return
            except ReloadError as exc:
                logger.warning("HAProxy not reloaded (%s); retrying in %.1fs", exc, backoff)
                self.registration.note_error(str(exc))
                with self._mutations:
                    self._applied = self._applied_snapshot = None  # reloaded in full once back
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _is_configuration(self, key: str) -> bool:
        """Whether a change of ``key`` can change the render (not an acknowledgement)."""
        rest = key.removeprefix(f"{self.store.prefix}/")
        # ``changed`` too: a delete of a record that was already gone changes nothing else,
        # and its acknowledgement is what brings this load balancer's lag back to 0.
        return rest == "changed" or rest.startswith(("frontends/", "backends/", "previews/"))

    def _follow(self) -> None:
        """Apply now, then again after every change the watch reports, coalescing bursts."""
        start = self.store.current_revision() + 1
        responses, cancel = self.store.watch_prefix(start)
        self._cancel.append(cancel)
        ended: list[BaseException | None] = []

        def pump() -> None:
            try:
                for response in responses:
                    events = getattr(response, "events", [])
                    if any(self._is_configuration(event_key(e)) for e in events):
                        self._changed.set()
                ended.append(None)
            except Exception as exc:
                ended.append(exc)
            finally:
                self._changed.set()

        watcher = threading.Thread(target=pump, name="etcd-watch", daemon=True)
        watcher.start()
        self._changed.set()  # the state as of now, before any change
        try:
            while not self._stop.is_set():
                self._changed.wait()
                if self._stop.is_set():
                    return
                if ended:
                    raise StoreError(f"watch ended: {ended[0] or 'closed by etcd'}")
                # Everything that changes from here on sets it again: nothing is lost, and
                # the changes a slow apply lets pile up are applied together.
                self._changed.clear()
                self.apply_current()
                if ended:
                    # Its last wake-up may have been taken by apply_current's interval wait.
                    raise StoreError(f"watch ended: {ended[0] or 'closed by etcd'}")
        finally:
            self._cancel.remove(cancel)
            with contextlib.suppress(Exception):
                cancel()
            watcher.join(5)
