"""What should hold now: schedules resolved per target, and the changes that gets us there.

Overlap rule: when several enabled schedules set the same app or node group, the one
whose latest due time is the most recent wins (ties: the schedule created last). Each
schedule's due time is applied once; a run records it, so ticks are idempotent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Literal

from django.db.models import Prefetch

from deployer.models import App
from scaling.models import AppAction, NodeGroup, NodeGroupAction, Schedule
from scaling.schedule import Due, Event, InvalidSpec, Spec, latest_due, validate

logger = logging.getLogger(__name__)

TargetKind = Literal["app", "node_group"]
TargetKey = tuple[TargetKind, int]


@dataclass(frozen=True)
class Change:
    """One planned change: a target, its current and desired size, and why."""

    target: TargetKind
    id: int
    name: str
    current: int
    desired: int
    why: str

    @property
    def key(self) -> str:
        """``app:<id>`` or ``node_group:<id>``, unique within a run."""
        return f"{self.target}:{self.id}"

    def as_json(self) -> dict[str, object]:
        """The JSON stored in ``ScalingRun.plan``."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Change:
        """The inverse of ``as_json``."""
        return cls(
            target=data["target"],  # type: ignore[arg-type]
            id=int(data["id"]),  # type: ignore[call-overload]
            name=str(data["name"]),
            current=int(data["current"]),  # type: ignore[call-overload]
            desired=int(data["desired"]),  # type: ignore[call-overload]
            why=str(data["why"]),
        )


def plural(count: int, noun: str) -> str:
    """``1 replica``, ``2 replicas``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def spec_of(schedule: Schedule) -> Spec:
    """The pure schedule specification of a Schedule row; InvalidSpec if its days are not days."""
    if schedule.kind == Schedule.Kind.CRON:
        return Spec(zone=schedule.timezone, cron=schedule.cron.strip())
    try:
        days = frozenset(int(d) for d in schedule.days)
    except (TypeError, ValueError):
        raise InvalidSpec("Days are 0 (Monday) to 6 (Sunday).") from None
    return Spec(zone=schedule.timezone, days=days, at=schedule.at_time, until=schedule.until_time)


def schedule_problem(schedule: Schedule) -> str:
    """Why ``schedule`` cannot run, or "" when it can (rows saved outside the editor may not)."""
    try:
        validate(spec_of(schedule))
    except InvalidSpec as exc:
        return str(exc)
    return ""


def app_baseline(app: App) -> int:
    """The replica count percentages are relative to: the remembered baseline, else replicas."""
    return app.baseline_replicas if app.baseline_replicas is not None else app.replicas


def group_baseline(group: NodeGroup) -> int:
    """The capacity a window restores: the remembered baseline, else the current desired."""
    return group.baseline_desired if group.baseline_desired is not None else group.desired


def app_replicas_for(action: AppAction, baseline: int) -> int:
    """Replicas an action asks for; percentages round up and never go under the floor."""
    if action.mode == AppAction.Mode.ABSOLUTE:
        return action.value
    # Round up: half of 3 replicas is 2, never 1, so scaling down keeps capacity.
    return max(action.floor, math.ceil(baseline * action.value / 100))


def changes_for(
    schedule: Schedule, event: Event, only: set[TargetKey] | None = None
) -> list[Change]:
    """The changes ``schedule`` makes for ``event``, limited to ``only`` when given."""
    changes: list[Change] = []
    label = f"schedule “{schedule.name}”"
    for action in schedule.app_actions.all():
        if only is not None and ("app", action.app_id) not in only:
            continue
        app = action.app
        baseline = app_baseline(app)
        if event == Event.RESTORE:
            desired, why = baseline, f"{label} window ended: back to the baseline of {baseline}"
        else:
            desired = app_replicas_for(action, baseline)
            why = (
                f"{label}: {action.value}% of the baseline {baseline} (floor {action.floor})"
                if action.mode == AppAction.Mode.PERCENT
                else f"{label}: {plural(action.value, 'replica')}"
            )
        changes.append(Change("app", app.pk, app.name, app.replicas, desired, why))
    for gaction in schedule.node_group_actions.all():
        if only is not None and ("node_group", gaction.node_group_id) not in only:
            continue
        group = gaction.node_group
        if event == Event.RESTORE:
            desired = group_baseline(group)
            why = f"{label} window ended: back to the baseline of {desired}"
        else:
            desired, why = gaction.desired, f"{label}: {plural(gaction.desired, 'node')}"
        clamped = group.clamp(desired)
        if clamped != desired:
            why += f" (kept within min {group.min_size} and max {group.max_size})"
        changes.append(Change("node_group", group.pk, group.name, group.desired, clamped, why))
    return changes


def enabled_schedules() -> list[Schedule]:
    """Enabled schedules with their actions and targets loaded."""
    return list(
        Schedule.objects.filter(enabled=True).prefetch_related(
            Prefetch("app_actions", queryset=AppAction.objects.select_related("app")),
            Prefetch(
                "node_group_actions", queryset=NodeGroupAction.objects.select_related("node_group")
            ),
        )
    )


def targets_of(schedule: Schedule) -> list[TargetKey]:
    """The apps and node groups a schedule touches."""
    keys: list[TargetKey] = [("app", a.app_id) for a in schedule.app_actions.all()]
    keys += [("node_group", g.node_group_id) for g in schedule.node_group_actions.all()]
    return keys


@dataclass(frozen=True)
class Winner:
    """The schedule whose due time holds for some targets now."""

    schedule: Schedule
    due: Due
    targets: frozenset[TargetKey]


def resolve(schedules: Iterable[Schedule], now: datetime) -> list[Winner]:
    """For every target, the schedule with the most recent due time; grouped per schedule."""
    best: dict[TargetKey, tuple[datetime, int, Schedule, Due]] = {}
    for schedule in schedules:
        # A schedule that cannot run (saved before a rule, edited in SQL, its zone gone from
        # this machine) is skipped: it must never stop the other schedules.
        try:
            due = latest_due(spec_of(schedule), now)
        except InvalidSpec as exc:
            logger.warning("schedule %s (#%s) skipped: %s", schedule.name, schedule.pk, exc)
            continue
        except Exception:
            logger.exception(
                "schedule %s (#%s) skipped: its due time failed", schedule.name, schedule.pk
            )
            continue
        if due is None:
            continue
        for key in targets_of(schedule):
            current = best.get(key)
            if current is None or (due.at, schedule.pk) > (current[0], current[1]):
                best[key] = (due.at, schedule.pk, schedule, due)
    grouped: dict[int, tuple[Schedule, Due, set[TargetKey]]] = {}
    for key, (_, pk, schedule, due) in best.items():
        grouped.setdefault(pk, (schedule, due, set()))[2].add(key)
    return [
        Winner(schedule=s, due=d, targets=frozenset(keys))
        for s, d, keys in sorted(grouped.values(), key=lambda item: (item[1].at, item[0].pk))
    ]


@dataclass(frozen=True)
class Holding:
    """What holds now for one target: the winning schedule, its due time and the target size."""

    change: Change
    schedule: Schedule
    due: Due


def holding_now(now: datetime) -> list[Holding]:
    """For each target of an enabled schedule, what the overlap rule says should hold now."""
    held: list[Holding] = []
    for winner in resolve(enabled_schedules(), now):
        for change in changes_for(winner.schedule, winner.due.event, only=set(winner.targets)):
            held.append(Holding(change=change, schedule=winner.schedule, due=winner.due))
    return sorted(held, key=lambda h: (h.change.target, h.change.name))
