"""The node group and schedule that ``make run`` seeds, so the scaling pages have something real."""

from __future__ import annotations

from datetime import time
from typing import Any

from django.conf import settings

from deployer.models import App
from scaling.models import AppAction, NodeGroup, NodeGroupAction, Schedule


def ensure_demo_scaling(user: Any = None) -> NodeGroup:
    """localcluster's ``default`` node group, and a disabled weeknight schedule as an example."""
    group, _ = NodeGroup.objects.get_or_create(
        name="default",
        defaults={
            "provider": NodeGroup.Provider.LOCAL,
            "min_size": 1,
            "max_size": max(6, settings.STACK.nodes),
            "desired": settings.STACK.nodes,
        },
    )
    schedule, created = Schedule.objects.get_or_create(
        name="Weeknights at half",
        defaults={
            "enabled": False,
            "kind": Schedule.Kind.WEEKLY,
            "days": [0, 1, 2, 3, 4],
            "at_time": time(21),
            "until_time": time(7),
            "timezone": "Europe/Amsterdam",
            "created_by": user if getattr(user, "pk", None) else None,
        },
    )
    if created:
        NodeGroupAction.objects.create(
            schedule=schedule, node_group=group, desired=max(1, settings.STACK.nodes - 1)
        )
        demo = App.objects.filter(namespace="default", name="hello").first()
        if demo is not None:
            AppAction.objects.create(
                schedule=schedule, app=demo, mode=AppAction.Mode.PERCENT, value=50, floor=1
            )
    return group
