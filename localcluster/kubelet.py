"""The process kubelet: runs the pods bound to one simulated node as local processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .controllers.events import EventRecorder
from .errors import NotFound, StatusError
from .images import Catalog
from .kubelet_container import ContainerLifecycle
from .kubelet_process import ContainerProcess, Reaper
from .kubelet_status import ContainerState, now, phase, pod_conditions, qos_class
from .store import Event, Store

log = logging.getLogger(__name__)

COMPONENT = "kubelet"
# What is left of the grace period after a preStop hook, at least (minimumGracePeriodInSeconds).
MIN_GRACE_AFTER_PRE_STOP = 2.0
# Status writes for one pod are coalesced over this window.
STATUS_COALESCE = 0.02


@dataclass
class KubeletContext:
    """What every kubelet of the cluster shares."""

    store: Store
    catalog: Catalog
    recorder: EventRecorder
    reaper: Reaper | None
    root: Path
    api_host: str
    api_port: int


class PodIPs:
    """Address management for one node's pod range, ``<prefix>.2`` to ``<prefix>.254``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._used: set[str] = set()

    def allocate(self, preferred: str | None = None) -> str:
        """Take ``preferred`` if it is free and in range, else the lowest free address."""
        if preferred and preferred.startswith(self.prefix + ".") and preferred not in self._used:
            self._used.add(preferred)
            return preferred
        for host in range(2, 255):
            ip = f"{self.prefix}.{host}"
            if ip not in self._used:
                self._used.add(ip)
                return ip
        raise RuntimeError(f"pod range {self.prefix}.0/24 is exhausted")

    def release(self, ip: str) -> None:
        """Return an address to the pool."""
        self._used.discard(ip)


