"""Manual promotion in the dashboard and the REST API: the setting, the routes, the buttons."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from dashboard.consumers import DeploymentLogConsumer
from deployer import logsink
from deployer.models import App, Deployment, DeploymentLog

from .test_app_form import errors_of, post

NEW_APP = {"name": "shop", "image": "demo/hello:1", "replicas": 2, "frontend": "shop.localhost"}


@pytest.fixture
def awaiting(app: App, make_deployment: Callable[..., Deployment]) -> Deployment:
    """A deploy of ``hello`` (manual promotion, 600 s) that passed its health checks."""
    App.objects.filter(pk=app.pk).update(promotion="manual", promotion_timeout_seconds=600)
    app.refresh_from_db()
    return make_deployment(
        app,
        descriptor=app.snapshot(),
        status=Deployment.Status.AWAITING_PROMOTION,
        finished_at=None,
        version=2,
        awaiting_since=timezone.now(),
        worker="w#1",
    )


def test_the_api_promotes_a_deployment_awaiting_promotion(
    api: APIClient, awaiting: Deployment, admin: Any
) -> None:
    response = api.post(f"/api/deployments/{awaiting.pk}/promote/")

    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["promotion_decision"]) == ("running", "promote")
    assert body["promotion_decided_by"] == admin.username
    awaiting.refresh_from_db()
    assert awaiting.promotion_decided_by == admin
    line = DeploymentLog.objects.filter(deployment=awaiting).last()
    assert line is not None and line.message.startswith(f"Promoted by {admin.username}")


def test_the_api_rejects_and_then_says_409_with_why(api: APIClient, awaiting: Deployment) -> None:
    response = api.post(f"/api/deployments/{awaiting.pk}/reject/")
    assert response.status_code == 202
    assert response.json()["promotion_decision"] == "reject"

    again = api.post(f"/api/deployments/{awaiting.pk}/promote/")
    assert again.status_code == 409
    assert again.json() == {
        "detail": f"Deployment #{awaiting.pk} is running, not awaiting promotion: only a "
        "deployment that waits after its health checks can be promoted or rejected."
    }
    awaiting.refresh_from_db()
    assert awaiting.promotion_decision == "reject"


def test_a_viewer_may_neither_promote_nor_see_the_buttons(
    viewer: Any, awaiting: Deployment
) -> None:
    client = APIClient()
    client.force_authenticate(viewer)
    assert client.post(f"/api/deployments/{awaiting.pk}/promote/").status_code == 403
    browser = Client()
    browser.force_login(viewer)
    assert browser.post(f"/deployments/{awaiting.pk}/reject/").status_code == 403
    page = browser.get(f"/deployments/{awaiting.pk}/").content.decode()
    assert "promote-form" not in page
    awaiting.refresh_from_db()
    assert awaiting.status == Deployment.Status.AWAITING_PROMOTION


def test_the_api_lists_deployments_awaiting_promotion_with_their_deadline(
    api: APIClient, awaiting: Deployment, make_deployment: Callable[..., Deployment]
) -> None:
    make_deployment(awaiting.app)
    listed = api.get("/api/deployments/?status=awaiting_promotion").json()["results"]
    assert [row["id"] for row in listed] == [awaiting.pk]
    detail = api.get(f"/api/deployments/{awaiting.pk}/").json()
    assert awaiting.awaiting_since is not None
    deadline = datetime.fromisoformat(detail["promotion_deadline"].replace("Z", "+00:00"))
    assert deadline == awaiting.awaiting_since + timedelta(seconds=600)
    assert detail["status"] == "awaiting_promotion"


def test_the_schema_has_both_routes_and_the_status(db: Any) -> None:
    schema = APIClient().get("/api/schema/?format=json").json()
    for route in ("promote", "reject"):
        answers = schema["paths"][f"/api/deployments/{{id}}/{route}/"]["post"]["responses"]
        assert {"202", "403", "404", "409"} <= set(answers)
    statuses = schema["components"]["schemas"]["DeploymentStatusEnum"]["enum"]
    assert "awaiting_promotion" in statuses


def test_the_deployment_page_offers_promote_and_reject_only_while_awaiting(
    admin_client: Client, awaiting: Deployment, make_deployment: Callable[..., Deployment]
) -> None:
    page = admin_client.get(f"/deployments/{awaiting.pk}/").content.decode()
    assert 'id="promotion-actions" class="promotion-actions" >' in page
    assert f'action="/deployments/{awaiting.pk}/promote/"' in page
    assert "return confirm('Reject this deployment?" in page
    assert "Awaiting promotion — the new version passed its health checks" in page
    assert 'id="promotion-deadline" >Rejected at' in page
    assert '<span id="status-badge" class="badge awaiting_promotion">awaiting promotion' in page

    finished = make_deployment(awaiting.app)
    page = admin_client.get(f"/deployments/{finished.pk}/").content.decode()
    assert 'id="promotion-actions" class="promotion-actions" hidden' in page


def test_the_buttons_post_the_decision_and_land_on_the_deployment(
    admin_client: Client, awaiting: Deployment
) -> None:
    response = admin_client.post(f"/deployments/{awaiting.pk}/reject/")
    assert response.status_code == 302
    assert response["Location"] == f"/deployments/{awaiting.pk}/"
    awaiting.refresh_from_db()
    assert (awaiting.status, awaiting.promotion_decision) == ("running", "reject")
    # Too late now: said, and nothing changes.
    response = admin_client.post(f"/deployments/{awaiting.pk}/promote/", follow=True)
    assert "not awaiting promotion" in response.content.decode()
    awaiting.refresh_from_db()
    assert awaiting.promotion_decision == "reject"


def test_the_app_page_shows_the_waiting_promotion_with_its_buttons(
    admin_client: Client, awaiting: Deployment
) -> None:
    page = admin_client.get(f"/apps/{awaiting.app_id}/").content.decode()
    assert 'class="notice running awaiting_promotion"' in page
    assert '<span class="active-status">awaiting promotion</span>' in page
    assert f'action="/deployments/{awaiting.pk}/promote/"' in page
    assert f'action="/deployments/{awaiting.pk}/reject/"' in page
    assert "manual promotion, rejected after 10 min" in page
    assert 'href="http://hello--v2.localhost' in page  # its preview, beside the buttons


def test_a_deploy_queued_behind_it_says_it_waits_for_the_promotion(
    api: APIClient, awaiting: Deployment
) -> None:
    queued = api.post(f"/api/apps/{awaiting.app_id}/deploy/", {}, format="json")
    assert queued.status_code == 202
    lines = list(
        DeploymentLog.objects.filter(deployment_id=queued.json()["id"]).values_list(
            "message", flat=True
        )
    )
    assert f"Waiting for deployment #{awaiting.pk} of default/hello, which awaits promotion" in (
        "\n".join(lines)
    )


def test_the_app_list_labels_the_status(admin_client: Client, awaiting: Deployment) -> None:
    page = admin_client.get("/").content.decode()
    assert '<span class="badge awaiting_promotion">awaiting promotion</span>' in page


def test_the_api_sets_manual_promotion_and_refuses_bad_values_by_name(api: APIClient) -> None:
    created = api.post(
        "/api/apps/",
        {**NEW_APP, "promotion": "manual", "promotion_timeout_seconds": 900},
        format="json",
    )
    assert created.status_code == 201, created.json()
    assert App.objects.get(name="shop").snapshot()["promotion"] == {
        "mode": "manual",
        "timeout": 900,
    }
    url = f"/api/apps/{created.json()['id']}/"

    unknown = api.patch(url, {"promotion": "later"}, format="json")
    assert unknown.status_code == 400
    assert unknown.json() == {
        "promotion": [
            'Unknown promotion mode "later": choose automatic (switch as soon as every pod is '
            "healthy); manual (wait for Promote or Reject after the health checks)."
        ]
    }
    for timeout in (0, 7 * 24 * 3600 + 1, -5):
        refused = api.patch(url, {"promotion_timeout_seconds": timeout}, format="json")
        assert refused.status_code == 400
        assert refused.json()["promotion_timeout_seconds"] == [
            "Enter a promotion timeout between 1 second and 604800 seconds (7 days)."
        ]
    assert App.objects.get(name="shop").promotion_timeout_seconds == 900


def test_the_form_sets_manual_promotion_in_the_rollout_section(admin_client: Client) -> None:
    form = admin_client.get("/apps/new/").content.decode()
    rollout = form[form.index("<h2>Rollout</h2>") :]
    assert 'name="promotion"' in rollout
    assert 'name="promotion_timeout_seconds"' in rollout

    response = post(admin_client, promotion="manual", promotion_timeout_seconds="120")
    assert response.status_code == 302
    app = App.objects.get(name="shop")
    assert (app.promotion, app.promotion_timeout_seconds) == ("manual", 120)


def test_the_form_refuses_a_bad_mode_and_timeout_on_their_fields(admin_client: Client) -> None:
    response = post(admin_client, promotion="later", promotion_timeout_seconds="0")
    assert response.status_code == 400
    assert errors_of(response, "promotion") == [
        "Unknown promotion mode later: choose automatic (switch as soon as every pod is "
        "healthy); manual (wait for Promote or Reject after the health checks)."
    ]
    assert errors_of(response, "promotion_timeout_seconds") == [
        "Enter a promotion timeout between 1 second and 604800 seconds (7 days): a deploy "
        "awaiting promotion is rejected once it has waited this long."
    ]
    assert not App.objects.filter(name="shop").exists()


def test_the_status_message_carries_the_deadline_to_the_page(awaiting: Deployment) -> None:
    payload = logsink.status_payload(awaiting)
    assert awaiting.awaiting_since is not None
    deadline = awaiting.awaiting_since + timedelta(seconds=600)
    assert payload["status"] == "awaiting_promotion"
    assert payload["promotion_deadline"] == deadline.isoformat()
    assert DeploymentLogConsumer().client_status(payload)["promotion_deadline"] == (
        deadline.isoformat()
    )
    awaiting.stop_awaiting(Deployment.Decision.PROMOTE)
    assert logsink.status_payload(awaiting)["promotion_deadline"] is None
