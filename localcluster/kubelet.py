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
from .images import Catalog, ImageNotFound
from .kubelet_env import ConfigError, container_argv, container_env
from .kubelet_logs import start_run
from .kubelet_probes import ProbeResult, probe_loop, run_probe
from .kubelet_process import ContainerProcess, Reaper
from .kubelet_status import ContainerState, container_id, now, phase, pod_conditions, qos_class
from .store import Event, Store

log = logging.getLogger(__name__)

COMPONENT = "kubelet"
# Crash-loop and image-pull backoff: 10 s doubling to 5 min, reset after 10 min of running.
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0
# How long ErrImagePull shows before the kubelet's next sync turns it into ImagePullBackOff.
PULL_ERROR_HOLD = 1.0
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


class Backoff:
    """The kubelet's per-container backoff: first retry at once, then 10 s doubling to 5 min."""

    def __init__(self, immediate_first: bool) -> None:
        self._next = 0.0 if immediate_first else BACKOFF_INITIAL

    def next(self) -> float:
        """The delay before the next attempt (and advance)."""
        delay = self._next
        self._next = min(max(delay * 2, BACKOFF_INITIAL), BACKOFF_MAX)
        return delay

    def reset(self, immediate_first: bool = True) -> None:
        """Forget past failures (after a long healthy run)."""
        self._next = 0.0 if immediate_first else BACKOFF_INITIAL


