"""A load balancer's ``drained/<id>`` record: the revision from which nothing older runs.

At revision R it is written once no HAProxy worker of an older configuration is left
(``show proc``), no request to a backend that lost its last route is running, and every
server removed at R or before has no session (deployer.serverdrain)::

    {"revision": R, "servers": {"<backend record>/<server>": {"sessions": n, "seconds": s}},
     "timed_out": ["<backend record>/<server>", ...]}

``servers`` names those whose sessions ended (``seconds`` after they left rotation) in
this round or in the last minute; ``timed_out``, only present when there are some, those
of them that still had sessions when the drain timeout passed. Only then may their pods
go without cutting off requests.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deployer.errors import StoreError
from deployer.haproxycli import old_workers, sessions
from deployer.lbrender import Render
from deployer.serverdrain import ServerDrains

logger = logging.getLogger(__name__)


class DrainReport:
    """Follows what the running HAProxy still carries and writes ``drained`` through ``write``."""

    def __init__(
        self,
        master_socket: Path,
        leaving: ServerDrains,
        write: Callable[[int, dict[str, Any]], None],
        stop: threading.Event,
        drain_timeout: float = 60.0,
    ) -> None:
        self.master_socket = master_socket
        self.leaving = leaving
        self.write = write
        self.drain_timeout = drain_timeout
        self._stop = stop
        self._drain = threading.Condition()
        self._target = 0
        self._drained = 0
        # HAProxy backend -> revision of the runtime map update that took its last route:
        # the worker may still carry requests to it, which "drained" must wait for too.
        self._unrouted: dict[str, int] = {}

    def note_applied(
        self, revision: int, running: Render | None = None, render: Render | None = None
    ) -> None:
        """``revision`` is applied: ``render`` replaced ``running`` (None: a reload)."""
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
            self._target = max(self._target, revision)
            self._drain.notify_all()

    def report_again(self) -> None:
        """Write the record again at the next applied revision (a new lease has none)."""
        with self._drain:
            self._drained = 0
            self._drain.notify_all()

    def wake(self) -> None:
        """Make :meth:`run` look at its stop event now."""
        with self._drain:
            self._drain.notify_all()

    def poll(self) -> tuple[int | None, int | None]:
        """Update leaving servers; return old workers left and requests to unrouted backends.

        None when HAProxy did not say.
        """
        read_at = time.monotonic()
        left = old_workers(self.master_socket)
        counts = sessions(self.master_socket)
        self.leaving.poll(counts, left, read_at)
        with self._drain:
            unrouted = set(self._unrouted)
        if counts is None:
            return left, None if unrouted else 0
        return left, sum(counts.get((backend, "BACKEND"), 0) for backend in unrouted)

    def drain_once(self) -> int | None:
        """Wait until nothing older is running, then write ``drained``; return the revision written.

        Nothing older: no old worker, no request to a backend that lost its route, no
        session on a server removed at the target revision or before.
        """
        with self._drain:
            target = self._target
            if target <= self._drained:
                return None
        deadline = time.monotonic() + self.drain_timeout
        delay = 0.005
        gave_up = False
        # HAProxy offers nothing to watch: ask the master with a short backoff.
        while not self._stop.is_set():
            left, unrouted = self.poll()
            if left == 0 and unrouted == 0 and not self.leaving.pending(target):
                break
            if time.monotonic() >= deadline:
                logger.warning(
                    "%s old HAProxy workers and %s requests to unrouted backends left after "
                    "%.0fs; reporting drained anyway",
                    left,
                    unrouted,
                    self.drain_timeout,
                )
                gave_up = True
                break
            self._stop.wait(delay)
            delay = min(delay * 2, 0.1)
        if self._stop.is_set():
            return None
        with self._drain:
            self._unrouted = {b: r for b, r in self._unrouted.items() if r > target}
        report = self.leaving.report(target, give_up=gave_up)
        record: dict[str, Any] = {"servers": report.servers}
        if report.timed_out:
            record["timed_out"] = report.timed_out
        self.write(target, record)
        with self._drain:
            self._drained = max(self._drained, target)
        return target

    def run(self) -> None:
        """Write ``drained`` for each newly applied revision until the stop event is set."""
        delay = 0.005
        while not self._stop.is_set():
            # Deletions to retry are polled for; a new revision to report wakes at once.
            idle = 1.0 if not self.leaving.busy() else delay
            with self._drain:
                self._drain.wait_for(
                    lambda: self._stop.is_set() or self._target > self._drained,
                    timeout=idle,
                )
            if self._stop.is_set():
                return
            try:
                if self.drain_once() is None and self.leaving.busy():
                    self.poll()
                    delay = min(delay * 2, 0.1)
                else:
                    delay = 0.005
            except StoreError:
                logger.warning("could not write drained; retrying", exc_info=True)
                self._stop.wait(0.5)
