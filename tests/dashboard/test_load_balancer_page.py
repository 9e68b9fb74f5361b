"""The Load balancer page: every live load balancer, backends, their hostnames and servers, records left out."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from tests.dashboard.fleetkit import LB0, LB1, REFUSAL, VERSION, Fleet


def row_of(page: str, lb_id: str) -> str:
    """The table row of load balancer ``lb_id``, tags removed and blanks squeezed."""
    match = re.search(rf'<tr id="lb-{lb_id}">(.*?)</tr>', page, re.S)
    assert match is not None, f"no row for {lb_id}"
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(1)).split())


@pytest.mark.django_db
def test_it_lists_every_load_balancer_with_its_address_revision_lag_reloads_and_health(
    admin_client: Client, fleet: Fleet, settings: Any
) -> None:
    response = admin_client.get("/load-balancer/")

    assert response.status_code == 200
    page = response.content.decode()
    assert f"at revision {fleet.revision} · 2 load balancers live" in page
    assert f">{settings.LB_URL}</a> · records under" in page  # where users' traffic enters
    current = row_of(page, "lb-0")
    assert current.startswith(f"lb-0 {LB0} healthy " + VERSION)
    assert f"{fleet.applied['lb-0']} current runtime API in 2 ms" in current
    assert "3 reloads since start" in current
    assert 'title="proxysync started 2026-12-01 09:00:00 UTC">3 reloads' in page
    behind = row_of(page, "lb-1")
    lag = 1  # the one routing change it refused
    assert behind.startswith(f"lb-1 {LB1} unhealthy revision 9 refused")
    assert f"{fleet.applied['lb-1']} {lag} behind the fleet " in behind
    assert "behind the fleet" not in current
    assert f'title="changes of frontend or backend records it has not applied yet">{lag}<' in page
    assert f"refused revision {fleet.refused}" in behind
    assert "none since start 0 reloads since start" in behind
    assert page.index('id="lb-lb-0"') < page.index('id="lb-lb-1"')
    assert REFUSAL[:40] in page


@pytest.mark.django_db
def test_it_shows_each_backend_with_its_hostnames_servers_and_the_records_left_out(
    admin_client: Client, fleet: Fleet
) -> None:
    page = admin_client.get("/load-balancer/").content.decode()

    assert "default.hello-v1" in page and "hello.localhost" in page
    assert "hello-v1-abc 127.1.0.5:8080" in page
    left_out = re.search(r'id="skipped".*?</section>', page, re.S)
    assert left_out is not None
    text = " ".join(re.sub(r"<[^>]+>", " ", left_out.group(0)).split())
    key = f"{fleet.store.prefix}/backends/default.junk-v1"
    assert f"{key} servers must be a list, not str lb-0" in text
    assert "lb-1" not in text
    assert 'title="servers must be a list, not str">left out' in page


@pytest.mark.django_db
def test_at_rest_a_load_balancer_that_applied_every_change_is_current(
    admin_client: Client, fleet: Fleet
) -> None:
    store, leases = fleet.store, fleet.leases
    store.put_applied(fleet.revision, lb_id="lb-1", lease=leases["lb-1"], changes=2)
    store.put_drained(fleet.revision, lb_id="lb-1", lease=leases["lb-1"], servers={})

    page = admin_client.get("/load-balancer/").content.decode()

    for lb_id in ("lb-0", "lb-1"):
        assert f"{fleet.revision} current" in row_of(page, lb_id)


@pytest.mark.django_db
def test_a_load_balancer_whose_lease_ends_shows_as_proxysync_down_until_forgotten(
    admin_client: Client, fleet: Fleet
) -> None:
    fleet.store.revoke_lease(fleet.leases["lb-1"])

    page = admin_client.get("/load-balancer/").content.decode()

    assert "1 load balancer live · 1 with proxysync down" in page
    down = row_of(page, "lb-1")
    assert down.startswith(f"lb-1 {LB1} proxysync down its HAProxy does not answer")
    assert "refused revision" not in page

    assert fleet.store.forget_member("lb-1")
    fleet.store.revoke_lease(fleet.leases["lb-0"])
    assert fleet.store.forget_member("lb-0")
    page = admin_client.get("/load-balancer/").content.decode()
    assert "No load balancer is registered under" in page
    assert f"<code>{fleet.store.prefix}/lbs/</code>" in page
    assert "Records left out" not in page


@pytest.mark.django_db
def test_it_says_when_etcd_cannot_be_read(admin_client: Client, settings: Any) -> None:
    settings.ETCD_ENDPOINT = "127.0.0.1:1"

    response = admin_client.get("/load-balancer/")

    assert response.status_code == 200
    assert "etcd could not be read" in response.content.decode()


@pytest.mark.django_db
def test_an_empty_unrouted_backend_is_shown_as_the_next_deploys_standby(
    admin_client: Client, fleet: Fleet
) -> None:
    fleet.store.put_backend("default.hello-v2", {"servers": [], "version": 2})
    fleet.store.put_backend(
        "default.other-v1",
        {"servers": [{"name": "other-v1-x", "address": "127.1.0.9", "port": 8080}], "version": 1},
    )

    page = admin_client.get("/load-balancer/").content.decode()

    def cells(backend: str) -> str:
        row = re.search(rf"<code>{re.escape(backend)}</code>.*?</tr>", page, re.S)
        assert row is not None, backend
        return " ".join(re.sub(r"<[^>]+>", " ", row.group(0)).split())

    assert cells("default.hello-v2") == "default.hello-v2 v2 standby for the next deploy none"
    assert cells("default.other-v1") == "default.other-v1 v1 unrouted other-v1-x 127.1.0.9:8080"
    assert "standby" not in cells("default.hello-v1")


@pytest.mark.django_db
def test_a_broken_record_without_a_server_list_is_no_standby(
    admin_client: Client, fleet: Fleet
) -> None:
    fleet.store.put_backend("default.broken-v1", {"servers": "none", "version": 1})

    page = admin_client.get("/load-balancer/").content.decode()

    row = re.search(r"<code>default\.broken-v1</code>.*?</tr>", page, re.S)
    assert row is not None
    assert "standby" not in row.group(0)
