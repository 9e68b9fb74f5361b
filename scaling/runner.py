"""Execute a scaling run: plain typed code with injected collaborators; tasks only call ``execute``.

A run applies its plan in a safe order (node groups grow first, apps change, node
groups shrink last), records each finished change in ``result`` so that a resumed
run skips it, and yields (status WAITING) while a deploy of an app it scales runs.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce

from deployer.errors import DeployError, KubeError
from deployer.events import emit
from deployer.heartbeat import RowHeartbeat
from deployer.logsink import level_first
from deployer.models import App, Deployment, IllegalTransition
from deployer.rotation import LogFn
from deployer.services import pod_rotation, scale_app
from scaling import logsink
from scaling.drain import DrainFailed, DrainOptions, Rotation, drain_node, evictable_count
from scaling.fit import pin_reason, pinned_by, scale_in_problems
from scaling.kube import KubeNodes, NodeInfo, NodeOps
from scaling.logsink import RunLog, RunTakenOver, claimed_log, run_log
from scaling.models import NodeGroup, ScalingRun
from scaling.planner import Change, plural
from scaling.providers import GroupState, Provider, ProviderError, provider_for
from scaling.schedule import Clock, SystemClock

logger = logging.getLogger(__name__)


class Outcome(enum.StrEnum):
    """What ``execute`` left the run as."""

    DONE = "done"
    WAIT = "wait"
    SKIPPED = "skipped"


class StopRun(Exception):
    """The run cannot continue for a reason the user can read (and maybe fix)."""


def _busy_deploy(app: App) -> int | None:
    return (
        Deployment.objects.filter(app=app, status__in=Deployment.ACTIVE)
        .order_by("created_at")
        .values_list("pk", flat=True)
        .first()
    )


def _scale_app(app: App, replicas: int, log: LogFn) -> None:
    scale_app(app, replicas, checked_for_deploys=True, log=log)


@dataclass
class RunContext:
    """The collaborators of a run; tests replace any of them."""

    clock: Clock = field(default_factory=SystemClock)
    ops_factory: Callable[[], NodeOps] = KubeNodes
    provider: Callable[[NodeGroup, NodeOps], Provider] = provider_for
    scale_app: Callable[[App, int, LogFn], None] = _scale_app
    busy_deploy: Callable[[App], int | None] = _busy_deploy
    # Drains take pods out of the load balancer before evicting them.
    rotation: Callable[[], AbstractContextManager[Rotation | None]] = pod_rotation
    drain_options: DrainOptions = field(
        default_factory=lambda: DrainOptions(
            deadline_seconds=float(settings.SCALING_DRAIN_DEADLINE_SECONDS)
        )
    )
    _ops: NodeOps | None = None

    @property
    def ops(self) -> NodeOps:
        """The cluster, created on first use (app-only runs never need it)."""
        if self._ops is None:
            self._ops = self.ops_factory()
        return self._ops


def execute(run_id: int, context: RunContext | None = None) -> Outcome:
    """Claim run ``run_id`` and carry it out; WAIT means "call again later"."""
    context = context or RunContext()
    run = ScalingRun.objects.filter(pk=run_id).first()
    if run is None or run.is_terminal:
        return Outcome.SKIPPED
    try:
        run.start(now=context.clock.now())
    except IllegalTransition:
        return Outcome.SKIPPED  # another worker has it
    logsink.status_changed(run)
    log = run_log(run)
    started = time.monotonic()
    # The run's updated_at is its heartbeat while this worker holds its claim:
    # scaling.services.requeue_stale resumes a run whose worker stopped beating.
    mine = ScalingRun.objects.filter(pk=run.pk, status=ScalingRun.Status.RUNNING, claim=run.claim)
    try:
        try:
            with RowHeartbeat(mine, "updated_at"):
                outcome = HANDLERS[run.kind](run, context, claimed_log(run))
        except RunTakenOver:
            raise
        except (StopRun, DrainFailed, ProviderError, KubeError, DeployError) as exc:
            log.log(str(exc), level="error")
            run.fail(str(exc), now=context.clock.now())
            logsink.status_changed(run)
            announce_failed(run, str(exc))
            return Outcome.DONE
        except Exception as exc:
            logger.exception("scaling run #%s failed unexpectedly", run.pk)
            log.log(
                f"internal error: {type(exc).__name__}: {exc} (details in the worker log)",
                level="error",
            )
            run.fail(f"internal error: {exc}", now=context.clock.now())
            logsink.status_changed(run)
            announce_failed(run, f"internal error: {exc}")
            return Outcome.DONE
        if outcome == Outcome.WAIT:
            run.wait()
            logsink.status_changed(run)
            return Outcome.WAIT
        run.succeed(now=context.clock.now())
    except (RunTakenOver, IllegalTransition):
        # Resumed by another worker while this one was silent: it goes on from the last
        # recorded change; this worker stops here and undoes nothing.
        logger.warning("scaling run #%s was resumed by another worker; stopping here", run.pk)
        log.log(
            "This worker lost the run (another worker resumed it); it stops here.",
            level="warning",
        )
        return Outcome.SKIPPED
    log.log(f"finished in {time.monotonic() - started:.1f}s")
    logsink.status_changed(run)
    return Outcome.DONE


def announce_failed(run: ScalingRun, reason: str) -> None:
    """Emit ``scaling_run_failed`` (deployer.events) for ``run``."""
    emit(
        "scaling_run_failed",
        f"Scaling run #{run.pk} ({run.title()}) failed: {reason}",
        scaling_run=run,
        details={"reason": reason},
    )


def _record(run: ScalingRun, change: Change, outcome: str) -> None:
    entry = {"key": change.key, "name": change.name, "from": change.current}
    entry.update({"to": change.desired, "outcome": outcome})
    run.result = [r for r in run.result if r.get("key") != change.key] + [entry]
    ScalingRun.objects.filter(pk=run.pk).update(result=run.result)


def _done_keys(run: ScalingRun) -> set[str]:
    return {r["key"] for r in run.result if r.get("outcome") != "waiting"}


def _superseded_by(run: ScalingRun, change: Change) -> int | None:
    """A later schedule run for the same target (or a newer revision), making this one obsolete."""
    if run.kind != ScalingRun.Kind.SCHEDULE or run.due_at is None:
        return None
    newer_revision = Q(schedule_id=run.schedule_id, due_at=run.due_at, revision__gt=run.revision)
    later = ScalingRun.objects.filter(
        Q(due_at__gt=run.due_at) | newer_revision, kind=ScalingRun.Kind.SCHEDULE
    )
    for other in later.exclude(pk=run.pk).only("pk", "plan"):
        if any(Change.from_json(c).key == change.key for c in other.plan):
            return other.pk
    return None


def _blocked_by(run: ScalingRun, change: Change) -> int | None:
    """An older running run that changes the same target: this one waits for it."""
    older = ScalingRun.objects.filter(status=ScalingRun.Status.RUNNING, pk__lt=run.pk).exclude(
        kind=ScalingRun.Kind.DRY_RUN
    )
    for other in older.only("pk", "plan"):
        if any(Change.from_json(c).key == change.key for c in other.plan):
            return other.pk
    return None


def _wait_note(run: ScalingRun, change: Change, log: RunLog, message: str) -> str:
    """Log why a change waits (once per run) and return the outcome word."""
    if not any(r.get("key") == change.key for r in run.result):
        log.log(message)
    return "waiting"


def _ordered(changes: list[Change]) -> list[Change]:
    """Grow node groups first, then change apps, then shrink node groups."""

    def rank(c: Change) -> int:
        if c.target == "node_group":
            return 0 if c.desired >= c.current else 2
        return 1

    return sorted(changes, key=rank)


def run_plan(run: ScalingRun, context: RunContext, log: RunLog) -> Outcome:
    """Apply (or, for a dry run, describe) every change in ``run.plan``."""
    dry = run.kind == ScalingRun.Kind.DRY_RUN
    changes = _ordered([Change.from_json(c) for c in run.plan])
    if not changes:
        log.log("nothing to do: the plan is empty")
        return Outcome.DONE
    if run.status == ScalingRun.Status.RUNNING and not run.result:
        if dry:
            log.log("dry run: the schedule's actions as if it fired now; nothing will change")
        for change in changes:
            what = "app" if change.target == "app" else "node group"
            log.log(
                f"plan: {what} {change.name} {change.current} → {change.desired} ({change.why})"
            )
    done = _done_keys(run)
    waiting = False
    for change in changes:
        if change.key in done:
            continue
        if not dry and not run.still_claimed():
            raise RunTakenOver(f"scaling run #{run.pk} was resumed by another worker")
        later = _superseded_by(run, change)
        if later is not None:
            log.log(f"{change.name}: superseded by the newer scaling run #{later}; skipped")
            _record(run, change, "superseded")
            continue
        other = None if dry else _blocked_by(run, change)
        if other is not None:
            note = f"{change.name}: waiting for scaling run #{other}, which is changing it"
            _record(run, change, _wait_note(run, change, log, note))
            waiting = True
            continue
        if change.target == "app":
            outcome = apply_app(run, change, context, log, dry)
        else:
            outcome = apply_node_group(change, context, log, dry)
        if outcome == "waiting":
            waiting = True
        _record(run, change, outcome)
    if dry:
        log.log("dry run: nothing was changed")
    return Outcome.WAIT if waiting else Outcome.DONE


def apply_app(run: ScalingRun, change: Change, context: RunContext, log: RunLog, dry: bool) -> str:
    """Scale one app, yielding to a running deploy; returns the outcome word for ``result``."""
    app = App.objects.filter(pk=change.id).first()
    if app is None:
        log.log(f"app {change.name} no longer exists; skipped", level="warning")
        return "skipped"
    desired = change.desired
    if dry:
        verb = "would stay at" if app.replicas == desired else f"would scale {app.replicas} →"
        log.log(f"app {app.name}: {verb} {desired} replicas")
        return "dry run"
    with transaction.atomic():
        # The app row is also what a deploy request locks (an IMMEDIATE transaction on
        # SQLite, SELECT ... FOR UPDATE elsewhere): a deploy requested meanwhile is either
        # seen here, or snapshots the replica count stored here.
        app = App.objects.select_for_update().filter(pk=change.id).first()
        if app is None:
            log.log(f"app {change.name} no longer exists; skipped", level="warning")
            return "skipped"
        deployment = context.busy_deploy(app)
        if deployment is not None:
            note = (
                f"app {app.name}: waiting for deployment #{deployment} to finish "
                "(the scaler never changes an app while it deploys)"
            )
            return _wait_note(run, change, log, note)
        if app.baseline_replicas is None:
            # Remember where the app was before any schedule touched it, for percentages
            # and window ends; a conditional update so that two runs cannot both set it.
            App.objects.filter(pk=app.pk, baseline_replicas__isnull=True).update(
                baseline_replicas=app.replicas
            )
            log.log(f"app {app.name}: remembered its baseline of {plural(app.replicas, 'replica')}")
        before = app.replicas
        App.objects.filter(pk=app.pk).update(replicas=desired)
    # The cluster call runs outside the transaction: it must not hold the database lock.
    if before == desired:
        if app.live_version is not None:
            # Level-triggered: set it anyway, so that a live version changed behind our back
            # (kubectl scale) comes back to what the schedule says.
            context.scale_app(app, desired, level_first(log))
        log.log(f"app {app.name}: already at {desired} replicas")
        return "unchanged"
    context.scale_app(app, desired, level_first(log))
    log.log(f"app {app.name}: scaled from {before} to {desired} replicas")
    return "scaled"


def apply_node_group(change: Change, context: RunContext, log: RunLog, dry: bool) -> str:
    """Bring one node group to its desired capacity: scale out, or drain and remove nodes."""
    group = NodeGroup.objects.filter(pk=change.id).first()
    if group is None:
        log.log(f"node group {change.name} no longer exists; skipped", level="warning")
        return "skipped"
    provider = context.provider(group, context.ops)
    state = provider.describe(group)
    low = max(group.min_size, state.min_size)
    high = min(group.max_size, state.max_size)
    target = max(low, min(high, change.desired))
    if target != change.desired:
        log.log(
            f"node group {group.name}: {change.desired} is outside min {low} / max {high}; "
            f"using {target}",
            level="warning",
        )
    log.log(f"node group {group.name}: {state.desired} now, {target} wanted")
    if target == state.desired:
        outcome = "unchanged"
    elif dry:
        outcome = "dry run"
        if target > state.desired:
            log.log(f"node group {group.name}: would add {plural(target - state.desired, 'node')}")
        else:
            count = state.desired - target
            victims = choose_victims(group, state, count, context.ops, provider, log)
            names = ", ".join(f"{n.name} ({pods} pods)" for n, pods in victims) or "none"
            log.log(f"node group {group.name}: would drain and remove {names}")
            ops = context.ops
            problems = scale_in_problems(
                [n for n, _ in victims], ops.list_nodes(), ops.pods_by_node(), ops.list_budgets()
            )
            for problem in problems:
                log.log(
                    f"node group {group.name}: the scale-in would be refused: {problem}",
                    level="warning",
                )
    elif target > state.desired:
        provider.scale_out(group, target)
        log.log(f"node group {group.name}: asked {group.provider} for {plural(target, 'node')}")
        outcome = "scaled out"
    else:
        try:
            scale_in(group, state, state.desired - target, provider, context, log)
        except Exception:
            # Some nodes may be gone already: record what the provider now reports.
            _record_capacity(group, _current_desired(provider, group, state.desired))
            raise
        outcome = "scaled in"
    if not dry:
        _record_capacity(group, target)
    return outcome


def _current_desired(provider: Provider, group: NodeGroup, fallback: int) -> int:
    try:
        return provider.describe(group).desired
    except (ProviderError, KubeError):
        return fallback


def _record_capacity(group: NodeGroup, desired: int) -> None:
    """Store the group's desired capacity, remembering its baseline the first time."""
    NodeGroup.objects.filter(pk=group.pk).update(
        desired=desired, baseline_desired=Coalesce(F("baseline_desired"), group.desired)
    )


