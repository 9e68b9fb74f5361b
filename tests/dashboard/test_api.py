"""The REST API: apps CRUD, deploy, deployments, logs, abort, auth and the schema."""

from __future__ import annotations

from typing import Any

from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from deployer.models import App, Deployment

NEW_APP = {"name": "shop", "image": "demo/hello:1", "replicas": 2, "frontend": "shop.localhost"}


def test_it_refuses_anonymous_requests(db: Any, app: App) -> None:
    # Session authentication comes first, and it names no challenge: DRF answers 403, not 401.
    listing = APIClient().get("/api/apps/")
    assert listing.status_code == 403
    assert listing.json() == {"detail": "Authentication credentials were not provided."}
    created = APIClient().post("/api/apps/", NEW_APP, format="json")
    assert created.status_code == 403
    assert not App.objects.filter(name=NEW_APP["name"]).exists()


def test_it_accepts_a_token_from_drf_create_token(admin: Any, app: Any, capsys: Any) -> None:
    call_command("drf_create_token", admin.username)
    token = Token.objects.get(user=admin).key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    response = client.get("/api/apps/")
    assert response.status_code == 200
    assert response.json()["results"][0]["name"] == "hello"


def test_it_creates_an_app_with_201_and_its_id(api: APIClient, admin: Any) -> None:
    response = api.post("/api/apps/", {**NEW_APP, "env": {"MODE": "prod"}}, format="json")
    assert response.status_code == 201
    app = App.objects.get(pk=response.json()["id"])
    assert app.env == {"MODE": "prod"}
    assert app.created_by == admin
    assert response.json()["web_url"].endswith(f"/apps/{app.pk}/")
    assert response.json()["webhook_secret"] == app.webhook_secret


def test_it_reports_every_bad_field_by_name(api: APIClient) -> None:
    response = api.post(
        "/api/apps/",
        {
            "name": "Bad_Name",
            "image": "UPPER CASE",
            "replicas": 0,
            "frontend": "https://x.example.com",
            "container_port": 0,
            "memory_request": "lots",
            "env": {"POD_NAME": "x"},
            "extra_pod_spec": {"containers": []},
        },
        format="json",
    )
    assert response.status_code == 400
    errors = response.json()
    for field in (
        "name",
        "image",
        "replicas",
        "frontend",
        "container_port",
        "memory_request",
        "env",
        "extra_pod_spec",
    ):
        assert field in errors, field
    assert not App.objects.exists()


