"""The app list and the history pages cost a fixed number of queries, however long the history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from deployer.models import App, Deployment

# Session, user, then the page's own queries (listed in each test).
AUTH_QUERIES = 2


def seed(admin: Any, apps: int, deployments_per_app: int) -> list[App]:
    created = [
        App.objects.create(name=f"app{i}", image="demo/hello:1", frontend=f"app{i}.localhost")
        for i in range(apps)
    ]
    now = timezone.now()
    Deployment.objects.bulk_create(
        Deployment(
            app=app,
            version=v,
            image=f"demo/hello:{v}",
            status=Deployment.Status.SUCCEEDED if v % 5 else Deployment.Status.FAILED,
            triggered_by=admin,
            created_at=now - timedelta(minutes=v),
            started_at=now - timedelta(minutes=v),
            finished_at=now - timedelta(minutes=v) + timedelta(seconds=9),
        )
        for app in created
        for v in range(1, deployments_per_app + 1)
    )
    return created


@pytest.mark.parametrize(("apps", "per_app"), [(2, 3), (25, 400)])
def test_the_app_list_costs_a_fixed_number_of_queries(
    admin_client: Client, admin: Any, django_assert_num_queries: Any, apps: int, per_app: int
) -> None:
    seed(admin, apps, per_app)
    # apps with their last deployment (one query), namespaces
    with django_assert_num_queries(AUTH_QUERIES + 2):
        response = admin_client.get("/")
    assert len(response.context["rows"]) == apps


@pytest.mark.parametrize("per_app", [3, 10_000])
def test_the_history_page_costs_a_fixed_number_of_queries(
    admin_client: Client, admin: Any, django_assert_num_queries: Any, per_app: int
) -> None:
    (app,) = seed(admin, 1, per_app)
    # app, count, page rows (with app and user joined)
    with django_assert_num_queries(AUTH_QUERIES + 3):
        response = admin_client.get(f"/apps/{app.pk}/history/?page=2")
    assert response.status_code == 200


def test_the_deployments_page_costs_a_fixed_number_of_queries(
    admin_client: Client, admin: Any, django_assert_num_queries: Any
) -> None:
    seed(admin, 20, 50)
    # count, page rows
    with django_assert_num_queries(AUTH_QUERIES + 2):
        admin_client.get("/deployments/")
