"""The demo app that ``make run`` seeds so a new user can deploy at once."""

from __future__ import annotations

from typing import Any

from deployer.models import App


def ensure_demo_app(user: Any) -> App:
    """Create the demo app ``hello`` (demo/hello:1, 2 replicas, hello.localhost) if missing."""
    app, _ = App.objects.get_or_create(
        namespace="default",
        name="hello",
        defaults={
            "image": "demo/hello:1",
            "replicas": 2,
            "frontend": "hello.localhost",
            "container_port": 8080,
            # A broken demo deploy (README) then rolls back within half a minute, not two.
            "health_deadline": 30,
            "created_by": user,
            "updated_by": user,
        },
    )
    return app
