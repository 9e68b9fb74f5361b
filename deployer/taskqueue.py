"""Queue Celery tasks by name: what requests work need not import what carries it out.

The services that queue a run are imported by the tasks that run it; naming the task
here keeps imports one way (tasks → runner → services → taskqueue).
"""

from __future__ import annotations

from typing import Any

from celery import current_app

RUN_DEPLOYMENT = "deployer.run_deployment"
RETIRE_VERSION = "deployer.retire_version"
EXECUTE_SCALING_RUN = "scaling.tasks.execute_run"


def send(name: str, *args: Any, countdown: float | None = None) -> None:
    """Queue task ``name`` with ``args`` through its registered task (so eager mode holds)."""
    app = current_app
    if name not in app.tasks:
        # A web process has not imported the apps' task modules yet: the worker's discovery.
        app.loader.import_default_modules()
    task = app.tasks[name]
    if countdown is None:
        task.delay(*args)
    else:
        task.apply_async(args, countdown=countdown)
