"""What every kind of deployment run shares: steps, their log, and one rollback path.

A :class:`Workflow` runs one RUNNING deployment; each kind is a small subclass with
its own ``run`` (deployer.deploy, deployer.swapback, deployer.undeploy; deployer.kinds
maps ``Deployment.kind`` to them). Every step logs its start, its end and its duration,
checks for an abort first, and fails by raising :class:`StopDeployment`.
:meth:`Workflow.execute` catches that in one place and calls :meth:`Workflow.cleanup`:
before the switch it deletes the new version's objects and its never-routed backend
record, leaving the frontend untouched; after it, it points the frontend back at the
previous backend. The switch (waiting for every live load balancer), its verification
through each of them and the deletion of a version are here too, as deploy and swap
back both use them.

A load balancer whose proxysync is down (a member of the fleet without a live lease,
deployer.lbfleet) does not hold the switch up: its HAProxy keeps the previous routes,
whose pods still run. It does hold up everything that stops pods (retiring a version,
deleting the new one after a rollback) while its HAProxy accepts connections; when it
still does at the deadline, those pods stay and the log names it.

A run that was handed to another worker (its row names another worker, see
deployer.heartbeat) stops at the next step boundary, and before it deletes a version or
writes a route, without rolling back: the worker that took it over does that.

Database writes are what a run waits for most when many run at once (each commit takes
the database's write lock, SQLite's for the whole database), so on the way from healthy
pods to a verified switch the run's bookkeeping is *deferred* (:meth:`Workflow.deferred`):
the end of those steps (DEFERRED_ENDS), the last health round, the switch's
acknowledgement and the verify step's lines are stored, in order, in the same transaction
as the next write, which is at most one step away.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from django.db import transaction
from django.utils import timezone

from deployer import events, preview, traffic
from deployer.cluster import PodFailed
from deployer.collaborators import (
    Clock,
    Cluster,
    HealthChecker,
    LBStore,
    LogSink,
    StopDeployment,
    SystemClock,
    Timing,
    backend_name,
    version_of_backend,
)
from deployer.errors import BackendError
from deployer.health import judge
from deployer.lbfleet import FleetWait, LoadBalancer
from deployer.logsink import Level, level_first
from deployer.models import App, Deployment
from deployer.pods import PodInfo
from deployer.rotation import ServingPod, StillRouted, take_out
from deployer.traffic import ServiceTraffic

__all__ = [
    "Clock",
    "Cluster",
    "HealthChecker",
    "LBStore",
    "LogSink",
    "StopDeployment",
    "SystemClock",
    "TakenOver",
    "Timing",
    "Workflow",
    "backend_name",
    "version_of_backend",
]

logger = logging.getLogger(__name__)

# The least delay before a deferred retirement is tried again.
RETIRE_RETRY_SECONDS = 30.0
# Steps between healthy pods and a verified switch: each one's end is stored with the
# next step's start (see Workflow.deferred).
DEFERRED_ENDS = frozenset({"health", "switch", "verify"})


class TakenOver(Exception):
    """This run's deployment now belongs to ``worker``: stop acting on it, and undo nothing."""

    def __init__(self, worker: str) -> None:
        super().__init__(f"taken over by {worker or 'another worker'}")
        self.worker = worker


