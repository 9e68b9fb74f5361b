"""``GET /api/load-balancers/``: the fleet as JSON, for whoever may see the Load balancer page."""

from __future__ import annotations

import io
import socket
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from schemathesis.checks import not_a_server_error

from deployer.etcdstore import EtcdStore
from tests.dashboard.fleetkit import (
    LB0,
    LB1,
    REFUSAL,
    VERSION,
    Fleet,
    register,
)

URL = "/api/load-balancers/"


def client_of(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.mark.django_db
def test_it_lists_each_live_load_balancer_with_its_revision_lag_reloads_and_health(
    api: APIClient, fleet: Fleet
) -> None:
    response = api.get(URL)

    assert response.status_code == 200
    body = response.json()
    assert body["revision"] == fleet.revision and body["count"] == 2 and body["error"] is None
    current, behind = body["results"]
    assert current == {
        "id": "lb-0",
        "state": "live",
        "haproxy_answers": None,
        "address": LB0,
        "healthy": True,
        "error": None,
        "haproxy_version": VERSION,
        "started_at": "2026-12-01T09:00:00Z",
        "last_reload_at": "2026-12-01T09:30:00Z",
        "reloads": 3,
        "applied_revision": fleet.applied["lb-0"],
        "applied_at": "2026-12-01T09:30:00Z",
        "lag": 0,
        "reloaded": False,
        "seconds": 0.002,
        "rejected": None,
        "drained_revision": fleet.applied["lb-1"],
        "skipped": [
            {
                "key": f"{fleet.store.prefix}/backends/default.junk-v1",
                "reason": "servers must be a list, not str",
            }
        ],
    }
    assert behind["id"] == "lb-1" and behind["address"] == LB1
    assert behind["healthy"] is False and behind["error"] == f"revision 9 refused: {REFUSAL}"
    assert behind["applied_revision"] == fleet.applied["lb-1"]
    assert behind["lag"] == 1  # the one routing change it refused
    assert behind["rejected"] == {"revision": fleet.refused, "error": REFUSAL}
    assert (behind["reloads"], behind["last_reload_at"], behind["reloaded"]) == (0, None, None)
    assert behind["drained_revision"] is None and behind["skipped"] == []


@pytest.mark.django_db
def test_at_rest_every_lag_is_zero_although_the_fleet_keeps_writing_to_etcd(
    api: APIClient, fleet: Fleet
) -> None:
    store, leases = fleet.store, fleet.leases
    store.put_applied(fleet.revision, lb_id="lb-1", lease=leases["lb-1"], changes=2)
    for _ in range(3):  # acknowledgements and registrations are etcd revisions too
        store.put_drained(fleet.revision, lb_id="lb-1", lease=leases["lb-1"], servers={})
        store.put_applied(fleet.revision, lb_id="lb-0", lease=leases["lb-0"], changes=2)

    body = api.get(URL).json()

    assert body["revision"] > fleet.revision
    assert [(b["id"], b["lag"]) for b in body["results"]] == [("lb-0", 0), ("lb-1", 0)]
    # A deletion is a change too: both are one behind until they apply it.
    store.delete_backend("default.junk-v1")
    assert [b["lag"] for b in api.get(URL).json()["results"]] == [1, 1]


@pytest.mark.django_db
def test_a_load_balancer_whose_lease_ends_is_listed_as_proxysync_down_until_forgotten(
    api: APIClient, fleet: Fleet
) -> None:
    fleet.store.revoke_lease(fleet.leases["lb-0"])

    body = api.get(URL).json()

    assert [(b["id"], b["state"]) for b in body["results"]] == [
        ("lb-0", "proxysync down"),
        ("lb-1", "live"),
    ]
    down = body["results"][0]
    assert down["address"] == LB0 and down["haproxy_answers"] is False
    assert (down["healthy"], down["applied_revision"], down["lag"]) == (False, None, None)
    with pytest.raises(CommandError, match="lb-1 is registered"):
        call_command("proxysync", forget="lb-1")
    out = io.StringIO()
    call_command("proxysync", forget="lb-0", stdout=out)
    assert "forgot load balancer lb-0" in out.getvalue()
    assert [b["id"] for b in api.get(URL).json()["results"]] == ["lb-1"]
    with pytest.raises(CommandError, match="no load balancer lb-0 is a member"):
        call_command("proxysync", forget="lb-0")


@pytest.mark.django_db
def test_a_member_whose_haproxy_still_accepts_connections_says_so(
    api: APIClient, records: EtcdStore
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as haproxy:
        port = haproxy.getsockname()[1]
        records.revoke_lease(register(records, "lb-2", f"http://127.0.0.1:{port}"))

        (down,) = api.get(URL).json()["results"]

        assert (down["id"], down["state"], down["haproxy_answers"]) == (
            "lb-2",
            "proxysync down",
            True,
        )
    assert api.get(URL).json()["results"][0]["haproxy_answers"] is False


@pytest.mark.django_db
def test_whoever_may_see_the_load_balancer_page_may_read_it_and_nobody_may_write(
    fleet: Fleet, viewer: Any, stranger: Any, role_user: Any
) -> None:
    assert client_of(viewer).get(URL).status_code == 200
    # The fleet serves every namespace: a role in one namespace is not enough.
    for user in (stranger, role_user("shop-admin", "admin", namespace="shop")):
        refused = client_of(user).get(URL)
        assert refused.status_code == 403
        assert refused.json() == {"detail": "Seeing this needs a role on every namespace (*)."}
    assert APIClient().get(URL).status_code == 403
    for method in ("post", "put", "patch", "delete"):
        assert getattr(client_of(viewer), method)(URL, {}).status_code == 405


@pytest.mark.django_db
def test_it_says_why_when_etcd_cannot_be_read(api: APIClient, settings: Any) -> None:
    settings.ETCD_ENDPOINT = "127.0.0.1:1"

    response = api.get(URL)

    assert response.status_code == 503
    body = response.json()
    assert body["error"].startswith("etcd could not be read: ")
    assert (body["revision"], body["count"], body["results"]) == (None, 0, [])


@pytest.mark.django_db(transaction=True)
def test_its_answers_are_the_ones_the_openapi_schema_describes(
    fleet: Fleet, admin: Any, settings: Any
) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", WSGIHandler())
    operation = schema["/api/load-balancers/"]["GET"]
    headers = {"Authorization": f"Token {Token.objects.create(user=admin).key}"}

    answered = operation.Case().call(headers=headers)
    assert answered.status_code == 200 and answered.json()["count"] == 2
    operation.Case().validate_response(answered, headers=headers)

    settings.ETCD_ENDPOINT = "127.0.0.1:1"
    unread = operation.Case().call(headers=headers)
    assert unread.status_code == 503 and unread.json()["error"]
    # A 503 by design: its body is still the documented one.
    operation.Case().validate_response(
        unread, headers=headers, excluded_checks=[not_a_server_error]
    )

    refused = operation.Case().call()
    assert refused.status_code == 403
    operation.Case().validate_response(refused)
