"""The deployment page links the version's preview while its record is in etcd (not retired)."""

from __future__ import annotations

from typing import Any

from django.test import Client

from deployer.collaborators import backend_name
from deployer.etcdstore import EtcdStore
from deployer.models import Deployment

HEALTHY = {"health": {"state": "done", "seconds": 0.5}}


def test_it_links_the_preview_until_the_version_is_retired(
    admin_client: Client, app: Any, make_deployment: Any, records: EtcdStore, settings: Any
) -> None:
    settings.LB_URL = "http://127.0.0.1:8080"
    deployment = make_deployment(app, version=2, steps=HEALTHY)
    backend = backend_name("default", "hello", 2)
    records.put_preview(
        backend, {"hostname": "hello--v2.localhost", "frontend": "hello.localhost", "version": 2}
    )

    html = admin_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert 'id="preview-link" href="http://hello--v2.localhost:8080/"' in html
    assert ">Preview v2</a>" in html

    records.delete_backend(backend)  # retiring the version deletes its preview with it
    html = admin_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert 'id="preview-link"' not in html


def test_it_links_no_preview_of_a_rolled_back_or_unchecked_version(
    admin_client: Client, app: Any, make_deployment: Any, records: EtcdStore
) -> None:
    records.put_preview(
        backend_name("default", "hello", 3),
        {"hostname": "hello--v3.localhost", "frontend": "hello.localhost", "version": 3},
    )
    failed = make_deployment(app, version=3, steps=HEALTHY, status=Deployment.Status.FAILED)
    checking = make_deployment(
        app, version=3, steps={"health": {"state": "running"}}, status=Deployment.Status.RUNNING
    )

    for deployment in (failed, checking):
        html = admin_client.get(f"/deployments/{deployment.pk}/").content.decode()
        assert 'id="preview-link"' not in html


def test_it_shows_the_page_without_the_link_when_etcd_does_not_answer(
    admin_client: Client, app: Any, make_deployment: Any, settings: Any
) -> None:
    settings.ETCD_ENDPOINT = "127.0.0.1:1"
    deployment = make_deployment(app, version=2, steps=HEALTHY)

    response = admin_client.get(f"/deployments/{deployment.pk}/")
    assert response.status_code == 200
    assert 'id="preview-link"' not in response.content.decode()
