"""Drain a node safely: cordon, take each pod out of rotation, evict it, wait.

Pods that Greenlight routes to leave the load balancer before their eviction
(deployer.rotation): the server is drained, then the pod evicted. The pods of one
version go one at a time: the next leaves only once its backend has as many servers as
when the drain began, that is once the replacement is Ready and serving. Pods of
different versions, and pods Greenlight does not route to, are evicted in parallel.
Evictions respect PodDisruptionBudgets (a 429 is retried with backoff until the
deadline), skip DaemonSet and mirror pods (they would come straight back), refuse
pods that no controller would replace unless forced, and honour each pod's grace
period. Past the deadline the node is uncordoned and ``DrainFailed`` says why.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from deployer.cluster import MANAGED_BY, MANAGER
from deployer.errors import KubeError, NotFound, StoreError, TooManyRequests, Transient
from deployer.events import emit
from deployer.pods import PodInfo
from deployer.rotation import LogFn, Removal, ServingPod, StillRouted
from scaling.kube import NodeOps


class Rotation(Protocol):
    """Pods in and out of the load balancer (deployer.rotation.PodRotation)."""

    def take_out(self, pod: ServingPod, timeout: float, log: LogFn) -> Removal: ...
    def put_back(self, removal: Removal, log: LogFn) -> None: ...
    def serving(self, pod: ServingPod) -> int | None: ...


def serving_pod(pod: PodInfo) -> ServingPod | None:
    """The pod as a load balancer server, when Greenlight manages (and so routes) it."""
    if pod.labels.get(MANAGED_BY) != MANAGER:
        return None
    version = pod.labels.get("version", "")
    app = pod.labels.get("app", "")
    if not app or not version.isdigit():
        return None
    return ServingPod(pod.namespace, pod.name, app, int(version))


@dataclass(frozen=True)
class DrainOptions:
    """How hard to try: the deadline, forcing unmanaged pods, a grace override and the backoff."""

    deadline_seconds: float = 300.0
    force: bool = False
    grace_seconds: int | None = None
    backoff_initial: float = 0.25
    backoff_max: float = 5.0
    max_parallel: int = 64


@dataclass
class DrainReport:
    """What a drain did: evicted pods, skipped pods with reasons, 429 retries, wall time."""

    node: str
    evicted: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    retries: int = 0
    seconds: float = 0.0


class DrainFailed(Exception):
    """The drain did not complete; the node was uncordoned. ``str(exc)`` says why."""

    def __init__(self, message: str, report: DrainReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class DrainPlan:
    """A node's pods sorted into those to evict, to skip (with reason) and to refuse."""

    evict: list[PodInfo]
    skip: list[tuple[PodInfo, str]]
    refuse: list[PodInfo]
    wait_for: list[PodInfo]


def plan_drain(pods: list[PodInfo], force: bool = False) -> DrainPlan:
    """Sort ``pods`` by what draining must do with each."""
    evict: list[PodInfo] = []
    skip: list[tuple[PodInfo, str]] = []
    refuse: list[PodInfo] = []
    wait_for: list[PodInfo] = []
    for pod in pods:
        if pod.mirror:
            skip.append((pod, "mirror pod (managed by the kubelet)"))
        elif pod.daemonset:
            skip.append((pod, f"DaemonSet pod (of {pod.owner_name})"))
        elif pod.deleting:
            wait_for.append(pod)
        elif not pod.managed and not force:
            refuse.append(pod)
        else:
            evict.append(pod)
    return DrainPlan(evict=evict, skip=skip, refuse=refuse, wait_for=wait_for)


def evictable_count(pods: list[PodInfo]) -> int:
    """How many pods a drain would have to move: the node's emptiness for choosing victims."""
    plan = plan_drain(pods, force=True)
    return len(plan.evict) + len(plan.wait_for)


class _QueuedLog:
    """Log lines from eviction threads, written by the draining thread (which owns the DB)."""

    def __init__(self, log: LogFn) -> None:
        self._log = log
        self._queue: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()

    def __call__(self, level: str, message: str) -> None:
        self._queue.put((level, message))

    def flush(self) -> None:
        """Write out every queued line."""
        while True:
            try:
                level, message = self._queue.get_nowait()
            except queue.Empty:
                return
            self._log(level, message)


@dataclass
class _Eviction:
    pod: PodInfo
    accepted: bool = False
    gone: bool = False
    attempts: int = 0
    last_refusal: str = ""
    error: str = ""


