"""The app page and its actions: deploy, redeploy, scale, swap back, undeploy."""

from __future__ import annotations

import json
from typing import Any

from django.test import Client

from deployer.models import Deployment
from deployer.pods import PodInfo


def test_it_shows_live_pods_with_their_health(
    admin_client: Client, app: Any, monkeypatch: Any, make_deployment: Any
) -> None:
    app.live_version = 4
    app.save()
    make_deployment(app, version=5, status=Deployment.Status.RUNNING, finished_at=None)
    pods = [
        PodInfo("hello-v4-a", "hello", 4, "127.1.0.5", "node-1", "Running", True, True, 0),
        PodInfo("hello-v4-b", "hello", 4, "127.1.0.6", "node-2", "Pending", False, False, 2,
                reason="ContainerCreating"),
        PodInfo("hello-v5-c", "hello", 5, "127.1.0.7", "node-2", "Running", False, False, 3,
                reason="CrashLoopBackOff"),
    ]  # fmt: skip
    monkeypatch.setattr("deployer.cluster.KubeCluster.__init__", lambda self: None)
    monkeypatch.setattr("deployer.cluster.KubeCluster.managed_pods", lambda self, ns: pods)
    html = admin_client.get(f"/apps/{app.pk}/").content.decode()
    assert "hello-v4-a" in html and "127.1.0.5" in html
    assert '<span class="badge succeeded">ready</span>' in html
    assert (
        '<span class="badge running" title="ContainerCreating, not ready yet">starting</span>'
        in html
    )
    assert '<span class="badge failed" title="CrashLoopBackOff">crashloopbackoff</span>' in html
    assert "1 / 2" in html
    assert 'v5 <span class="tag">deploying</span>' in html


def test_it_shows_history_chart_data_and_redeploy_buttons(
    admin_client: Client, app: Any, make_deployment: Any
) -> None:
    make_deployment(app, version=1, image="demo/hello:1")
    make_deployment(app, version=2, image="demo/broken", status=Deployment.Status.FAILED)
    make_deployment(app, version=3, image="demo/slow", status=Deployment.Status.RUNNING)
    response = admin_client.get(f"/apps/{app.pk}/")
    html = response.content.decode()
    chart = response.context["chart"]
    assert [(p["version"], p["status"]) for p in chart] == [
        (1, "succeeded"),
        (2, "failed"),
        (3, "running"),
    ]
    assert chart[0]["seconds"] == 12.0
    assert 'id="deploy-chart-data"' in html
    assert html.count("Redeploy this version") == 2  # not the running one
    assert '<input type="hidden" name="image" value="demo/broken">' in html


def test_it_queues_a_deploy_and_lands_on_the_deployment_page(
    admin_client: Client, app: Any, admin: Any
) -> None:
    response = admin_client.post(f"/apps/{app.pk}/deploy/", {"image": "demo/hello:2"})
    deployment = Deployment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/deployments/{deployment.pk}/"
    assert deployment.status == Deployment.Status.QUEUED
    assert deployment.image == "demo/hello:2"
    assert deployment.trigger == Deployment.Trigger.UI
    assert deployment.triggered_by == admin


def test_it_deploys_the_apps_image_without_an_override(admin_client: Client, app: Any) -> None:
    admin_client.post(f"/apps/{app.pk}/deploy/", {"image": ""})
    assert Deployment.objects.get().image == "demo/hello:1"


def test_it_puts_a_bad_image_override_on_the_field(admin_client: Client, app: Any) -> None:
    response = admin_client.post(f"/apps/{app.pk}/deploy/", {"image": "Not An Image"})
    assert response.status_code == 400
    assert "image reference" in response.context["deploy_form"].errors["image"][0]
    assert not Deployment.objects.exists()


def test_it_shows_a_running_deploy_with_abort(
    admin_client: Client, app: Any, make_deployment: Any
) -> None:
    running = make_deployment(app, status=Deployment.Status.RUNNING, finished_at=None)
    html = admin_client.get(f"/apps/{app.pk}/").content.decode()
    assert f'action="/deployments/{running.pk}/abort/"' in html


