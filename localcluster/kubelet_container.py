"""Container runs inside a pod: image resolution, start, probes, restarts with backoff."""

from __future__ import annotations

import abc
import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .images import ImageNotFound
from .kubelet_env import ConfigError, container_argv, container_env
from .kubelet_logs import start_run
from .kubelet_probes import (
    ProbeResult,
    ProbeTarget,
    exec_command,
    http_get,
    probe_loop,
    run_probe,
)
from .kubelet_process import ContainerProcess
from .kubelet_status import ContainerState, container_id, now

if TYPE_CHECKING:
    from .kubelet import KubeletContext

# Crash-loop and image-pull backoff: 10 s doubling to 5 min, reset after 10 min of running.
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0
# How long ErrImagePull shows before the kubelet's next sync turns it into ImagePullBackOff.
PULL_ERROR_HOLD = 1.0
# A postStart hook that runs longer than this counts as failed.
POST_START_TIMEOUT = 30.0


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


class ContainerLifecycle(abc.ABC):
    """The container half of a PodWorker: runs each container through its restarts."""

    ctx: KubeletContext
    pod: dict[str, Any]
    uid: str
    name: str
    namespace: str
    ip: str | None
    host_ip: str
    states: dict[str, ContainerState]
    procs: dict[str, ContainerProcess]
    terminating: asyncio.Event
    # (env, working directory) of each running container, for its lifecycle hooks.
    hook_context: dict[str, tuple[dict[str, str], str]]
    probe_origin: float
    # Set per container when its spec (image) changes under it.
    respec: dict[str, asyncio.Event]
    _background: set[asyncio.Task[None]]

    @abc.abstractmethod
    def event(
        self, event_type: str, reason: str, message: str, field_path: str | None = None
    ) -> None:
        """Record an event about the pod (implemented by PodWorker)."""

    @abc.abstractmethod
    def mark_dirty(self) -> None:
        """Ask for a status write (implemented by PodWorker)."""

    async def run_hook(self, name: str, handler: dict[str, Any], timeout: float) -> str | None:
        """Run a postStart/preStop handler (exec, httpGet, sleep); the error message or None."""
        env, cwd = self.hook_context.get(name, ({}, "/"))
        spec = next((c for c in self.pod["spec"].get("containers") or [] if c["name"] == name), {})
        try:
            async with asyncio.timeout(max(timeout, 0.1)):
                if "sleep" in handler:
                    await asyncio.sleep(float((handler["sleep"] or {}).get("seconds", 0)))
                    return None
                if "exec" in handler:
                    result = await exec_command(handler["exec"], env, cwd, timeout)
                    kind, what = "Exec", str((handler["exec"] or {}).get("command"))
                elif "httpGet" in handler:
                    target = ProbeTarget(self.ip or "", spec, timeout, self.host_ip)
                    result = await http_get(handler["httpGet"], target)
                    kind, what = "HTTP", str((handler["httpGet"] or {}).get("path", "/"))
                else:
                    return "lifecycle handler has no exec, httpGet or sleep action"
        except TimeoutError:
            return f"lifecycle hook for container {name!r} timed out after {timeout:g}s"
        if result.ok:
            return None
        return (
            f"{kind} lifecycle hook ({what}) for Container {name!r} in Pod "
            f"{self.name}_{self.namespace}({self.uid}) failed - error: {result.message}"
        )

    def _field_path(self, name: str) -> str:
        kind = "initContainers" if self.states[name].init else "containers"
        return f"spec.{kind}{{{name}}}"

    async def _sleep(self, seconds: float, name: str | None = None) -> bool:
        """Sleep unless the pod starts terminating (True) or container ``name``'s spec changes."""
        waiters = {asyncio.ensure_future(self.terminating.wait())}
        if name is not None:
            waiters.add(asyncio.ensure_future(self.respec[name].wait()))
        _, pending = await asyncio.wait(
            waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for future in pending:
            future.cancel()
        return self.terminating.is_set()

    def spec_changed(self, pod: dict[str, Any]) -> None:
        """Restart containers whose image changed, as the kubelet does on a container hash change.

        Runs inside the store's change listener, so the work itself happens in a task.
        """
        for container in pod["spec"].get("containers") or []:
            name = container["name"]
            state = self.states.get(name)
            changed = self.respec.get(name)
            if (
                state is None
                or changed is None
                or changed.is_set()  # already restarting for this change
                or state.image == container.get("image", state.image)
            ):
                continue
            changed.set()
            proc = self.procs.get(name)
            if proc is not None:
                grace = float(pod["spec"].get("terminationGracePeriodSeconds", 30))
                task = asyncio.create_task(self._restart_for_spec(name, proc, grace))
                self._background.add(task)
                task.add_done_callback(self._background.discard)

    async def _restart_for_spec(self, name: str, proc: ContainerProcess, grace: float) -> None:
        self.event(
            "Normal",
            "Killing",
            f"Container {name} definition changed, will be restarted",
            self._field_path(name),
        )
        await proc.stop(grace)

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
        self.respec[name] = asyncio.Event()
        while not self.terminating.is_set():
            if self.respec[name].is_set():
                # The pod's container image was updated: run the new one, no backoff owed.
                self.respec[name] = asyncio.Event()
                spec = next(
                    (c for c in self.pod["spec"].get("containers") or [] if c["name"] == name), spec
                )
                image_name = state.image = spec.get("image", "")
                pulled = False
                pull_backoff.reset(immediate_first=False)
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
                if await self._sleep(PULL_ERROR_HOLD, name):
                    break
                message = f'Back-off pulling image "{image_name}"'
                state.state = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
                self.event("Normal", "BackOff", message, field_path)
                self.event("Warning", "Failed", "Error: ImagePullBackOff", field_path)
                self.mark_dirty()
                if await self._sleep(pull_backoff.next(), name):
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
            launched = time.monotonic()
            code = await self._start_and_wait(spec, state, argv, env, image.workdir, field_path)
            if self.terminating.is_set():
                break
            terminated = state.state.get("terminated") or {}
            if self.respec[name].is_set():
                state.last_state = {"terminated": terminated}
                state.restart_count += 1
                continue
            if policy == "Never" or (policy == "OnFailure" and code == 0):
                break
            # Measured here, not from the status: a StartError reports startedAt 1970.
            if time.monotonic() - launched >= BACKOFF_RESET:
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
                if await self._sleep(delay, name):
                    break
            state.restart_count += 1
        return code

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
        except (OSError, ValueError) as exc:
            # ValueError: an argument or env value the OS cannot take (a NUL byte, say).
            reason = getattr(exc, "strerror", None) or exc
            message = (
                "failed to create containerd task: failed to create shim task: OCI runtime create "
                f'failed: exec: "{argv[0] if argv else ""}": {reason}'
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
        self.hook_context[name] = (env, str(cwd))
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
        post_start = (spec.get("lifecycle") or {}).get("postStart")
        if post_start:
            # The kubelet kills a container whose postStart hook fails; restartPolicy decides next.
            error = await self.run_hook(name, post_start, POST_START_TIMEOUT)
            if error is not None:
                self.event("Warning", "FailedPostStartHook", error, field_path)
                self.event("Normal", "Killing", "FailedPostStartHook", field_path)
                await proc.stop(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)))
        probes = self._start_probes(
            spec, state, proc, env, str(cwd), field_path, startup, readiness, liveness
        )
        try:
            code = await proc.wait()
        finally:
            for task in probes:
                task.cancel()
            self.procs.pop(name, None)
            self.hook_context.pop(name, None)
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
            return lambda: run_probe(probe, self.ip or "", spec, env, cwd, self.host_ip)

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

        def unhealthy(probe: str, result: ProbeResult) -> None:
            self.event(
                "Warning", "Unhealthy", f"{probe} probe failed: {result.message}", field_path
            )

        async def on_startup(result: ProbeResult, healthy: bool, tripped: bool) -> bool:
            assert startup is not None
            if healthy:
                state.started = True
                state.ready = readiness is None
                started.set()
                self.mark_dirty()
                return True  # a startup probe stops once it has passed
            unhealthy("Startup", result)
            if tripped:
                await kill("startup", startup)
                return True
            return False

        async def on_readiness(result: ProbeResult, healthy: bool, tripped: bool) -> bool:
            if not result.ok:
                unhealthy("Readiness", result)
            if state.ready != healthy:
                state.ready = healthy
                self.mark_dirty()
            return False

        async def on_liveness(result: ProbeResult, healthy: bool, tripped: bool) -> bool:
            assert liveness is not None
            if not result.ok:
                unhealthy("Liveness", result)
            if tripped:
                await kill("liveness", liveness)
                return True
            return False

        async def after_start(probe: dict[str, Any], report: Any, initial: bool) -> None:
            await started.wait()
            await probe_loop(probe, runner(probe), report, initial, self.probe_origin)

        tasks: list[asyncio.Task[None]] = []
        if startup is not None:
            # A startup probe reports a failure only once failureThreshold is reached.
            tasks.append(
                asyncio.create_task(
                    probe_loop(startup, runner(startup), on_startup, False, self.probe_origin)
                )
            )
        if readiness is not None:
            tasks.append(asyncio.create_task(after_start(readiness, on_readiness, False)))
        if liveness is not None:
            tasks.append(asyncio.create_task(after_start(liveness, on_liveness, True)))
        return tasks