def choose_victims(
    group: NodeGroup,
    state: GroupState,
    count: int,
    ops: NodeOps,
    provider: Provider,
    log: RunLog,
) -> list[tuple[NodeInfo, int]]:
    """The ``count`` emptiest removable nodes of ``group`` with their pod counts."""
    protected = state.protected_ids()
    known = {i.id for i in state.instances}
    candidates: list[tuple[int, str, NodeInfo]] = []
    selector = provider.node_selector(group)
    by_node = ops.pods_by_node()
    for node in ops.list_nodes(selector):
        instance = node.instance_id
        if selector is None and instance not in known:
            continue  # another group's node (membership is by instance id)
        if not instance:
            log.log(f"node {node.name} has no instance id; it cannot be removed", level="warning")
            continue
        if instance in protected:
            log.log(f"node {node.name} ({instance}) is protected from scale-in; kept")
            continue
        if known and instance not in known:
            log.log(f"node {node.name}: {instance} is not in the group; kept", level="warning")
            continue
        pinned = pinned_by(by_node.get(node.name, []))
        if pinned is not None:
            log.log(f"node {node.name} is kept: {pin_reason(pinned)}")
            continue
        candidates.append((evictable_count(by_node.get(node.name, [])), node.name, node))
    candidates.sort(key=lambda item: (item[0], item[1]))
    if len(candidates) < count:
        log.log(
            f"node group {group.name}: only {len(candidates)} of {count} nodes can be removed",
            level="warning",
        )
    return [(node, pods) for pods, _, node in candidates[:count]]


