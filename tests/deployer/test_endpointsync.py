"""Which servers a live backend should have as its pods come and go."""

from __future__ import annotations

from deployer.endpointsync import desired_servers
from deployer.pods import PodInfo


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
