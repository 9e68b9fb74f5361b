"""Which servers a live backend should have as its pods come and go."""

from __future__ import annotations

import time
import uuid

from deployer.endpointsync import EndpointSync, desired_servers
from deployer.etcdstore import EtcdStore
from deployer.pods import PodInfo
from tests.servers import Server


def pod(
    name: str, *, ready: bool = True, phase: str = "Running", deleting: bool = False
) -> PodInfo:
    return PodInfo(
        name=name,
        app="hello",
        version=1,
        ip=f"127.0.0.{len(name)}",
        node="n",
        phase=phase,
        ready=ready,
        started=True,
        restarts=0,
        deleting=deleting,
    )


def server(name: str) -> dict[str, object]:
    return {"name": name, "address": f"127.0.0.{len(name)}", "port": 8080}


def test_it_adds_a_replacement_pod_once_it_is_ready_and_drops_the_deleted_one() -> None:
    current = [server("a"), server("bb")]
    pods = [pod("a"), pod("bb", deleting=True), pod("ccc")]
    assert desired_servers(current, pods, 8080) == [server("a"), server("ccc")]


def test_it_keeps_a_listed_pod_that_is_not_ready_yet() -> None:
    assert desired_servers([server("a")], [pod("a", ready=False)], 8080) == [server("a")]


def test_it_does_not_add_a_pod_that_is_not_ready() -> None:
    assert desired_servers([server("a")], [pod("a"), pod("bb", ready=False)], 8080) == [server("a")]


def test_it_never_empties_a_backend() -> None:
    current = [server("a")]
    assert desired_servers(current, [pod("a", phase="Failed")], 8080) == current


def test_one_endpoint_sync_of_the_fleet_leads_and_another_takes_over_when_it_stops(
    etcd: Server,
) -> None:
    prefix = f"/leader-{uuid.uuid4().hex[:8]}"
    with EtcdStore(str(etcd.extra["endpoint"]), prefix) as store:
        first = EndpointSync(store, lease_seconds=2, holder="lb-0:1")
        second = EndpointSync(store, lease_seconds=2, holder="lb-1:2")
        assert first.lead_once()
        assert not second.lead_once()
        assert first.lead_once()  # a refresh keeps it
        record = {"servers": [server("a")], "version": 1}
        revision = store.put_backend("default.hello-v1", record)

        # Only the holder of the leader key may write.
        assert not store.put_backend_if_unchanged(
            "default.hello-v1", record, revision, holding=(second.leader_key, second.holder)
        )
        assert store.put_backend_if_unchanged(
            "default.hello-v1", record, revision, holding=(first.leader_key, first.holder)
        )

        # The leader stops refreshing (its process died): its lease ends, the other claims.
        started = time.monotonic()
        while not second.lead_once():
            assert time.monotonic() - started < 6, "the leadership was never handed over"
            time.sleep(0.2)
        assert not first.lead_once()
        assert first.leading is False