def scale_in(
    group: NodeGroup,
    state: GroupState,
    count: int,
    provider: Provider,
    context: RunContext,
    log: RunLog,
) -> None:
    """Cordon ``count`` nodes (emptiest first), then drain, delete and terminate them in turn."""
    ops = context.ops
    victims = choose_victims(group, state, count, ops, provider, log)
    if not victims:
        raise StopRun(f"node group {group.name}: no node can be removed")
    going = [node for node, _ in victims]
    problems = scale_in_problems(going, ops.list_nodes(), ops.pods_by_node(), ops.list_budgets())
    if problems:
        names = ", ".join(node.name for node in going)
        raise StopRun(
            f"node group {group.name}: removing {names} would not work, so nothing was "
            f"changed: {'; '.join(problems)}"
        )
    log.log(f"the pods on {', '.join(n.name for n in going)} fit on the nodes that stay")
    # Cordon them all first, so that pods evicted from one never land on the next to go.
    pending = [node.name for node, _ in victims]
    for name in pending:
        ops.set_unschedulable(name, True)
    log.log(f"cordoned {', '.join(pending)}")
    try:
        for node, pods in victims:
            log.log(f"removing {node.name} (instance {node.instance_id}, {pods} pods to move)")
            with context.rotation() as rotation:
                drain_node(ops, node.name, context.drain_options, level_first(log), rotation)
            ops.delete_node(node.name)
            pending.remove(node.name)
            log.log(f"deleted node {node.name}")
            provider.terminate(group, node.instance_id)
            log.log(f"terminated {node.instance_id} and decremented the desired capacity")
    finally:
        # A failure leaves the nodes not yet removed in service again.
        for name in pending:
            try:
                ops.set_unschedulable(name, False)
            except KubeError as exc:
                log.log(f"could not uncordon {name}: {exc}", level="error")
    if len(victims) < count:
        raise StopRun(
            f"node group {group.name}: removed {len(victims)} of {count} nodes; "
            "the others are protected or not in the group"
        )