def _evict_with_backoff(
    ops: NodeOps,
    state: _Eviction,
    options: DrainOptions,
    deadline: float,
    stop: threading.Event,
    log: LogFn,
) -> None:
    """Evict one pod, retrying 429 (disruption budget) and transient errors until the deadline."""
    delay = options.backoff_initial
    while not stop.is_set():
        try:
            ops.evict(state.pod, options.grace_seconds)
            state.accepted = True
            log("info", f"evicted {state.pod.key}")
            return
        except NotFound:
            state.gone = True
            return
        except (TooManyRequests, Transient) as exc:
            state.attempts += 1
            state.last_refusal = str(exc)
            if state.attempts == 1:
                log(
                    "warning", f"eviction of {state.pod.key} refused ({exc}); retrying with backoff"
                )
        except KubeError as exc:
            state.error = str(exc)
            log("error", f"eviction of {state.pod.key} failed: {exc}")
            return
        left = deadline - time.monotonic()
        if left <= 0:
            return
        # Backoff with jitter so that parallel evictions blocked by one budget spread out.
        stop.wait(min(left, delay * random.uniform(0.8, 1.2)))
        delay = min(delay * 2, options.backoff_max)


SERVING_POLL = 0.1


def _wait_serving(
    rotation: Rotation, pod: ServingPod, count: int, deadline: float, stop: threading.Event
) -> None:
    """Wait until the pod's backend has ``count`` servers again (the last replacement serves)."""
    # etcd could be watched, but the record changes several times per replacement and the
    # wait is short; a bounded poll of one key keeps this simple.
    while not stop.is_set() and time.monotonic() < deadline:
        serving = rotation.serving(pod)
        if serving is None or serving >= count:
            return
        stop.wait(SERVING_POLL)


def _evict_in_turn(
    ops: NodeOps,
    rotation: Rotation | None,
    group: list[_Eviction],
    options: DrainOptions,
    deadline: float,
    stop: threading.Event,
    log: LogFn,
) -> None:
    """Evict the pods of one version one at a time, each out of rotation first."""
    count: int | None = None
    for state in group:
        if stop.is_set():
            return
        serving = serving_pod(state.pod)
        removal: Removal | None = None
        if rotation is not None and serving is not None:
            grace = options.grace_seconds
            timeout = float(grace if grace is not None else state.pod.grace_seconds)
            try:
                if count is None:
                    count = rotation.serving(serving)
                else:
                    _wait_serving(rotation, serving, count, deadline, stop)
                removal = rotation.take_out(serving, timeout, log)
            except StillRouted as exc:
                # A load balancer that cannot be told still routes to this pod: evicting it
                # would fail that load balancer's requests. This pod and the rest of its
                # version stay, and the drain fails with the reason.
                state.error = f"kept in service: {exc}"
                log("error", f"{state.pod.key} was not evicted: {exc}")
                return
            except StoreError as exc:
                log(
                    "warning",
                    f"could not take {state.pod.key} out of rotation ({exc}); evicting it "
                    "anyway: it leaves at its deletionTimestamp and its preStop delay covers that",
                )
        _evict_with_backoff(ops, state, options, deadline, stop, log)
        if rotation is not None and removal is not None and not (state.accepted or state.gone):
            try:
                rotation.put_back(removal, log)
            except StoreError as exc:
                log("error", f"could not put {state.pod.key} back into rotation: {exc}")


def _groups(states: list[_Eviction]) -> list[list[_Eviction]]:
    """Pods of one Greenlight version together (in name order); every other pod alone."""
    by_backend: dict[str, list[_Eviction]] = {}
    alone: list[list[_Eviction]] = []
    for state in sorted(states, key=lambda s: s.pod.key):
        serving = serving_pod(state.pod)
        if serving is None or serving.backend is None:
            alone.append([state])
        else:
            by_backend.setdefault(serving.backend, []).append(state)
    return list(by_backend.values()) + alone


def drain_node(
    ops: NodeOps,
    node: str,
    options: DrainOptions,
    log: LogFn,
    rotation: Rotation | None = None,
) -> DrainReport:
    """Cordon ``node`` and evict its pods; raise DrainFailed (node uncordoned) if that fails."""
    started = time.monotonic()
    deadline = started + options.deadline_seconds
    report = DrainReport(node=node)
    ops.set_unschedulable(node, True)
    log("info", f"cordoned {node}")
    try:
        _drain(ops, node, options, log, deadline, report, rotation)
    except DrainFailed:
        _uncordon_after_failure(ops, node, log)
        raise
    except KubeError as exc:
        _uncordon_after_failure(ops, node, log)
        raise DrainFailed(f"draining {node} failed: {exc}", report) from exc
    report.seconds = time.monotonic() - started
    log(
        "info",
        f"drained {node}: {len(report.evicted)} pods evicted, {len(report.skipped)} skipped, "
        f"{report.retries} retries, {report.seconds:.1f}s",
    )
    return report


def _uncordon_after_failure(ops: NodeOps, node: str, log: LogFn) -> None:
    try:
        ops.set_unschedulable(node, False)
        log("warning", f"uncordoned {node} after the failed drain")
    except KubeError as exc:
        log("error", f"could not uncordon {node}: {exc}")


