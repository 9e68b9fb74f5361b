"""The deployment page's progress list: the workflow's steps in order, with state and duration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deployer.models import Deployment


@dataclass(frozen=True)
class StepRow:
    """One step as the progress list shows it."""

    name: str
    label: str
    state: str
    seconds: float | None


def step_rows(deployment: Deployment) -> list[StepRow]:
    """The steps the deployment recorded, in the order they ran (JSON may reorder keys)."""
    steps: dict[str, Any] = deployment.steps or {}
    ordered = sorted(
        steps.items(), key=lambda item: (str((item[1] or {}).get("started") or "~"), item[0])
    )
    rows = []
    for name, info in ordered:
        info = info or {}
        seconds = info.get("seconds")
        rows.append(
            StepRow(
                name=name,
                label=name.replace("_", " ").replace("-", " "),
                state=str(info.get("state") or "pending"),
                seconds=float(seconds) if isinstance(seconds, int | float) else None,
            )
        )
    return rows