def run_scale_app(run: ScalingRun, context: RunContext, log: RunLog) -> Outcome:
    """Manual: set one app's replicas (optionally making it the new baseline)."""
    app = App.objects.filter(pk=run.params.get("app_id")).first()
    if app is None:
        raise StopRun("the app no longer exists")
    replicas = int(run.params["replicas"])
    if run.params.get("baseline") and not run.result:
        App.objects.filter(pk=app.pk).update(baseline_replicas=replicas)
        log.log(f"app {app.name}: baseline set to {replicas} replicas")
    _ensure_plan(run, Change("app", app.pk, app.name, app.replicas, replicas, "manual"))
    return run_plan(run, context, log)


def run_set_capacity(run: ScalingRun, context: RunContext, log: RunLog) -> Outcome:
    """Manual: set one node group's desired capacity."""
    group = NodeGroup.objects.filter(pk=run.params.get("group_id")).first()
    if group is None:
        raise StopRun("the node group no longer exists")
    desired = int(run.params["desired"])
    _ensure_plan(run, Change("node_group", group.pk, group.name, group.desired, desired, "manual"))
    return run_plan(run, context, log)


def _ensure_plan(run: ScalingRun, change: Change) -> None:
    """Give a manual run recorded without a plan (older rows, the API) its one change."""
    if not run.plan:
        run.plan = [change.as_json()]
        ScalingRun.objects.filter(pk=run.pk).update(plan=run.plan)


