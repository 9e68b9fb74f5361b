"""Servers leaving rotation: from ``drain`` until HAProxy shows no session on them.

proxysync sets a server removed from a live backend to ``drain`` (no new request goes to
it; requests in flight finish) and registers it here. The drain thread polls HAProxy;
once the server has no session (or the drain timeout passed), it is set to ``maint`` and
deleted (``del server``, retried a few times; a server whose deletion keeps failing is
left in maintenance, which takes no traffic either). A reload hands every leaving server
to the old worker, which keeps its requests: such a server is done when no old worker is
left. ``drained`` reports what :meth:`ServerDrains.report` returns.

Both acknowledgements keep naming a server for ``RECENT`` seconds: the one written for
the revision that removed it may be replaced by a later revision's (any write under the
prefix is one) before whoever waited for it reads it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from deployer.haproxycli import RuntimeAPIError, Sessions, run_commands
from deployer.lbconfig import ServerSpec

logger = logging.getLogger(__name__)

DELETE_ATTEMPTS = 5
RECENT = 60.0

ServerKey = tuple[str, str]  # (HAProxy backend, HAProxy server)


class DrainFigures(TypedDict):
    """How one server left: the sessions it had when set to drain, and how long they took."""

    sessions: int | None
    seconds: float


@dataclass
class LeavingServer:
    """One server out of rotation whose requests may still be running."""

    backend: str  # HAProxy's backend name
    spec: ServerSpec
    record: str  # the etcd backend record's name
    revision: int  # the etcd revision that removed it
    sessions: int | None  # when set to drain (None: HAProxy did not say)
    started: float
    deadline: float
    # A reload happened: the old worker carries its requests and the new one never had
    # it, so there is nothing to delete.
    in_old_worker: bool = False
    # When it was set to drain or handed to an old worker: figures read before say nothing.
    changed: float = 0.0
    finished: float | None = None  # when it had no session left, or timed out
    timed_out: bool = False
    removed: bool = False  # no longer in the current worker (deleted, or reloaded away)
    abandoned: bool = False  # left in maintenance: ``del server`` kept failing
    delete_attempts: int = 0
    next_delete: float = 0.0
    reported: bool = False

    @property
    def key(self) -> ServerKey:
        """Where it is in HAProxy."""
        return (self.backend, self.spec.name)

    @property
    def label(self) -> str:
        """``<backend record>/<server>``, as acknowledgements name it."""
        return f"{self.record}/{self.spec.record_name}"

    @property
    def name(self) -> str:
        """``<backend>/<server>`` as the runtime API names it."""
        return f"{self.backend}/{self.spec.name}"


@dataclass(frozen=True)
class DrainReport:
    """The servers a ``drained`` round waited for."""

    servers: dict[str, DrainFigures]
    timed_out: list[str]


class ServerDrains:
    """The servers leaving rotation, from ``drain`` until they are done and deleted.

    ``mutations`` is the lock proxysync holds while it changes the running worker; a
    deletion takes it too, so that it never acts on a worker a reload just replaced.
    """

    def __init__(
        self,
        master_socket: Path,
        mutations: threading.Lock,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.master_socket = master_socket
        self.mutations = mutations
        self.clock = clock
        self._lock = threading.Lock()
        self._leaving: list[LeavingServer] = []
        # Recently left, for ``applied``; recently reported, for ``drained``.
        self._left: list[LeavingServer] = []
        self._reported: list[tuple[float, LeavingServer]] = []

    def add(self, leaving: Iterable[LeavingServer]) -> None:
        """Track servers proxysync just set to drain (or reloaded away)."""
        with self._lock:
            self._leaving.extend(leaving)
            self._left.extend(leaving)

    def left_rotation(self) -> dict[str, dict[str, int | None]]:
        """``applied.left_rotation``: record -> server -> sessions, of the recent leavers."""
        horizon = self.clock() - RECENT
        figures: dict[str, dict[str, int | None]] = {}
        with self._lock:
            self._left = [s for s in self._left if s.started >= horizon]
            for server in self._left:
                figures.setdefault(server.record, {})[server.spec.record_name] = server.sessions
        return figures

    def in_worker(self) -> dict[ServerKey, LeavingServer]:
        """Leaving servers the current worker still has (draining, or in maintenance)."""
        with self._lock:
            return {s.key: s for s in self._leaving if not s.removed}

    def take_back(self, key: ServerKey) -> None:
        """Forget a server that re-enters rotation (the caller set it ready, under ``mutations``)."""
        with self._lock:
            self._leaving = [s for s in self._leaving if s.removed or s.key != key]
            self._left = [s for s in self._left if s.removed or s.key != key]

    def hand_to_old_worker(self) -> None:
        """A reload replaced the worker: leaving servers finish with the old one.

        Called with ``mutations`` held, so that no deletion meant for the old worker
        reaches the new one (which may have a server of the same name).
        """
        with self._lock:
            now = self.clock()
            for server in self._leaving:
                if not server.removed:
                    server.removed = True
                    server.in_old_worker = server.finished is None
                    server.changed = now

    def busy(self) -> bool:
        """Whether a server still needs polling or deleting."""
        with self._lock:
            return any(s.finished is None or not (s.removed or s.abandoned) for s in self._leaving)

    def pending(self, revision: int) -> bool:
        """Whether a server removed at ``revision`` or before may still have sessions."""
        with self._lock:
            return any(s.finished is None for s in self._leaving if s.revision <= revision)

    def poll(self, counts: Sessions | None, old_workers: int | None, read_at: float) -> None:
        """Update every leaving server from HAProxy's figures; delete the finished ones.

        ``counts`` are the current worker's sessions, ``old_workers`` how many workers of
        older configurations are left (None: HAProxy did not say), both asked for at
        ``read_at`` (this clock) or later.
        """
        now = self.clock()
        with self._lock:
            for server in self._leaving:
                if server.finished is not None or max(server.started, server.changed) > read_at:
                    continue  # done, or changed after the figures were read
                if server.in_old_worker:
                    done = old_workers == 0
                elif counts is None:
                    done = False
                else:
                    # Absent: a reload that did not finish took it (old workers are waited for).
                    done = counts.get(server.key, 0) == 0
                if done or now >= server.deadline:
                    server.finished = now
                    server.timed_out = not done
                    if server.timed_out:
                        logger.warning(
                            "%s still had requests after the drain timeout", server.label
                        )
            due = [
                s
                for s in self._leaving
                if s.finished is not None
                and not (s.removed or s.abandoned)
                and s.next_delete <= now
            ]
        if due:
            self._delete(due)

    def _delete(self, servers: list[LeavingServer]) -> None:
        # Never wait long for a reload in progress: the next poll tries again.
        if not self.mutations.acquire(timeout=0.1):
            return
        try:
            for server in servers:
                with self._lock:
                    if server.removed or server not in self._leaving:
                        continue  # reloaded away or back in rotation meanwhile
                try:
                    run_commands(
                        self.master_socket,
                        [f"set server {server.name} state maint", f"del server {server.name}"],
                    )
                except RuntimeAPIError as exc:
                    self._refused(server, exc)
                else:
                    with self._lock:
                        server.removed = True
        finally:
            self.mutations.release()

    def _refused(self, server: LeavingServer, exc: RuntimeAPIError) -> None:
        with self._lock:
            server.delete_attempts += 1
            if server.delete_attempts >= DELETE_ATTEMPTS:
                server.abandoned = True
            else:
                server.next_delete = self.clock() + 0.1 * 2**server.delete_attempts
        if server.abandoned:
            logger.warning(
                "%s left in maintenance: HAProxy refused to delete it %d times (%s); the "
                "next reload removes it",
                server.name,
                DELETE_ATTEMPTS,
                exc,
            )
        else:
            logger.info("deleting %s refused, retrying: %s", server.name, exc)

    def report(self, revision: int, *, give_up: bool = False) -> DrainReport:
        """The servers removed at ``revision`` or before that are done, reported recently or now.

        ``give_up`` counts the ones still running as timed out (the round's deadline passed).
        """
        now = self.clock()
        with self._lock:
            for server in self._leaving:
                if server.revision > revision or server.reported:
                    continue
                if server.finished is None:
                    if not give_up:
                        continue
                    server.finished, server.timed_out = now, True
                server.reported = True
                self._reported.append((now, server))
            # An abandoned server stays known: the worker still has it, in maintenance.
            self._leaving = [s for s in self._leaving if not (s.reported and s.removed)]
            self._reported = [(at, s) for at, s in self._reported if at >= now - RECENT]
            done = [server for _, server in self._reported]
        servers = {
            server.label: DrainFigures(
                sessions=server.sessions,
                seconds=round((server.finished or now) - server.started, 3),
            )
            for server in done
        }
        timed_out = sorted({server.label for server in done if server.timed_out})
        return DrainReport(servers, timed_out)
