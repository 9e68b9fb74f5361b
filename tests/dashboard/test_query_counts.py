"""The app list and the history pages cost a fixed number of queries, however long the history."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.history import add_apps, numbered

# Session, user, then the page's own queries (listed in each test).
AUTH_QUERIES = 2


@pytest.mark.parametrize(("apps", "per_app"), [(2, 3), (25, 400)])
def test_the_app_list_costs_a_fixed_number_of_queries(
    admin_client: Client, admin: Any, django_assert_num_queries: Any, apps: int, per_app: int
) -> None:
    add_apps(admin, numbered(0, apps), per_app, live=False, failed_every=5)
    # apps with their last deployment (one query), namespaces
    with django_assert_num_queries(AUTH_QUERIES + 2):
        response = admin_client.get("/")
    assert len(response.context["rows"]) == apps


@pytest.mark.parametrize("per_app", [3, 10_000])
def test_the_history_page_costs_a_fixed_number_of_queries(
    admin_client: Client, admin: Any, django_assert_num_queries: Any, per_app: int
) -> None:
    (app,) = add_apps(admin, numbered(0, 1), per_app, live=False, failed_every=5)
    # app, count, page rows (with app and user joined)
    with django_assert_num_queries(AUTH_QUERIES + 3):
        response = admin_client.get(f"/apps/{app.pk}/history/?page=2")
    assert response.status_code == 200


def test_the_deployments_page_costs_a_fixed_number_of_queries(
    admin_client: Client, admin: Any, django_assert_num_queries: Any
) -> None:
    add_apps(admin, numbered(0, 20), 50, live=False, failed_every=5)
    # count, page rows
    with django_assert_num_queries(AUTH_QUERIES + 2):
        admin_client.get("/deployments/")