def run_cordon(run: ScalingRun, context: RunContext, log: RunLog) -> Outcome:
    """Manual: mark a node unschedulable."""
    node = str(run.params["node"])
    context.ops.set_unschedulable(node, True)
    log.log(f"cordoned {node}: no new pods will be scheduled on it")
    return Outcome.DONE


def run_uncordon(run: ScalingRun, context: RunContext, log: RunLog) -> Outcome:
    """Manual: make a node schedulable again."""
    node = str(run.params["node"])
    context.ops.set_unschedulable(node, False)
    log.log(f"uncordoned {node}")
    return Outcome.DONE


def run_drain(run: ScalingRun, context: RunContext, log: RunLog) -> Outcome:
    """Manual: cordon and drain a node (it stays cordoned afterwards)."""
    node = str(run.params["node"])
    base = context.drain_options
    options = DrainOptions(
        deadline_seconds=float(run.params.get("deadline") or base.deadline_seconds),
        force=bool(run.params.get("force")),
        grace_seconds=base.grace_seconds,
        backoff_initial=base.backoff_initial,
        backoff_max=base.backoff_max,
    )
    with context.rotation() as rotation:
        drain_node(context.ops, node, options, level_first(log), rotation)
    return Outcome.DONE


HANDLERS: dict[str, Callable[[ScalingRun, RunContext, RunLog], Outcome]] = {
    ScalingRun.Kind.SCHEDULE: run_plan,
    ScalingRun.Kind.DRY_RUN: run_plan,
    ScalingRun.Kind.SCALE_APP: run_scale_app,
    ScalingRun.Kind.SET_CAPACITY: run_set_capacity,
    ScalingRun.Kind.CORDON: run_cordon,
    ScalingRun.Kind.UNCORDON: run_uncordon,
    ScalingRun.Kind.DRAIN: run_drain,
}
