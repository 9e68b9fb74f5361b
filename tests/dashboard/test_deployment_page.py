"""The deployment page: banner, steps, stored log lines, pod health; abort."""

from __future__ import annotations

from typing import Any

from django.test import Client

from deployer.models import Deployment


def test_it_renders_stored_lines_and_the_last_seq_for_the_socket(
    admin_client: Client, app: Any, make_deployment: Any
) -> None:
    deployment = make_deployment(app, version=2, lines=3, status=Deployment.Status.RUNNING)
    html = admin_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert 'data-last-seq="3"' in html
    assert f'data-ws-path="/ws/deployments/{deployment.pk}/"' in html
    assert f'data-logs-url="/api/deployments/{deployment.pk}/logs/"' in html
    assert html.count('class="log-line level-info"') == 3
    assert 'class="banner running"' in html
    assert "js/deployment.js" in html


def test_it_orders_steps_as_they_ran_with_durations(
    admin_client: Client, app: Any, make_deployment: Any
) -> None:
    deployment = make_deployment(
        app,
        steps={
            "switch": {"state": "failed", "started": "2026-01-01T00:00:09", "seconds": 0.4},
            "create": {"state": "done", "started": "2026-01-01T00:00:01", "seconds": 1.25},
            "health": {"state": "done", "started": "2026-01-01T00:00:03", "seconds": 12},
        },
        status=Deployment.Status.FAILED,
        failure_reason="etcd unreachable",
    )
    response = admin_client.get(f"/deployments/{deployment.pk}/")
    rows = response.context["steps"]
    assert [(r.name, r.state) for r in rows] == [
        ("prepare", "pending"),
        ("create", "done"),
        ("pods", "pending"),
        ("health", "done"),
        ("switch", "failed"),
        ("verify", "pending"),
        ("guard", "pending"),
        ("retire", "pending"),
    ]
    assert rows[1].label == "Create the new version"
    html = response.content.decode()
    assert "1.2 s" in html and "12 s" in html
    assert "etcd unreachable" in html
    assert "the previous version kept serving" in html


def test_it_shows_each_pods_health_result(
    admin_client: Client, app: Any, make_deployment: Any
) -> None:
    deployment = make_deployment(
        app,
        health_results=[
            {
                "pod": "hello-v2-x",
                "ip": "127.1.0.9",
                "healthy": True,
                "status": 200,
                "detail": "HTTP 200",
                "seconds": 0.01,
                "version": "2",
            },
            {
                "pod": "hello-v2-y",
                "ip": "127.1.0.10",
                "healthy": False,
                "status": 200,
                "detail": "HTTP 200, healthy: false",
                "seconds": 0.02,
                "version": "2",
            },
        ],  # fmt: skip
    )
    html = admin_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "hello-v2-y" in html and "healthy: false" in html
    assert '<span class="badge failed">unhealthy</span>' in html


def test_it_aborts_a_queued_deployment(
    admin_client: Client, app: Any, make_deployment: Any
) -> None:
    deployment = make_deployment(app, status=Deployment.Status.QUEUED, finished_at=None)
    response = admin_client.post(f"/deployments/{deployment.pk}/abort/", follow=True)
    deployment.refresh_from_db()
    assert deployment.status == Deployment.Status.ABORTED
    assert "Abort of deployment" in response.content.decode()


def test_it_says_a_finished_deployment_cannot_be_aborted(
    admin_client: Client, app: Any, make_deployment: Any
) -> None:
    deployment = make_deployment(app)
    response = admin_client.post(f"/deployments/{deployment.pk}/abort/", follow=True)
    assert "already succeeded" in response.content.decode()


def test_it_answers_404_and_403(
    client: Client,
    admin_client: Client,
    stranger: Any,
    app: Any,
    make_deployment: Any,
    role_user: Any,
) -> None:
    assert admin_client.get("/deployments/12345/").status_code == 404
    assert admin_client.post("/deployments/12345/abort/").status_code == 404
    deployment = make_deployment(app)
    client.force_login(stranger)
    # Without a role in the app's namespace the deployment is out of sight: 404, not 403.
    assert client.get(f"/deployments/{deployment.pk}/").status_code == 404
    viewer = role_user("viewer-here", "viewer", namespace=app.namespace)
    client.force_login(viewer)
    assert client.get(f"/deployments/{deployment.pk}/").status_code == 200
    assert client.post(f"/deployments/{deployment.pk}/abort/").status_code == 403


def test_it_lists_every_apps_deployments(
    admin_client: Client, make_app: Any, make_deployment: Any
) -> None:
    make_deployment(make_app(name="one"), version=1)
    make_deployment(make_app(name="two"), version=7)
    html = admin_client.get("/deployments/").content.decode()
    assert ">one</a>" in html and ">two</a>" in html
    assert "2 deployments" in html


def test_it_filters_every_apps_deployments_by_status_and_trigger(
    admin_client: Client, app: Any, make_deployment: Any
) -> None:
    make_deployment(app, version=1)
    make_deployment(app, version=2, status=Deployment.Status.FAILED)
    make_deployment(app, version=3, status=Deployment.Status.FAILED, trigger="webhook")
    response = admin_client.get("/deployments/?status=failed")
    assert [d.version for d in response.context["page"].object_list] == [3, 2]
    response = admin_client.get("/deployments/?status=failed&trigger=webhook")
    assert [d.version for d in response.context["page"].object_list] == [3]
    response = admin_client.get("/deployments/?status=exploded")
    assert response.context["page"].paginator.count == 3
    assert "Select a valid choice" in response.content.decode()
