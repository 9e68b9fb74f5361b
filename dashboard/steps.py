"""The deployment page's progress list: the workflow's steps in order, with state and duration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deployer.kinds import planned_steps
from deployer.models import Deployment


@dataclass(frozen=True)
class StepRow:
    """One step as the progress list shows it."""

    name: str
    label: str
    state: str
    seconds: float | None
    started: str


def step_rows(deployment: Deployment) -> list[StepRow]:
    """The workflow's steps for this kind in order (pending until recorded), then any others."""
    recorded: dict[str, Any] = deployment.steps or {}
    known = planned_steps(deployment)
    titles = dict(known)
    names = [name for name, _ in known]
    # Steps the workflow recorded beyond its plan, in the order they started.
    extra = sorted(
        (name for name in recorded if name not in titles),
        key=lambda name: str((recorded[name] or {}).get("started") or "~"),
    )
    rows = []
    for name in names + extra:
        info = recorded.get(name) or {}
        seconds = info.get("seconds")
        rows.append(
            StepRow(
                name=name,
                label=titles.get(name, name.replace("_", " ").capitalize()),
                state=str(info.get("state") or "pending"),
                seconds=float(seconds) if isinstance(seconds, int | float) else None,
                started=str(info.get("started") or ""),
            )
        )
    return rows