def test_it_reports_duplicate_names_and_frontends(api: APIClient, app: Any) -> None:
    response = api.post(
        "/api/apps/", {**NEW_APP, "name": "hello", "frontend": "hello.localhost"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["name"] == ["An app named hello already exists in namespace default."]
    assert "already the frontend" in response.json()["frontend"][0]


def test_it_patches_an_app_but_not_its_name(api: APIClient, app: Any) -> None:
    response = api.patch(f"/api/apps/{app.pk}/", {"replicas": 4}, format="json")
    assert response.status_code == 200
    assert response.json()["replicas"] == 4
    response = api.patch(f"/api/apps/{app.pk}/", {"name": "other"}, format="json")
    assert response.status_code == 400
    assert "Fixed once the app exists" in response.json()["name"][0]


def test_it_answers_409_to_a_scale_while_a_deploy_is_queued(
    api: APIClient, app: Any, make_deployment: Any
) -> None:
    make_deployment(app, status=Deployment.Status.QUEUED, started_at=None, finished_at=None)
    response = api.post(f"/api/apps/{app.pk}/scale/", {"replicas": 5}, format="json")
    assert response.status_code == 409
    assert "is queued; scale once it has finished" in response.json()["detail"]
    app.refresh_from_db()
    assert app.replicas == 2


def test_it_refuses_to_delete_a_deployed_app(api: APIClient, app: Any) -> None:
    app.live_version = 1
    app.save()
    response = api.delete(f"/api/apps/{app.pk}/")
    assert response.status_code == 409
    assert "undeploy it first" in response.json()["detail"]
    app.live_version = None
    app.save()
    assert api.delete(f"/api/apps/{app.pk}/").status_code == 204


def test_it_queues_a_deploy_with_202_id_and_url(api: APIClient, app: Any) -> None:
    response = api.post(f"/api/apps/{app.pk}/deploy/", {"image": "demo/hello:2"}, format="json")
    assert response.status_code == 202
    body = response.json()
    deployment = Deployment.objects.get(pk=body["id"])
    assert deployment.trigger == Deployment.Trigger.API
    assert deployment.image == "demo/hello:2"
    assert body["status"] == "queued"
    assert body["url"].endswith(f"/api/deployments/{deployment.pk}/")
    assert response["Location"] == body["url"]
    assert body["web_url"].endswith(f"/deployments/{deployment.pk}/")


def test_it_deploys_without_a_body(api: APIClient, app: Any) -> None:
    response = api.post(f"/api/apps/{app.pk}/deploy/")
    assert response.status_code == 202


def test_it_puts_a_bad_image_on_the_image_field(api: APIClient, app: Any) -> None:
    response = api.post(f"/api/apps/{app.pk}/deploy/", {"image": "no spaces"}, format="json")
    assert response.status_code == 400
    assert "image reference" in response.json()["image"][0]


def test_it_answers_404_for_missing_objects(api: APIClient, db: Any) -> None:
    assert api.get("/api/apps/999/").status_code == 404
    assert api.post("/api/apps/999/deploy/").status_code == 404
    assert api.get("/api/deployments/999/").status_code == 404
    assert api.get("/api/deployments/999/logs/").status_code == 404
    assert api.post("/api/deployments/999/abort/").status_code == 404


def test_it_lists_and_filters_deployments(
    api: APIClient, make_app: Any, make_deployment: Any
) -> None:
    one, two = make_app(), make_app()
    make_deployment(one, version=1)
    make_deployment(two, version=1, status=Deployment.Status.FAILED)
    body = api.get("/api/deployments/").json()
    assert body["count"] == 2
    assert "steps" not in body["results"][0]
    assert api.get(f"/api/deployments/?app={one.pk}").json()["count"] == 1
    failed = api.get("/api/deployments/?status=failed").json()["results"]
    assert [d["app_name"] for d in failed] == [two.name]
    response = api.get("/api/deployments/?status=exploded")
    assert response.status_code == 400
    assert "status" in response.json()
    assert api.get("/api/deployments/?app=abc").status_code == 400
    # Past what a database integer holds: a clear 400, not an overflow in the query.
    response = api.get(f"/api/deployments/?app={2**63}")
    assert response.status_code == 400 and "app" in response.json()


def test_it_returns_one_deployment_with_status_steps_and_health(
    api: APIClient, app: Any, make_deployment: Any
) -> None:
    deployment = make_deployment(app, version=3, steps={"create": {"state": "done"}})
    body = api.get(f"/api/deployments/{deployment.pk}/").json()
    assert body["status"] == "succeeded"
    assert body["version"] == 3
    assert body["steps"] == {"create": {"state": "done"}}
    assert body["duration_seconds"] == 12.0
    assert body["triggered_by"] == "root"


def test_it_returns_log_lines_after_a_seq_in_pages(
    api: APIClient, app: Any, make_deployment: Any
) -> None:
    deployment = make_deployment(app, lines=5)
    url = f"/api/deployments/{deployment.pk}/logs/"
    body = api.get(url, {"after": 2, "limit": 2}).json()
    assert [line["seq"] for line in body["results"]] == [3, 4]
    assert body["has_more"] is True and body["last_seq"] == 4
    body = api.get(url, {"after": 4}).json()
    assert [line["message"] for line in body["results"]] == ["line 5"]
    assert body["has_more"] is False
    assert api.get(url, {"after": 9}).json() == {
        "results": [],
        "last_seq": 9,
        "has_more": False,
        "status": "succeeded",
    }
    response = api.get(url, {"after": "-1"})
    assert response.status_code == 400 and "after" in response.json()


def test_it_aborts_and_says_409_when_already_finished(
    api: APIClient, app: Any, make_deployment: Any
) -> None:
    queued = make_deployment(app, status=Deployment.Status.QUEUED, finished_at=None)
    response = api.post(f"/api/deployments/{queued.pk}/abort/")
    assert response.status_code == 202
    assert response.json()["status"] == "aborted"
    response = api.post(f"/api/deployments/{queued.pk}/abort/")
    assert response.status_code == 409


def test_it_checks_model_permissions_per_action(
    viewer: Any, app: Any, make_deployment: Any
) -> None:
    client = APIClient()
    client.force_authenticate(viewer)
    deployment = make_deployment(app)
    listed = client.get("/api/apps/")
    assert listed.status_code == 200
    assert "webhook_secret" not in listed.json()["results"][0]
    assert client.get(f"/api/deployments/{deployment.pk}/logs/").status_code == 200
    assert client.post("/api/apps/", NEW_APP, format="json").status_code == 403
    assert client.post(f"/api/apps/{app.pk}/deploy/").status_code == 403
    assert client.post(f"/api/deployments/{deployment.pk}/abort/").status_code == 403
    assert client.delete(f"/api/apps/{app.pk}/").status_code == 403


def test_it_refuses_oversized_bodies(api: APIClient, app: Any) -> None:
    big = {"image": "x" * (2 * 1024 * 1024)}
    response = api.post(f"/api/apps/{app.pk}/deploy/", big, format="json")
    assert response.status_code == 413
    assert not Deployment.objects.exists()


def test_it_refuses_malformed_json(api: APIClient, app: Any) -> None:
    response = api.post("/api/apps/", "{not json", content_type="application/json")
    assert response.status_code == 400


def test_it_serves_the_openapi_schema_and_the_docs(api: APIClient, admin_client: Any) -> None:
    schema = api.get("/api/schema/?format=json").json()
    assert "/api/apps/{id}/deploy/" in schema["paths"]
    assert "/api/deployments/{id}/logs/" in schema["paths"]
    assert "/api/hooks/dockerhub/{secret}/" in schema["paths"]
    docs = admin_client.get("/api/docs/").content.decode()
    assert "swagger-ui" in docs
    assert "cdn" not in docs.lower()