def test_it_scales_and_validates_replicas(admin_client: Client, app: Any) -> None:
    response = admin_client.post(f"/apps/{app.pk}/scale/", {"replicas": "5"})
    assert response.status_code == 302
    app.refresh_from_db()
    assert app.replicas == 5
    response = admin_client.post(f"/apps/{app.pk}/scale/", {"replicas": "-1"})
    assert response.status_code == 400
    assert response.context["scale_form"].errors["replicas"]
    response = admin_client.post(f"/apps/{app.pk}/scale/", {"replicas": "100000"})
    assert response.status_code == 400


def test_it_refuses_to_scale_while_a_deploy_is_running(
    admin_client: Client, app: Any, make_deployment: Any
) -> None:
    # The deploy snapshotted 2 replicas; scaling now would leave its new version at 2.
    running = make_deployment(app, status=Deployment.Status.RUNNING, finished_at=None)
    response = admin_client.post(f"/apps/{app.pk}/scale/", {"replicas": "5"})
    assert response.status_code == 400
    (error,) = response.context["scale_form"].errors["replicas"]
    assert f"Deployment #{running.pk} of" in error and "scale once it has finished" in error
    app.refresh_from_db()
    assert app.replicas == 2


def test_it_says_when_there_is_nothing_to_swap_back_to(admin_client: Client, app: Any) -> None:
    response = admin_client.post(f"/apps/{app.pk}/swap-back/", follow=True)
    assert "no longer running" in response.content.decode()
    assert not Deployment.objects.exists()


def test_it_undeploys_only_after_the_name_is_typed(admin_client: Client, app: Any) -> None:
    assert "Type the app" in admin_client.get(f"/apps/{app.pk}/undeploy/").content.decode()
    response = admin_client.post(f"/apps/{app.pk}/undeploy/", {"confirm": "nope"})
    assert response.status_code == 400
    assert response.context["form"].errors["confirm"] == ["Type hello to confirm."]
    response = admin_client.post(f"/apps/{app.pk}/undeploy/", {})
    assert response.status_code == 400
    assert response.context["form"].errors["confirm"] == ["Type hello to confirm."]
    assert not Deployment.objects.exists()
    response = admin_client.post(f"/apps/{app.pk}/undeploy/", {"confirm": "hello"})
    undeploy = Deployment.objects.get()
    assert undeploy.kind == Deployment.Kind.UNDEPLOY
    assert response["Location"] == f"/deployments/{undeploy.pk}/"


def test_it_refuses_actions_to_viewers_and_get_on_actions(
    client: Client, viewer: Any, app: Any
) -> None:
    client.force_login(viewer)
    assert client.get(f"/apps/{app.pk}/").status_code == 200
    assert client.post(f"/apps/{app.pk}/deploy/").status_code == 403
    assert client.post(f"/apps/{app.pk}/scale/", {"replicas": 1}).status_code == 403
    assert client.get(f"/apps/{app.pk}/undeploy/").status_code == 403
    client.force_login(viewer)
    assert client.get(f"/apps/{app.pk}/deploy/").status_code == 405


def test_it_answers_404_for_missing_apps(admin_client: Client, db: Any) -> None:
    for url in ("/apps/9/", "/apps/9/history/"):
        assert admin_client.get(url).status_code == 404
    for url in ("/apps/9/deploy/", "/apps/9/scale/", "/apps/9/swap-back/"):
        assert admin_client.post(url).status_code == 404


def test_it_pages_through_the_history(admin_client: Client, app: Any, make_deployment: Any) -> None:
    for version in range(1, 61):
        make_deployment(app, version=version)
    page1 = admin_client.get(f"/apps/{app.pk}/history/")
    assert len(page1.context["page"].object_list) == 50
    assert page1.context["page"].object_list[0].version == 60
    page2 = admin_client.get(f"/apps/{app.pk}/history/?page=2")
    assert [d.version for d in page2.context["page"].object_list] == list(range(10, 0, -1))
    assert admin_client.get(f"/apps/{app.pk}/history/?page=zzz").status_code == 200


def test_the_chart_payload_is_json(admin_client: Client, app: Any, make_deployment: Any) -> None:
    make_deployment(app, version=1)
    html = admin_client.get(f"/apps/{app.pk}/").content.decode()
    start = html.index('id="deploy-chart-data" type="application/json">') + len(
        'id="deploy-chart-data" type="application/json">'
    )
    data = json.loads(html[start : html.index("</script>", start)])
    assert data[0]["url"].startswith("/deployments/")