def _drain(
    ops: NodeOps,
    node: str,
    options: DrainOptions,
    log: LogFn,
    deadline: float,
    report: DrainReport,
    rotation: Rotation | None,
) -> None:
    pods, version = ops.pods_on_node(node)
    plan = plan_drain(pods, options.force)
    for pod, reason in plan.skip:
        report.skipped.append((pod.key, reason))
        log("info", f"skipping {pod.key}: {reason}")
    if plan.refuse:
        names = ", ".join(p.key for p in plan.refuse)
        raise DrainFailed(
            f"{node} runs pods that no controller would replace: {names}; "
            "drain with force to delete them anyway",
            report,
        )
    if not plan.evict and not plan.wait_for:
        return
    largest_grace = max(
        (options.grace_seconds if options.grace_seconds is not None else p.grace_seconds)
        for p in plan.evict + plan.wait_for
    )
    remaining = {p.uid: p for p in plan.evict + plan.wait_for}
    states = [_Eviction(pod=p) for p in plan.evict]
    groups = _groups(states)
    log(
        "info",
        f"evicting {len(plan.evict)} pods from {node}, one at a time per app version "
        f"({len(groups)} in parallel; longest grace period {largest_grace}s, "
        f"deadline {options.deadline_seconds:.0f}s)",
    )
    stop = threading.Event()
    thread_log = _QueuedLog(log)
    workers = max(1, min(options.max_parallel, len(groups)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evict") as pool:
        futures: list[Future[None]] = [
            pool.submit(_evict_in_turn, ops, rotation, group, options, deadline, stop, thread_log)
            for group in groups
        ]
        try:
            _wait_until_gone(
                ops,
                node,
                version,
                remaining,
                states,
                deadline,
                thread_log.flush,
                lambda key: log("info", f"{key} is gone"),
            )
        finally:
            stop.set()
    thread_log.flush()
    for future in futures:
        # An unexpected error in an eviction thread is a bug: surface it, do not swallow it.
        if (error := future.exception()) is not None:
            raise error
    report.retries = sum(max(0, s.attempts) for s in states)
    report.evicted = [s.pod.key for s in states if s.pod.uid not in remaining]
    if remaining:
        # Group the pods left behind by reason, so that one budget reads as one cause.
        reasons: dict[str, list[str]] = {}
        for s in states:
            if s.pod.uid not in remaining:
                continue
            if s.error:
                reason = f"eviction failed: {s.error}"
            elif not s.accepted and s.last_refusal:
                reason = f"eviction refused: {s.last_refusal.rstrip('.')}"
            else:
                reason = "still terminating"
            reasons.setdefault(reason, []).append(s.pod.key)
        for pod in plan.wait_for:
            if pod.uid in remaining:
                reasons.setdefault("still terminating", []).append(pod.key)
        causes = "; ".join(f"{reason} ({', '.join(keys)})" for reason, keys in reasons.items())
        emit(
            "drain_stuck",
            f"{node} was not drained within {options.deadline_seconds:.0f}s and was uncordoned: "
            f"{causes}",
            details={
                "node": node,
                "reason": causes,
                "left": sorted(p.key for p in remaining.values()),
            },
        )
        raise DrainFailed(
            f"{node} was not drained within {options.deadline_seconds:.0f}s: {causes}", report
        )


def _wait_until_gone(
    ops: NodeOps,
    node: str,
    version: str,
    remaining: dict[str, PodInfo],
    states: list[_Eviction],
    deadline: float,
    flush: Callable[[], None],
    log_removed: Callable[[str], None],
) -> None:
    """Follow the node's pods with a watch until every pod in ``remaining`` is deleted."""
    while remaining:
        flush()
        for s in states:
            if s.gone:
                remaining.pop(s.pod.uid, None)
        left = deadline - time.monotonic()
        if not remaining or left <= 0 or any(s.error for s in states):
            return
        # Short watch windows, resumed from the last version seen, so that a hard eviction
        # error or the deadline ends the wait promptly.
        window = max(1, int(min(left, 1.0)))
        try:
            for event in ops.watch_pods_on_node(node, version, window):
                flush()
                version = event.resource_version or version
                ended = event.type == "DELETED" or (event.pod.finished and event.type == "MODIFIED")
                if ended and remaining.pop(event.pod.uid, None) is not None:
                    log_removed(event.pod.key)
                if not remaining or time.monotonic() >= deadline:
                    return
        except Transient:
            # The watch expired (410) or dropped: list again and resume from that version.
            pods, version = ops.pods_on_node(node)
            present = {p.uid for p in pods if not p.finished}
            for uid in list(remaining):
                if uid not in present:
                    remaining.pop(uid)
