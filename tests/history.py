"""Apps with a deployment history, made in bulk: for query-count tests and the dashboard benches."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone

from deployer.models import App, Deployment


def add_apps(
    admin: Any,
    names: list[str],
    versions: int,
    *,
    live: bool = True,
    replicas: int = 2,
    failed_every: int = 7,
) -> list[App]:
    """Apps named ``names`` (frontend ``<name>.localhost``), each with ``versions`` deployments.

    Version N ran N minutes before the newest and took 8 s; every ``failed_every``-th failed.
    With ``live`` each app serves its newest version.
    """
    apps = App.objects.bulk_create(
        App(
            name=name,
            image="demo/hello:1",
            frontend=f"{name}.localhost",
            replicas=replicas,
            live_version=versions if live and versions else None,
        )
        for name in names
    )
    now = timezone.now()
    Deployment.objects.bulk_create(
        (
            Deployment(
                app=app,
                version=version,
                image=f"demo/hello:{version}",
                status="failed" if version % failed_every == 0 else "succeeded",
                triggered_by=admin,
                created_at=now - timedelta(minutes=versions - version),
                started_at=now - timedelta(minutes=versions - version),
                finished_at=now - timedelta(minutes=versions - version, seconds=-8),
                steps={"create": {"state": "done", "seconds": 1.0}},
            )
            for app in apps
            for version in range(1, versions + 1)
        ),
        batch_size=2000,
    )
    return apps


def numbered(first: int, count: int) -> list[str]:
    """``app<first>`` .. ``app<first+count-1>``."""
    return [f"app{i}" for i in range(first, first + count)]