class PodWorker:
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
        self.init_done = not pod["spec"].get("initContainers")
        self.states: dict[str, ContainerState] = {}
        self.procs: dict[str, ContainerProcess] = {}
        self.terminating = asyncio.Event()
        self.gone = False
        self._dirty = asyncio.Event()
        self._tasks: list[asyncio.Task[Any]] = []
        self.task: asyncio.Task[None] | None = None
        self.start_time: str = (pod.get("status") or {}).get("startTime") or now()
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
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.terminating.set()

    def deleted(self) -> None:
        """The pod object is gone (force deletion): stop at once, write nothing."""
        self.gone = True
        self.terminating.set()

    # ------------------------------------------------------------------ status

    def render_status(self, current: dict[str, Any]) -> dict[str, Any]:
        """The status this kubelet reports, merged over the stored one."""
        status = dict(current.get("status") or {})
        states = list(self.states.values())
        pod_phase = phase(current, self.init_done, states)
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
            pod = await self.ctx.store.mutate(
                "pods", self.namespace, self.name, apply, subresource="status"
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
        shutil.rmtree(self.ctx.root / "pods" / self.uid, ignore_errors=True)
        if self.gone:
            return
        with contextlib.suppress(NotFound):
            # The final statuses (terminated containers) first, then the removal.
            if any(s.container_id for s in self.states.values()):
                await self._write_status()
            await self.ctx.store.delete(
                "pods",
                self.namespace,
                self.name,
                grace_period_seconds=0,
                preconditions={"uid": self.uid},
            )

    async def shutdown(self, grace: float) -> None:
        """Stop every process (localcluster or the node is going away); no API writes."""
        self.gone = True
        self.terminating.set()
        await self._stop_containers(grace)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task

    async def _stop_containers(self, grace: float) -> None:
        procs = list(self.procs.items())
        for name, _ in procs:
            if not self.gone:
                self.event(
                    "Normal", "Killing", f"Stopping container {name}", self._field_path(name)
                )
        await asyncio.gather(*(proc.stop(grace) for _, proc in procs), return_exceptions=True)

    def _field_path(self, name: str) -> str:
        kind = "initContainers" if self.states[name].init else "containers"
        return f"spec.{kind}{{{name}}}"

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

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the pod starts terminating; True if it did."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.terminating.wait(), seconds)
        return self.terminating.is_set()

    async def _run_container(self, spec: dict[str, Any], policy: str) -> int:
        """Run one container through restarts; return its last exit code once it stops for good."""
        name = spec["name"]
        state = self.states[name]
        field_path = self._field_path(name)
        image_name = spec.get("image", "")
        pull_backoff = Backoff(immediate_first=False)
        crash_backoff = Backoff(immediate_first=True)
        pulled = False
        code = -1
        while not self.terminating.is_set():
            try:
                image = self.ctx.catalog.resolve(image_name)
            except ImageNotFound as exc:
                self.event("Normal", "Pulling", f'Pulling image "{image_name}"', field_path)
                self.event(
                    "Warning", "Failed", f'Failed to pull image "{image_name}": {exc}', field_path
                )
                self.event("Warning", "Failed", "Error: ErrImagePull", field_path)
                state.state = {"waiting": {"reason": "ErrImagePull", "message": str(exc)}}
                self.mark_dirty()
                if await self._sleep(PULL_ERROR_HOLD):
                    break
                message = f'Back-off pulling image "{image_name}"'
                state.state = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
                self.event("Normal", "BackOff", message, field_path)
                self.event("Warning", "Failed", "Error: ImagePullBackOff", field_path)
                self.mark_dirty()
                if await self._sleep(pull_backoff.next()):
                    break
                continue
            state.ref = image.ref
            if not pulled:
                pulled = True
                self._pull_events(spec, image_name, field_path)
            extra = {
                "LOCALCLUSTER_POD_IP": self.ip or "",
                "KUBERNETES_SERVICE_HOST": self.ctx.api_host,
                "KUBERNETES_SERVICE_PORT": str(self.ctx.api_port),
            }
            try:
                env = container_env(self.ctx.store, self.pod, spec, image, extra)
            except ConfigError as exc:
                state.state = {
                    "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
                }
                self.event("Warning", "Failed", f"Error: {exc}", field_path)
                self.mark_dirty()
                if await self._sleep(pull_backoff.next()):
                    break
                continue
            argv = container_argv(spec, image, env)
            code = await self._start_and_wait(spec, state, argv, env, image.workdir, field_path)
            if self.terminating.is_set():
                break
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                break
            terminated = state.state.get("terminated") or {}
            if self._ran_for(terminated) >= BACKOFF_RESET:
                crash_backoff.reset()
            delay = crash_backoff.next()
            state.last_state = {"terminated": terminated}
            if delay > 0:
                state.state = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {delay:g}s restarting failed container={name} "
                        f"pod={self.name}_{self.namespace}({self.uid})",
                    }
                }
                self.event(
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {name} in pod {self.name}_{self.namespace}({self.uid})",
                    field_path,
                )
                self.mark_dirty()
                if await self._sleep(delay):
                    break
            state.restart_count += 1
        return code

    @staticmethod
    def _ran_for(terminated: dict[str, Any]) -> float:
        started = terminated.get("startedAt")
        finished = terminated.get("finishedAt")
        if not started or not finished:
            return 0.0
        fmt = "%Y-%m-%dT%H:%M:%SZ"
        return time.mktime(time.strptime(finished, fmt)) - time.mktime(time.strptime(started, fmt))

    def _pull_events(self, spec: dict[str, Any], image_name: str, field_path: str) -> None:
        policy = spec.get("imagePullPolicy") or (
            "Always"
            if image_name.endswith(":latest") or ":" not in image_name.rsplit("/", 1)[-1]
            else "IfNotPresent"
        )
        if policy == "Always":
            self.event("Normal", "Pulling", f'Pulling image "{image_name}"', field_path)
            self.event(
                "Normal",
                "Pulled",
                f'Successfully pulled image "{image_name}" in 1ms (1ms including waiting). Image size: 0 bytes.',
                field_path,
            )
        else:
            self.event(
                "Normal",
                "Pulled",
                f'Container image "{image_name}" already present on machine',
                field_path,
            )

    async def _start_and_wait(
        self,
        spec: dict[str, Any],
        state: ContainerState,
        argv: list[str],
        env: dict[str, str],
        workdir: str | None,
        field_path: str,
    ) -> int:
        name = spec["name"]
        store = self.ctx.store
        cwd = self.ctx.root / "pods" / self.uid / name
        cwd.mkdir(parents=True, exist_ok=True)
        run_dir = spec.get("workingDir") or workdir
        if run_dir and Path(run_dir).is_dir():
            cwd = Path(run_dir)
        clog = start_run(
            store.log_path(self.namespace, self.name, name),
            store.log_path(self.namespace, self.name, name, previous=True),
        )
        cid = container_id(self.uid, name, state.restart_count)
        started_at = now()
        try:
            proc = await ContainerProcess.spawn(argv, env, str(cwd), clog.write, self.ctx.reaper)
        except OSError as exc:
            message = (
                "failed to create containerd task: failed to create shim task: OCI runtime create "
                f'failed: exec: "{argv[0] if argv else ""}": {exc.strerror or exc}'
            )
            clog.close()
            state.container_id = cid
            state.state = {
                "terminated": {
                    "exitCode": 128,
                    "reason": "StartError",
                    "message": message,
                    "startedAt": "1970-01-01T00:00:00Z",
                    "finishedAt": now(),
                    "containerID": cid,
                }
            }
            self.event("Warning", "Failed", f"Error: {message}", field_path)
            self.mark_dirty()
            return 128
        self.procs[name] = proc
        state.container_id = cid
        startup = spec.get("startupProbe")
        readiness = spec.get("readinessProbe")
        liveness = spec.get("livenessProbe")
        state.state = {"running": {"startedAt": started_at}}
        state.started = startup is None
        state.ready = state.started and readiness is None
        self.event("Normal", "Created", f"Created container: {name}", field_path)
        self.event("Normal", "Started", f"Started container {name}", field_path)
        self.mark_dirty()
        probes = self._start_probes(
            spec, state, proc, env, str(cwd), field_path, startup, readiness, liveness
        )
        try:
            code = await proc.wait()
        finally:
            for task in probes:
                task.cancel()
            self.procs.pop(name, None)
            clog.close()
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started_at,
            "finishedAt": now(),
            "containerID": cid,
        }
        if proc.signal is not None:
            terminated["signal"] = proc.signal
        state.state = {"terminated": terminated}
        state.ready = False
        state.started = False
        self.mark_dirty()
        return code

    def _start_probes(
        self,
        spec: dict[str, Any],
        state: ContainerState,
        proc: ContainerProcess,
        env: dict[str, str],
        cwd: str,
        field_path: str,
        startup: dict[str, Any] | None,
        readiness: dict[str, Any] | None,
        liveness: dict[str, Any] | None,
    ) -> list[asyncio.Task[None]]:
        started = asyncio.Event()
        if startup is None:
            started.set()

        def runner(probe: dict[str, Any]) -> Any:
            return lambda: run_probe(probe, self.ip or "", spec, env, cwd)

        async def kill(kind: str, probe: dict[str, Any]) -> None:
            self.event(
                "Normal",
                "Killing",
                f"Container {spec['name']} failed {kind} probe, will be restarted",
                field_path,
            )
            grace = probe.get("terminationGracePeriodSeconds")
            if grace is None:
                grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
            await proc.stop(float(grace))

        async def on_startup(result: ProbeResult, healthy: bool, tripped: bool) -> bool:
            assert startup is not None
            if healthy:
                state.started = True
                state.ready = readiness is None
                started.set()
                self.mark_dirty()
                return True  # a startup probe stops once it has passed
            self.event(
                "Warning", "Unhealthy", f"Startup probe failed: {result.message}", field_path
            )
            if tripped:
                await kill("startup", startup)
                return True
            return False

        async def on_readiness(result: ProbeResult, healthy: bool, tripped: bool) -> bool:
            if not result.ok:
                self.event(
                    "Warning", "Unhealthy", f"Readiness probe failed: {result.message}", field_path
                )
            if state.ready != healthy:
                state.ready = healthy
                self.mark_dirty()
            return False

        async def on_liveness(result: ProbeResult, healthy: bool, tripped: bool) -> bool:
            assert liveness is not None
            if not result.ok:
                self.event(
                    "Warning", "Unhealthy", f"Liveness probe failed: {result.message}", field_path
                )
            if tripped:
                await kill("liveness", liveness)
                return True
            return False

        async def after_start(probe: dict[str, Any], report: Any, initial: bool) -> None:
            await started.wait()
            await probe_loop(probe, runner(probe), report, initial)

        tasks: list[asyncio.Task[None]] = []
        if startup is not None:
            # A startup probe reports a failure only once failureThreshold is reached.
            tasks.append(
                asyncio.create_task(probe_loop(startup, runner(startup), on_startup, False))
            )
        if readiness is not None:
            tasks.append(asyncio.create_task(after_start(readiness, on_readiness, False)))
        if liveness is not None:
            tasks.append(asyncio.create_task(after_start(liveness, on_liveness, True)))
        return tasks


class Kubelet:
    """The kubelet of one simulated node: a PodWorker per pod bound to the node."""

    def __init__(self, ctx: KubeletContext, node_name: str, host_ip: str, pod_prefix: str) -> None:
        self.ctx = ctx
        self.node_name = node_name
        self.host_ip = host_ip
        self.ips = PodIPs(pod_prefix)
        self.workers: dict[str, PodWorker] = {}
        self.stopped = False

    def start(self) -> None:
        """Take up the pods already bound to this node (after a restart)."""
        for entry in self.ctx.store.select("pods", None, None, f"spec.nodeName={self.node_name}"):
            self._ensure(entry.obj)

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
        worker.task = asyncio.create_task(
            self._guard(worker), name=f"pod {pod['metadata']['name']}"
        )

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
