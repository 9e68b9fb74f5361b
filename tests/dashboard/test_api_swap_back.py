"""POST /api/apps/{id}/swap-back/: the app page's Swap back, as a REST twin.

Whether the previous version is still warm is asked of a real (local) cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from rest_framework.test import APIClient

from deployer import k8s
from deployer.cluster import object_name
from deployer.models import App, Deployment


@pytest.fixture
def cluster(settings: Any, kubeconfig: Path) -> Iterator[None]:
    """The session's localcluster as the app's cluster."""
    settings.KUBECONFIG = kubeconfig
    k8s.reset()
    yield
    k8s.reset()


@pytest.fixture
def swapped(make_app: Callable[..., App], make_deployment: Callable[..., Deployment]) -> App:
    """An app whose v2 is live and remembers v1 as its previous version."""
    app = make_app("swapback-api")
    make_deployment(app, version=1, image="demo/hello:1")
    make_deployment(app, version=2, previous_version=1, image="demo/hello:2")
    app.live_version = 2
    app.save()
    return app


@pytest.fixture
def warm_v1(cluster: None, swapped: App) -> Iterator[None]:
    """v1's Deployment still exists in the cluster (scaled to 0: no pods needed)."""
    name = object_name(swapped.name, 1)
    labels = {"app": name}
    k8s.apps_v1().create_namespaced_deployment(
        swapped.namespace,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1DeploymentSpec(
                replicas=0,
                selector=client.V1LabelSelector(match_labels=labels),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels=labels),
                    spec=client.V1PodSpec(
                        containers=[client.V1Container(name="app", image="demo/hello:1")]
                    ),
                ),
            ),
        ),
    )
    yield
    k8s.apps_v1().delete_namespaced_deployment(name, swapped.namespace)


def test_it_queues_a_swap_back_to_the_warm_version_with_202(
    api: APIClient, swapped: App, warm_v1: None
) -> None:
    app = swapped
    response = api.post(f"/api/apps/{app.pk}/swap-back/")
    assert response.status_code == 202, response.json()
    body = response.json()
    deployment = Deployment.objects.get(pk=body["id"])
    assert (deployment.kind, deployment.version, deployment.image) == (
        Deployment.Kind.SWAP_BACK,
        1,
        "demo/hello:1",
    )
    assert body["status"] == "queued"
    assert response["Location"] == body["url"]
    assert body["logs_url"].endswith(f"/api/deployments/{deployment.pk}/logs/")


def test_it_answers_409_when_the_previous_version_is_gone(
    api: APIClient, swapped: App, cluster: None
) -> None:
    response = api.post(f"/api/apps/{swapped.pk}/swap-back/")
    assert response.status_code == 409
    assert "no warm previous version" in response.json()["detail"]
    assert not Deployment.objects.filter(kind=Deployment.Kind.SWAP_BACK).exists()


def test_it_answers_409_for_an_app_never_deployed(api: APIClient, app: App) -> None:
    response = api.post(f"/api/apps/{app.pk}/swap-back/")
    assert response.status_code == 409
    assert f"/api/apps/{app.pk}/deploy/" in response.json()["detail"]


def test_it_needs_the_deploy_permission(viewer: Any, app: App) -> None:
    client = APIClient()
    client.force_authenticate(viewer)
    assert client.post(f"/api/apps/{app.pk}/swap-back/").status_code == 403
    assert APIClient().post(f"/api/apps/{app.pk}/swap-back/").status_code == 403
    assert not Deployment.objects.exists()