@dataclass
class Workflow(abc.ABC):
    """Runs one deployment (already RUNNING) to a terminal status; see the module docstring."""

    # The steps of this kind, in order, with their titles (also the deployment page's list).
    steps: ClassVar[list[tuple[str, str]]] = []
    # Steps a run takes only when its descriptor asks for them: name -> whether it does.
    optional_steps: ClassVar[dict[str, Callable[[dict[str, Any]], bool]]] = {}

    deployment: Deployment
    cluster: Cluster
    lb: LBStore
    health: HealthChecker
    clock: Clock
    sink: LogSink
    timing: Timing = field(default_factory=Timing)
    # The load balancer's port when it is not 80, for the URL in the last log line.
    lb_port_suffix: str = ""
    # Retires a kept-warm version later (a Celery countdown task in production).
    schedule_retire: Callable[[int, int, float], None] = lambda _dep, _version, _delay: None

    created: bool = field(default=False, init=False)
    switch_started: bool = field(default=False, init=False)
    backend_written: bool = field(default=False, init=False)
    backend_revision: int = field(default=0, init=False)
    previous_backend: str | None = field(default=None, init=False)
    previous_version: int | None = field(default=None, init=False)
    pods: list[PodInfo] = field(default_factory=list, init=False)
    healthy_at: float | None = field(default=None, init=False)
    switch_revision: int = field(default=0, init=False)
    switch_written_at: float | None = field(default=None, init=False)
    # The load balancers that applied the switch: the verify step asks each of them.
    balancers: list[LoadBalancer] = field(default_factory=list, init=False)
    # The app's stable Service in traffic mode service (deployer.traffic), once used.
    service_traffic: ServiceTraffic | None = field(default=None, init=False)
    # Writes queued by deferred(), in order, and how many deferred() blocks are open.
    _deferred: list[Callable[[], None]] = field(default_factory=list, init=False, repr=False)
    _deferring: int = field(default=0, init=False, repr=False)

    @property
    def descriptor(self) -> dict[str, Any]:
        """The app's descriptor as snapshotted when the deployment was requested."""
        return self.deployment.descriptor

    @property
    def app(self) -> App:
        """The app row."""
        return self.deployment.app

    @property
    def namespace(self) -> str:
        """The app's namespace at the time of the request."""
        return str(self.descriptor["namespace"])

    @property
    def name(self) -> str:
        """The app's name."""
        return str(self.descriptor["name"])

    @property
    def hostname(self) -> str:
        """The frontend hostname."""
        return str(self.descriptor["frontend"])

    def new_backend(self) -> str:
        """The backend record of this deployment's version."""
        assert self.deployment.version is not None
        return backend_name(self.namespace, self.name, self.deployment.version)

    # Bookkeeping
    def log(self, message: str, *, level: Level = "info", step: str = "") -> None:
        """Store and publish one line of this deployment's log (see :meth:`write`)."""
        self.write(lambda: self.sink.log(message, level=level, step=step))

    def save(self, *fields: str) -> None:
        """Write ``fields`` of the deployment row as they are on the instance now."""
        values = {name: getattr(self.deployment, name) for name in fields}
        self.write(lambda: Deployment.objects.filter(pk=self.deployment.pk).update(**values))

    def write(self, action: Callable[[], None]) -> None:
        """Run the database write ``action``: queued inside :meth:`deferred`, else now.

        A write made now first stores what is queued, in the same transaction.
        """
        if self._deferring:
            self._deferred.append(action)
        elif self._deferred:
            with transaction.atomic():
                self.flush()
                action()
        else:
            action()

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Queue this block's writes (log lines, row fields) until the next write or flush.

        For bookkeeping on the way to serving traffic: nothing in the run waits for it to
        be stored, and it is stored, in order, with the write that follows.
        """
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1

    def flush(self) -> None:
        """Store the queued writes, in order, in one transaction.

        The deployment row is locked first, as every other writer of the run's rows does
        (an abort request locks the row, then appends its line): queued log lines inserted
        before the row's lock would wait on an abort that waits on them (a deadlock on
        PostgreSQL; SQLite's one write lock orders them anyway).
        """
        actions, self._deferred = self._deferred, []
        if actions:
            with self.locked():
                for action in actions:
                    action()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One transaction for several writes of the run, the deployment row locked first.

        Log lines inserted before a write of the row would wait on an abort request that
        holds the row and waits on them (see :meth:`flush`). The lock is FOR NO KEY UPDATE,
        as an abort request's: it excludes the other writers of the row but not the key
        share lock that inserting a log line takes on it (its foreign key), so a line
        inserted by one never waits on the other's lock while that one waits on the line.
        """
        with transaction.atomic():
            list(
                Deployment.objects.select_for_update(no_key=True)
                .filter(pk=self.deployment.pk)
                .values_list("pk", flat=True)
            )
            yield

    def _set_step(self, name: str, **values: Any) -> None:
        steps = dict(self.deployment.steps)
        steps[name] = {**steps.get(name, {}), **values}
        self.deployment.steps = steps
        self.save("steps")
        self.write(self.sink.status)

    def abort_requested(self) -> bool:
        """True once a user asked to abort (read from the database)."""
        return Deployment.objects.filter(pk=self.deployment.pk, abort_requested=True).exists()

    def check_abort(self) -> None:
        """Raise StopDeployment when an abort was requested."""
        if self.abort_requested():
            raise StopDeployment("aborted by user", aborted=True)

    def check_owner(self) -> None:
        """Raise TakenOver when the row names another worker than the one running this run."""
        worker = (
            Deployment.objects.filter(pk=self.deployment.pk)
            .values_list("worker", flat=True)
            .first()
        )
        if worker is not None and worker != self.deployment.worker:
            raise TakenOver(worker)

    def check_step(self) -> None:
        """At a step boundary, with one query: TakenOver first, then StopDeployment on abort."""
        row = (
            Deployment.objects.filter(pk=self.deployment.pk)
            .values_list("worker", "abort_requested")
            .first()
        )
        if row is None:
            return
        worker, aborted = row
        if worker != self.deployment.worker:
            raise TakenOver(worker)
        if aborted:
            raise StopDeployment("aborted by user", aborted=True)

    def stop_taken_over(self, taken: TakenOver) -> None:
        """Say in both logs that this run stops here, leaving everything to its new worker."""
        self._deferred.clear()  # the row is the new worker's
        logger.warning(
            "deployment #%s was taken over by %s; %s stops running it",
            self.deployment.pk,
            taken.worker,
            self.deployment.worker,
        )
        self.log(
            f"This run was taken over by {taken.worker}; stopping here.",
            level="warning",
            step="recover",
        )

    @contextlib.contextmanager
    def step(
        self, name: str, *, first: Callable[[], Callable[[], None] | None] | None = None
    ) -> Iterator[None]:
        """Mark ``name`` running, log its start and end with its duration, mark done or failed.

        ``first`` runs before the step's own bookkeeping is written: the switch's etcd
        write uses it, so that traffic moves without waiting for database commits; what
        it returns, if anything, runs in the transaction that marks the step running.
        The end of a step in DEFERRED_ENDS is stored with the next write (the next step's
        start).
        """
        self.check_step()
        title = dict(self.steps).get(name, name)
        started = self.clock.monotonic()
        started_at = timezone.now().isoformat()
        try:
            opening = first() if first is not None else None
            # One commit for the step's state and its line: commits dominate a step's cost.
            with transaction.atomic():
                self.flush()
                self._set_step(name, state="running", started=started_at)
                self.log(f"{title}…", step=name)
                if opening is not None:
                    opening()
            yield
        except TakenOver:
            raise  # the row is the new worker's: write nothing to it
        except BaseException as exc:
            seconds = round(self.clock.monotonic() - started, 3)
            detail = exc.reason if isinstance(exc, StopDeployment) else str(exc)
            with transaction.atomic():
                self._set_step(name, state="failed", seconds=seconds)
                self.log(f"{title} failed after {seconds:.2f}s: {detail}", level="error", step=name)
            raise
        seconds = round(self.clock.monotonic() - started, 3)
        with self.deferred() if name in DEFERRED_ENDS else transaction.atomic():
            self._set_step(name, state="done", seconds=seconds)
            self.log(f"{title}: done in {seconds:.2f}s", step=name)

    # Entry points
    def execute(self) -> None:
        """Run the deployment's kind to a terminal status; roll back on any failure."""
        self.deployment.steps = {
            **{name: {"state": "pending"} for name, _ in self.planned_steps(self.descriptor)},
            **self.deployment.steps,
        }
        self.save("steps")
        self.sink.status()
        self.announce_started()
        started = self.clock.monotonic()
        failure: StopDeployment | None = None
        taken: TakenOver | None = None
        interrupted = False
        try:
            self.run()
        except TakenOver as exc:
            taken = exc
        except StopDeployment as stop:
            failure = stop
        except PodFailed as exc:
            failure = StopDeployment(str(exc))
        except BackendError as exc:
            logger.exception("deployment #%s: backend error", self.deployment.pk)
            failure = StopDeployment(f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            logger.exception("deployment #%s: unexpected error", self.deployment.pk)
            failure = StopDeployment(f"internal error ({type(exc).__name__}: {exc})")
        except BaseException:
            # The process is going away (SystemExit, a worker's hard shutdown): nothing is
            # finished or undone here; the run stays RUNNING and its heartbeat stops, so a
            # live worker recovers it (deployer.runner.recover).
            interrupted = True
            raise
        finally:
            if taken is None and not interrupted:
                try:
                    if failure is not None:
                        self.cleanup(failure)
                    self.finish(failure, self.clock.monotonic() - started)
                except TakenOver as exc:
                    taken = exc
            if taken is not None:
                self.stop_taken_over(taken)

    @classmethod
    def planned_steps(cls, descriptor: dict[str, Any]) -> list[tuple[str, str]]:
        """The steps a run of ``descriptor`` takes, in order: optional ones only when it asks."""
        return [
            (name, title)
            for name, title in cls.steps
            if name not in cls.optional_steps or cls.optional_steps[name](descriptor)
        ]

    @abc.abstractmethod
    def run(self) -> None:
        """The steps of this kind; raise StopDeployment to stop and roll back."""

    def finish(self, failure: StopDeployment | None, seconds: float) -> None:
        """Move the row to its terminal status and say so in the log; TakenOver if not ours."""
        self.check_owner()
        self.flush()  # every step's record before the terminal status
        self.deployment.refresh_from_db(fields=["status", "abort_requested"])
        if self.deployment.is_terminal:
            return
        if failure is None:
            self.deployment.succeed()
            self.log(self.success_line(seconds), step="done")
        elif failure.aborted:
            self.deployment.abort(failure.reason)
            self.log(f"Aborted after {seconds:.2f}s; rolled back.", level="warning", step="done")
        else:
            self.deployment.fail(failure.reason)
            self.log(f"Failed after {seconds:.2f}s: {failure.reason}", level="error", step="done")
        self.sink.status()
        self.announce_finished(failure, seconds)

    # Notifications (deployer.events)
    def _what(self) -> str:
        deployment = self.deployment
        return f"{deployment.get_kind_display()} #{deployment.pk} of {self.app}"

    def announce_started(self) -> None:
        """Emit ``started`` for this run."""
        events.emit(
            "started",
            f"{self._what()} ({self.deployment.image}) started.",
            deployment=self.deployment,
        )

    def announce_finished(self, failure: StopDeployment | None, seconds: float) -> None:
        """Emit succeeded, failed or aborted; and rolled_back when the switch was undone.

        ``rolled_back`` means users' traffic had been pointed at the new version (the
        switch had started) and the rollback pointed it back at the previous version (or
        removed the frontend when there was none); a failure before the switch, which
        only deletes the never-routed new version, is ``failed`` (or ``aborted``) alone.
        """
        deployment, what = self.deployment, self._what()
        if failure is None:
            events.emit("succeeded", f"{what}: {self.success_line(seconds)}", deployment=deployment)
            return
        details = {"reason": failure.reason}
        if failure.aborted:
            events.emit(
                "aborted",
                f"{what} was aborted and rolled back.",
                deployment=deployment,
                details=details,
            )
        else:
            events.emit(
                "failed", f"{what} failed: {failure.reason}", deployment=deployment, details=details
            )
        if self.switch_started:
            back = (
                f"v{self.previous_version}"
                if self.previous_version
                else "no version (the frontend was removed)"
            )
            events.emit(
                "rolled_back",
                f"{what}: traffic had moved to v{deployment.version} and was pointed back to {back}.",
                deployment=deployment,
                details={**details, "restored_version": self.previous_version},
            )

    def success_line(self, seconds: float) -> str:
        """The last log line of a successful run."""
        return (
            f"v{self.deployment.version} is live at "
            f"http://{self.hostname}{self.lb_port_suffix}/ (total {seconds:.2f}s)."
        )

    def recover(self, lost_worker: str) -> None:
        """Finish or roll back a RUNNING deployment whose worker died; leave nothing half-done."""
        self.log_lost_worker(lost_worker)
        self.previous_version = self.deployment.previous_version
        if self.previous_version:
            self.previous_backend = backend_name(self.namespace, self.name, self.previous_version)
        started = self.clock.monotonic()
        frontend = self.lb.get_frontend(self.hostname)
        self.switch_started = bool(
            self.deployment.version and frontend and frontend.get("backend") == self.new_backend()
        )
        try:
            failure = self.resume()
            self.finish(failure, self.clock.monotonic() - started)
        except TakenOver as taken:
            self.stop_taken_over(taken)

    def log_lost_worker(self, lost_worker: str) -> None:
        """Say in the log that the worker running this deployment was lost."""
        self.log(
            f"The worker running this deployment ({lost_worker or 'unknown'}) was lost; recovering.",
            level="warning",
            step="recover",
        )

    def resume(self) -> StopDeployment | None:
        """After a lost worker: roll back what its run did; None when a kind finished it instead."""
        failure = StopDeployment("the worker running this deployment was lost; rolled back")
        self.cleanup(failure)
        return failure

    # Traffic: shared by deploy and swap back
    def take_previous_backend(self) -> None:
        """Note the backend the hostname routes to now, if it is this app's; refuse another's."""
        frontend = self.lb.get_frontend(self.hostname)
        if frontend is None:
            return
        backend = str(frontend.get("backend", ""))
        record = self.lb.get_backend(backend)
        ours = f"{self.namespace}.{self.name}-v"
        if record is None:
            if backend.startswith(ours):
                self.previous_backend = backend
            return  # a route to nothing serves nothing: the name is free
        owner = (str(record.get("namespace", "")), str(record.get("app", "")))
        if owner != (self.namespace, self.name) and not backend.startswith(ours):
            raise StopDeployment(
                f"{self.hostname} routes to app {owner[0]}/{owner[1]}, which keeps the name until "
                "it deploys on another frontend or is undeployed; choose another frontend."
            )
        self.previous_backend = backend
        self.previous_version = version_of_backend(record)

    def servers(self) -> list[dict[str, Any]]:
        """Backend servers: every running pod of the version on the container port."""
        if (service := traffic.of(self)) is not None:
            return service.servers()  # the stable Service's ClusterIP
        return [
            {"name": pod.name, "address": pod.ip, "port": int(self.descriptor["container_port"])}
            for pod in sorted(self.pods, key=lambda p: p.name)
            if pod.ip
        ]

    def backend_options(self, version: int | None = None) -> dict[str, Any]:
        """The new version's (or ``version``'s) backend record without its servers."""
        version = version or self.deployment.version
        assert version is not None
        health = self.descriptor["health"]
        options: dict[str, Any] = {
            "app": self.name,
            "namespace": self.namespace,
            "version": version,
            "port": int(self.descriptor["container_port"]),
        }
        if health.get("enabled", True):
            options.update(check_path=health["path"], check_port=int(health["port"]))
        return {**options, **traffic.backend_options(self)}

    def write_route(self) -> Callable[[], None]:
        """Point the frontend at the new version's backend, once every load balancer has it.

        Returns what records the write (:meth:`record_route`), for the switch step's opening
        transaction.
        """
        self.check_owner()
        traffic.switch(self)  # service mode: the stable Service first, until it took effect
        backend = self.new_backend()
        if self.backend_revision:
            # Usually applied while the pods were health-checked; a refusal or timeout
            # stops the deploy before any traffic moved.
            waited = self.wait_applied(self.backend_revision, records=(f"backends/{backend}",))
            self.refuse_if_skipped(backend, waited.balancers)
            self.switch_started = True  # before the write: its outcome is unknown if it raises
            revision = self.lb.point_frontend(self.hostname, backend)
        else:
            # A swap back: the warm version's record is rewritten with the frontend.
            self.switch_started = True
            revision = self.lb.put_route(
                self.hostname, backend, self.servers(), backend_options=self.backend_options()
            )
        # Each load balancer's time to apply the switch counts from here.
        self.switch_written_at = time.monotonic()
        self.switch_revision = revision
        self.deployment.switched_at = timezone.now()
        return self.record_route

    def record_route(self) -> None:
        """Store the switch's time and say what was written (the switch step's first line)."""
        self.save("switched_at")
        self.log(
            f"Frontend {self.hostname} -> backend {self.new_backend()} ({len(self.servers())} "
            f"servers) written at etcd revision {self.switch_revision}; waiting for every load "
            "balancer.",
            step="switch",
        )

    def refuse_if_skipped(
        self, backend: str, balancers: Iterable[LoadBalancer] | None = None
    ) -> None:
        """StopDeployment when a load balancer left ``backend`` out (a record it refused).

        ``balancers``: as a wait just read them (default: read them now).
        """
        for balancer in self.lb.load_balancers() if balancers is None else balancers:
            skipped = (balancer.applied or {}).get("skipped") or {}
            if reason := skipped.get(f"backends/{backend}"):
                raise StopDeployment(
                    f"the load balancer refused backend {backend} on {balancer.id}: {reason}"
                )

    def switch(self) -> None:
        """Wait for every load balancer to acknowledge the route write_route wrote."""
        version, revision = self.deployment.version, self.switch_revision
        backend = self.new_backend()
        # Only this route and its backend: another app's new backend, which needs a
        # reload, does not hold the switch up (see deployer.proxysync).
        waited = self.wait_applied(
            revision,
            since=self.switch_written_at,
            records=(f"frontends/{self.hostname}", f"backends/{backend}"),
        )
        self.balancers = list(waited.balancers)
        with self.deferred():
            self.write(
                lambda: App.objects.filter(pk=self.deployment.app_id).update(live_version=version)
            )
            self.log(
                f"Load balancers applied revision {revision}: {waited.summary()}.", step="switch"
            )
            self.log_absent(waited, step="switch")

    def log_absent(self, waited: FleetWait, step: str) -> None:
        """Name each member the wait went on without: its proxysync does not answer."""
        for lb_id in waited.absent:
            self.log(
                f"{lb_id} is not registered (its proxysync does not answer) and keeps the "
                "previous routes until it is back.",
                level="warning",
                step=step,
            )

    def wait_applied(
        self,
        revision: int,
        since: float | None = None,
        records: tuple[str, ...] | None = None,
    ) -> FleetWait:
        """Wait until every live load balancer applied ``revision``; StopDeployment otherwise.

        With ``records``, only those records of it (WaitOptions). Otherwise: a load
        balancer refused it (named), the deadline passed (also when no load balancer is
        registered), or the user aborted.
        """
        waited = self.lb.wait_applied(
            revision,
            self.timing.apply_timeout,
            cancelled=self.abort_requested,
            since=since,
            records=records,
        )
        if not waited:
            self.check_abort()
            if waited.refused_by:
                raise StopDeployment(f"revision {revision} was not applied: {waited.problem}")
            raise StopDeployment(
                f"the load balancers did not apply revision {revision} within "
                f"{self.timing.apply_timeout:.0f}s ({waited.problem}); is proxysync running?"
            )
        return waited

    def wait_drained(self, revision: int, step: str = "retire") -> bool:
        """Wait until no HAProxy worker older than ``revision`` carries requests (bounded).

        False when pods must not stop yet: a load balancer whose proxysync is down still
        accepted connections at the deadline (it may still route to them; the log says
        which). True otherwise, also when live load balancers' old workers still held
        connections at the deadline (each pod finishes its requests after SIGTERM).
        """
        if not revision:
            return True
        started = self.clock.monotonic()
        waited = self.lb.wait_drained(revision, self.timing.drain_timeout)
        if not waited and waited.held_by:
            self.log(
                f"Held up by {', '.join(waited.held_by)} for {self.timing.drain_timeout:.0f}s: "
                f"{waited.problem}. It may still route to the old pods, so they keep running.",
                level="warning",
                step=step,
            )
            return False
        if waited:
            self.log(
                f"Old load balancer workers drained in "
                f"{(self.clock.monotonic() - started) * 1000:.0f} ms ({waited.summary()}).",
                step=step,
            )
        else:
            self.log(
                f"Old load balancer workers still hold connections after "
                f"{self.timing.drain_timeout:.0f}s ({waited.problem}); going on.",
                level="warning",
                step=step,
            )
        return True

    def verify(self) -> None:
        """Ask every live load balancer until the new version answers on every server in a row.

        The load balancers are those that applied the switch (or, after a lost worker,
        those live now).
        """
        balancers = self.balancers or self.lb.load_balancers()
        if not balancers:
            raise StopDeployment("no load balancer is registered to verify the new version through")
        deadline = self.clock.monotonic() + self.timing.verify_timeout
        for balancer in balancers:
            address = str(balancer.record.get("address", ""))
            last = self.verify_through(balancer.id, address, deadline)
            self.log_verified(balancer, address, last)

    def log_verified(self, balancer: LoadBalancer, address: str, last: str) -> None:
        """Say (deferred: the next load balancer is asked at once) that ``balancer`` serves it."""
        with self.deferred():
            if self.healthy_at is not None:
                latency = self.clock.monotonic() - self.healthy_at
                self.log(
                    f"v{self.deployment.version} answers through load balancer {balancer.id} "
                    f"at {address} ({last}); {latency * 1000:.0f} ms after the last pod "
                    "became healthy.",
                    step="verify",
                )
            else:
                self.log(
                    f"v{self.deployment.version} answers through load balancer {balancer.id} "
                    f"at {address} ({last}).",
                    step="verify",
                )

    def verify_through(self, lb_id: str, address: str, deadline: float) -> str:
        """Ask one load balancer until every server answered in a row; its last answer."""
        version = str(self.deployment.version)
        health = self.descriptor["health"]
        path = str(health["path"]) if health.get("enabled", True) else "/"
        needed = max(1, len(self.servers()))
        in_a_row, last = 0, ""
        while in_a_row < needed:
            self.check_abort()
            try:
                status, body = self.health.through_lb(address, self.hostname, path)
                healthy, detail, answered = judge(status, body, str(health.get("type", "")))
                ok = (healthy or not health.get("enabled", True)) and answered in ("", version)
                last = f"{detail}, version {answered or '?'}"
            except OSError as exc:
                ok, last = False, f"no answer: {exc}"
            in_a_row = in_a_row + 1 if ok else 0
            if in_a_row >= needed:
                break
            if self.clock.monotonic() >= deadline:
                raise StopDeployment(
                    f"v{version} did not answer through the load balancer {lb_id} at {address} "
                    f"within {self.timing.verify_timeout:.0f}s (last answer: {last})"
                )
            if not ok:
                self.clock.sleep(0.05)
        return last

    def delete_version(self, version: int, step: str = "retire") -> None:
        """Take the version's pods out of rotation, then delete its objects and backend record.

        When a load balancer whose proxysync is down may still route to them, the version
        stays (back in rotation) and its retirement is deferred.
        """
        self.check_owner()
        pods = self.cluster.pods(self.namespace, self.name, version)
        try:
            take_out(
                self.lb,
                [ServingPod(self.namespace, p.name, p.app, p.version) for p in pods],
                timeout=float(self.timing.drain_timeout),
                log=level_first(self, step),
            )
        except StillRouted as exc:
            self.defer_retire([version], str(exc))
            return
        self.cluster.delete_version(self.namespace, self.name, version)
        self.lb.delete_backend(backend_name(self.namespace, self.name, version))
        self.log(f"Deleted v{version} (Deployment, Service, backend record).", step="retire")

    def defer_retire(self, versions: list[int], why: str = "") -> None:
        """Leave ``versions`` running and retire them later (each load balancer back by then)."""
        delay = max(RETIRE_RETRY_SECONDS, 3 * float(self.timing.drain_timeout))
        for item in sorted(versions):
            self.schedule_retire(self.deployment.pk, item, delay)
            self.log(
                f"Retiring v{item} deferred by {delay:.0f}s: a load balancer whose proxysync "
                f"is down may still route to it{f' ({why})' if why else ''}; it keeps running "
                "until then.",
                level="warning",
                step="retire",
            )

    # Rollback
    def cleanup(self, failure: StopDeployment) -> None:
        """Undo what this run did: swap back after the switch, delete new objects before it.

        TakenOver (undoing nothing more) once the run belongs to another worker.
        """
        self.check_owner()
        self.log(f"Rolling back: {failure.reason}", level="warning", step="rollback")
        self._try(lambda: traffic.restore(self), "point the stable Service back")
        # Before the swap back, whose drain wait then covers the preview's requests too.
        self._try(lambda: preview.withdraw(self), "remove the preview")
        if self.switch_started:
            self._try(self.swap_back_route, "restore the previous route")
        if self.created:
            version = self.deployment.version
            assert version is not None
            if self.switch_started and not self.wait_drained(self.switch_revision, "rollback"):
                # A load balancer whose proxysync is down may have applied the switch.
                self.log(
                    f"Kept {self.name}-v{version}: a load balancer that may route to it has "
                    "not come back; delete it (undeploy or a later deploy) once it has.",
                    level="error",
                    step="rollback",
                )
                return
            self.check_owner()
            self._try(
                lambda: self.cluster.delete_version(self.namespace, self.name, version),
                f"delete {self.name}-v{version}",
            )
            self.log(f"Deleted {self.name}-v{version}; nothing of it is left.", step="rollback")
            if self.switch_started or self.backend_written:
                # Before the switch no frontend ever pointed at it: removing it is safe.
                self._try(
                    lambda: self.lb.delete_backend(self.new_backend()), "delete the new backend"
                )

    def swap_back_route(self) -> None:
        """Point the frontend back at the previous backend, or remove it if there was none."""
        self.check_owner()
        if self.previous_backend and self.lb.get_backend(self.previous_backend) is not None:
            revision = self.lb.point_frontend(self.hostname, self.previous_backend)
            restored: int | None = self.previous_version
            self.log(
                f"Frontend {self.hostname} points back to {self.previous_backend} "
                f"(revision {revision}).",
                level="warning",
                step="rollback",
            )
        else:
            revision = self.lb.delete_route(self.hostname, [])
            restored = None
            self.log(
                f"Removed frontend {self.hostname}: there was no previous version.",
                level="warning",
                step="rollback",
            )
        App.objects.filter(pk=self.deployment.app_id).update(live_version=restored)
        self.switch_revision = revision
        waited = self.lb.wait_applied(revision, self.timing.apply_timeout)
        if waited:
            self.log(
                f"Load balancers applied revision {revision}: {waited.summary()}.",
                step="rollback",
            )
        else:
            self.log(
                f"The load balancers have not yet applied revision {revision} "
                f"({waited.problem}); each will when its proxysync runs.",
                level="error",
                step="rollback",
            )

    def _try(self, action: Callable[[], None], what: str) -> None:
        try:
            action()
        except TakenOver:
            raise
        except Exception as exc:
            logger.exception("deployment #%s: could not %s", self.deployment.pk, what)
            self.log(f"Could not {what}: {exc}", level="error", step="rollback")