class PodWorker(ContainerLifecycle):
    """Runs one pod: sandbox address, init containers, containers, probes, termination."""

    def __init__(self, kubelet: Kubelet, pod: dict[str, Any]) -> None:
        self.kubelet = kubelet
        self.ctx = kubelet.ctx
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.ip: str | None = None
        self.host_ip = kubelet.host_ip
        # Set once the containers are stopped for a deletion: the pod then reports a terminal phase.
        self.final = False
        self.shutting_down = False
        self.init_done = not pod["spec"].get("initContainers")
        self.states: dict[str, ContainerState] = {}
        self.procs: dict[str, ContainerProcess] = {}
        self.hook_context: dict[str, tuple[dict[str, str], str]] = {}
        self.respec: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.terminating = asyncio.Event()
        # Set when the grace period in progress is cut short (a force or shorter delete).
        self.hurry = asyncio.Event()
        self.gone = False
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.task: asyncio.Task[None] | None = None
        self.start_time: str = (pod.get("status") or {}).get("startTime") or now()
        # When this worker began: the probes tick in phase with it (see ``probe_loop``).
        self.probe_origin = time.monotonic()
        self._restore_states()

    # ------------------------------------------------------------------ bookkeeping

    def _restore_states(self) -> None:
        # After a localcluster restart the pod's processes are gone: count the lost runs as
        # restarts with an Unknown termination, as a kubelet does after a node reboot.
        old = {
            s["name"]: s
            for s in ((self.pod.get("status") or {}).get("containerStatuses") or [])
            + ((self.pod.get("status") or {}).get("initContainerStatuses") or [])
        }
        spec = self.pod["spec"]
        for init, containers in (
            (True, spec.get("initContainers") or []),
            (False, spec.get("containers") or []),
        ):
            for c in containers:
                state = ContainerState(c["name"], c.get("image", ""), init=init)
                previous = old.get(c["name"])
                if previous and previous.get("containerID"):
                    state.restart_count = int(previous.get("restartCount") or 0) + 1
                    state.last_state = {
                        "terminated": {
                            "exitCode": 255,
                            "reason": "Unknown",
                            "startedAt": (previous.get("state") or {})
                            .get("running", {})
                            .get("startedAt"),
                            "finishedAt": now(),
                            "containerID": previous["containerID"],
                        }
                    }
                self.states[c["name"]] = state

    def lost_runs(self) -> bool:
        """True when this pod ran before a restart, is still meant to run, and its processes are gone."""
        meta = self.pod["metadata"]
        finished = (self.pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        restored = any(s.last_state for s in self.states.values())
        return restored and not finished and not meta.get("deletionTimestamp")

    async def report_lost_runs(self) -> None:
        """Write the restored status now: containers waiting, restarts counted, not ready."""
        await self._write_status()

    def event(
        self, event_type: str, reason: str, message: str, field_path: str | None = None
    ) -> None:
        """Record an event about this pod from this node's kubelet."""
        self.ctx.recorder.record(
            self.pod, event_type, reason, message, COMPONENT, self.kubelet.node_name, field_path
        )

    def mark_dirty(self) -> None:
        """Ask the status writer to publish the current state."""
        self._dirty.set()

    def update(self, pod: dict[str, Any]) -> None:
        """Take a newer version of the pod from the store."""
        old_grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        self.pod = pod
        meta = pod["metadata"]
        if not meta.get("deletionTimestamp"):
            self.spec_changed(pod)
            if pod["spec"].get("readinessGates") and self.ip is not None:
                # A gate's condition is set by someone else; Ready follows it. An unchanged
                # status is a no-op write (no event), so this does not loop.
                self.mark_dirty()
        if meta.get("deletionTimestamp"):
            self.terminating.set()
            grace = meta.get("deletionGracePeriodSeconds")
            if old_grace is not None and grace is not None and int(grace) < int(old_grace):
                # A second delete with a shorter grace period cuts the running one short.
                self.hurry.set()

    def deleted(self) -> None:
        """The pod object is gone (force deletion): stop at once, write nothing."""
        self.gone = True
        self.terminating.set()
        self.hurry.set()

    # ------------------------------------------------------------------ status

    def render_status(self, current: dict[str, Any]) -> dict[str, Any]:
        """The status this kubelet reports, merged over the stored one."""
        status = dict(current.get("status") or {})
        states = list(self.states.values())
        pod_phase = phase(current, self.init_done, states)
        if self.final and pod_phase not in ("Succeeded", "Failed"):
            # Kubelets since 1.27 end a deleted pod in a terminal phase (KEP-3329).
            regular = [s for s in states if not s.init]
            clean = all((s.terminated or {}).get("exitCode") == 0 for s in regular)
            pod_phase = "Succeeded" if regular and clean else "Failed"
        status["phase"] = pod_phase
        status["conditions"] = pod_conditions(
            current, self.ip is not None, self.init_done, pod_phase, states
        )
        host_ip = self.kubelet.host_ip
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
        if self.ip:
            status["podIP"] = self.ip
            status["podIPs"] = [{"ip": self.ip}]
        status["startTime"] = self.start_time
        status.setdefault("qosClass", qos_class(current))
        inits = [s.render() for s in states if s.init]
        if inits:
            status["initContainerStatuses"] = inits
        status["containerStatuses"] = sorted(
            (s.render() for s in states if not s.init), key=lambda s: s["name"]
        )
        return status

    async def _write_status(self) -> None:
        def apply(current: dict[str, Any]) -> None:
            current["status"] = self.render_status(current)

        try:
            # The stored object itself: a worker only reads its pod, as it does the events'.
            pod = await self.ctx.store.mutate(
                "pods", self.namespace, self.name, apply, subresource="status", copy_result=False
            )
        except NotFound:
            self.gone = True
            self.terminating.set()
            return
        if pod["metadata"]["uid"] != self.uid:
            return
        self.pod = pod

    async def _status_writer(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(STATUS_COALESCE)
            self._dirty.clear()
            if self.gone:
                return
            await self._write_status()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run the pod until it is deleted, then stop its containers and remove it."""
        status = self.pod.get("status") or {}
        if self.pod["metadata"].get("deletionTimestamp") and not self.procs:
            await self._finish()
            return
        if (
            status.get("phase") in ("Succeeded", "Failed")
            and self.pod["metadata"].get("deletionTimestamp") is None
        ):
            # A finished pod is not run again after a restart; it waits to be deleted.
            await self.terminating.wait()
            await self._finish()
            return
        if not any(s.container_id or s.restart_count for s in self.states.values()):
            # A new pod may reuse the name of a deleted one: its logs are not this pod's.
            shutil.rmtree(self._log_dir(), ignore_errors=True)
        self.ip = self.kubelet.ips.allocate(status.get("podIP"))
        writer = asyncio.create_task(self._status_writer())
        self.mark_dirty()
        try:
            main = asyncio.create_task(self._run_containers())
            waiter = asyncio.create_task(self.terminating.wait())
            await asyncio.wait({main, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if main.done():
                # Every container has stopped for good (restartPolicy): wait for deletion.
                await self.terminating.wait()
            waiter.cancel()
            # Stopping the processes ends the runners: they see `terminating` and return.
            await self._stop_containers(self._grace())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(main), 5)
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main
        finally:
            for task in self._tasks:
                task.cancel()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        await self._finish()

    def _grace(self) -> float:
        if self.gone:
            return 1.0
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        return float(grace)

    async def _finish(self) -> None:
        if self.ip:
            self.kubelet.ips.release(self.ip)
            self.ip = None
        self.kubelet.forget(self)
        if self.shutting_down:
            return  # localcluster or the node is stopping: the pod and its logs stay
        # Off the event loop (a pod's files take milliseconds to remove, many pods seconds),
        # but before the pod's removal: its name, and so its log folder, stays taken until then.
        await asyncio.to_thread(self._remove_files)
        if self.gone:
            return
        with contextlib.suppress(NotFound):
            # The final statuses (terminated containers) first, then the removal.
            if any(s.container_id for s in self.states.values()):
                self.final = True
                await self._write_status()
            await self.ctx.store.delete(
                "pods",
                self.namespace,
                self.name,
                grace_period_seconds=0,
                preconditions={"uid": self.uid},
            )

    def _remove_files(self) -> None:
        shutil.rmtree(self.ctx.root / "pods" / self.uid, ignore_errors=True)
        shutil.rmtree(self._log_dir(), ignore_errors=True)

    def _log_dir(self) -> Path:
        return self.ctx.store.log_path(self.namespace, self.name, "-").parent

    async def shutdown(self, grace: float) -> None:
        """Stop every process (localcluster or the node is going away); no API writes."""
        self.shutting_down = True
        self.gone = True
        self.terminating.set()
        await self._stop_containers(grace)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    async def _stop_containers(self, grace: float) -> None:
        specs = {c["name"]: c for c in self.pod["spec"].get("containers") or []}

        async def stop(name: str, proc: ContainerProcess) -> None:
            remaining = grace
            pre_stop = (specs.get(name, {}).get("lifecycle") or {}).get("preStop")
            if pre_stop and not self.gone:
                # killContainer: the hook eats into the grace period, leaving at least 2 s.
                started = time.monotonic()
                error = await self.run_hook(name, pre_stop, grace)
                if error is not None:
                    self.event("Warning", "FailedPreStopHook", error, self._field_path(name))
                remaining = max(grace - (time.monotonic() - started), MIN_GRACE_AFTER_PRE_STOP)
            await proc.stop(remaining, self.hurry)

        procs = list(self.procs.items())
        for name, _ in procs:
            if not self.gone:
                self.event(
                    "Normal", "Killing", f"Stopping container {name}", self._field_path(name)
                )
        await asyncio.gather(*(stop(name, proc) for name, proc in procs), return_exceptions=True)

    async def _run_containers(self) -> None:
        spec = self.pod["spec"]
        policy = spec.get("restartPolicy", "Always")
        for c in spec.get("initContainers") or []:
            # Init containers restart on failure unless the pod's policy is Never.
            init_policy = "Never" if policy == "Never" else "OnFailure"
            code = await self._run_container(c, init_policy)
            if code != 0:
                self.mark_dirty()
                return
        self.init_done = True
        self.mark_dirty()
        runners = [
            asyncio.create_task(self._run_container(c, policy))
            for c in spec.get("containers") or []
        ]
        self._tasks.extend(runners)
        await asyncio.gather(*runners)
        self.mark_dirty()


class Kubelet:
    """The kubelet of one simulated node: a PodWorker per pod bound to the node."""

    def __init__(self, ctx: KubeletContext, node_name: str, host_ip: str, pod_prefix: str) -> None:
        self.ctx = ctx
        self.node_name = node_name
        self.host_ip = host_ip
        self.ips = PodIPs(pod_prefix)
        self.workers: dict[str, PodWorker] = {}
        self.stopped = False

    async def start(self) -> None:
        """Take up the pods already bound to this node (after a restart).

        A pod whose processes were lost is first reported as restarting (the lost runs
        counted, not ready) before its containers start again, and before the API serves
        requests: nobody sees the previous run's Ready status for processes that are gone.
        """
        for entry in self.ctx.store.select("pods", None, None, f"spec.nodeName={self.node_name}"):
            pod = entry.obj
            uid = pod["metadata"]["uid"]
            if uid in self.workers or self.stopped:
                continue
            worker = PodWorker(self, pod)
            self.workers[uid] = worker  # events of the status write below go to this worker
            if worker.lost_runs():
                await worker.report_lost_runs()
            self._launch(worker)

    def on_pod_event(self, event: Event) -> None:
        """Store listener hook for changes to pods bound to this node."""
        if self.stopped:
            return
        uid = event.obj["metadata"]["uid"]
        worker = self.workers.get(uid)
        if event.type == "DELETED":
            if worker is not None:
                worker.deleted()
            return
        if worker is None:
            self._ensure(event.obj)
        else:
            worker.update(event.obj)

    def _ensure(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self.workers or self.stopped:
            return
        worker = PodWorker(self, pod)
        self.workers[uid] = worker
        self._launch(worker)

    def _launch(self, worker: PodWorker) -> None:
        worker.task = asyncio.create_task(self._guard(worker), name=f"pod {worker.name}")

    async def _guard(self, worker: PodWorker) -> None:
        try:
            await worker.run()
        except asyncio.CancelledError:
            raise
        except StatusError as exc:
            log.warning("pod %s/%s: %s", worker.namespace, worker.name, exc)
        except Exception:
            log.exception("pod %s/%s failed in the kubelet", worker.namespace, worker.name)
        finally:
            self.forget(worker)

    def forget(self, worker: PodWorker) -> None:
        """Drop a finished worker."""
        if self.workers.get(worker.uid) is worker:
            del self.workers[worker.uid]

    async def stop(self, grace: float = 3.0) -> None:
        """Stop every pod process within ``grace`` seconds (no status writes)."""
        self.stopped = True
        workers = list(self.workers.values())
        await asyncio.gather(*(w.shutdown(grace) for w in workers), return_exceptions=True)
        self.workers.clear()
