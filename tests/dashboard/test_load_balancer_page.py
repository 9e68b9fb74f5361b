"""The Load balancer page: backends, their hostnames and servers, and records left out."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from deployer.etcdstore import EtcdStore
from tests.servers import Server


@pytest.fixture
def records(etcd: Server, settings: Any) -> Iterator[EtcdStore]:
    """An etcd prefix of this test's own, configured for the page."""
    settings.ETCD_ENDPOINT = str(etcd.extra["endpoint"])
    settings.ETCD_PREFIX = f"/page-{uuid.uuid4().hex[:8]}"
    with EtcdStore() as store:
        yield store


@pytest.mark.django_db
def test_it_shows_each_backend_with_its_hostnames_servers_and_the_records_left_out(
    admin_client: Client, records: EtcdStore
) -> None:
    records.put_route(
        "hello.localhost",
        "default.hello-v1",
        [{"name": "hello-v1-abc", "address": "127.1.0.5", "port": 8080}],
        backend_options={"version": 1},
    )
    records._client.put(records.backend_key("default.junk-v1"), json.dumps({"servers": "x"}))
    records.put_applied(
        7,
        reloaded=False,
        runtime_seconds=0.002,
        skipped={"backends/default.junk-v1": "servers must be a list, not str"},
    )

    response = admin_client.get("/load-balancer/")

    assert response.status_code == 200
    page = response.content.decode()
    assert "default.hello-v1" in page and "hello.localhost" in page
    assert "hello-v1-abc 127.1.0.5:8080" in page
    assert f"{records.prefix}/backends/default.junk-v1" in page
    assert "servers must be a list, not str" in page
    assert "runtime API, no reload" in page


@pytest.mark.django_db
def test_it_says_when_etcd_cannot_be_read(admin_client: Client, settings: Any) -> None:
    settings.ETCD_ENDPOINT = "127.0.0.1:1"

    response = admin_client.get("/load-balancer/")

    assert response.status_code == 200
    assert "etcd could not be read" in response.content.decode()
