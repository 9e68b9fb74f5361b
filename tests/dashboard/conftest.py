"""Fixtures of the dashboard tests: users with and without permissions, apps, deployments."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from deployer import k8s
from deployer.etcdstore import EtcdStore
from deployer.models import App, Deployment, DeploymentLog
from tests.dashboard.fleetkit import Fleet, own_prefix, register_fleet
from tests.servers import Server


@pytest.fixture(autouse=True)
def _isolated(settings: Any, tmp_path: Any) -> Iterator[None]:
    """An in-memory channel layer and no reachable cluster, unless a test sets one up."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.KUBECONFIG = tmp_path / "no-kubeconfig"
    k8s.reset()
    yield
    k8s.reset()


@pytest.fixture
def admin(django_user_model: Any) -> Any:
    """A superuser: may do everything."""
    return django_user_model.objects.create_superuser(username="root", password="pw-root")


@pytest.fixture
def viewer(role_user: Any) -> Any:
    """A user who may see apps and deployments but change nothing: viewer on every namespace."""
    return role_user("viewer", "viewer")


@pytest.fixture
def stranger(role_user: Any) -> Any:
    """A signed-in user without any role."""
    return role_user("stranger")


@pytest.fixture
def admin_client(admin: Any) -> Client:
    """A browser session signed in as the superuser."""
    client = Client()
    client.force_login(admin)
    return client


@pytest.fixture
def api(admin: Any) -> APIClient:
    """A REST client authenticated as the superuser."""
    client = APIClient()
    client.force_authenticate(admin)
    return client


@pytest.fixture
def app_defaults(admin: Any) -> dict[str, Any]:
    """Dashboard apps are created by the superuser."""
    return {"created_by": admin}


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    """The app ``hello`` (demo/hello:1, hello.localhost)."""
    return make_app(name="hello", frontend="hello.localhost")


@pytest.fixture
def make_deployment(admin: Any) -> Callable[..., Deployment]:
    """Create a deployment of an app with optional log lines."""

    def make(app: App, *, lines: int = 0, **fields: Any) -> Deployment:
        now = timezone.now()
        values: dict[str, Any] = {
            "app": app,
            "image": app.image,
            "descriptor": app.snapshot(),
            "triggered_by": admin,
            "status": Deployment.Status.SUCCEEDED,
            "started_at": now - timedelta(seconds=12),
            "finished_at": now,
        }
        values.update(fields)
        deployment = Deployment.objects.create(**values)
        DeploymentLog.objects.bulk_create(
            DeploymentLog(deployment=deployment, seq=i, step="create", message=f"line {i}")
            for i in range(1, lines + 1)
        )
        return deployment

    return make


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    """Remember each phase's report on the item, so fixtures can tell a failed test."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def records(etcd: Server, settings: Any) -> Iterator[EtcdStore]:
    """An etcd prefix of this test's own, configured for the dashboard's load balancer views."""
    with own_prefix(etcd, settings) as store:
        yield store


@pytest.fixture
def fleet(records: EtcdStore) -> Fleet:
    """lb-0 and lb-1 registered (see tests.dashboard.fleetkit)."""
    return register_fleet(records)
