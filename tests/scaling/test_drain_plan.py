"""Which pods a drain evicts, skips or refuses, decided without a cluster."""

from __future__ import annotations

from deployer.pods import PodInfo
from scaling.drain import evictable_count, plan_drain


def pod(name: str, **fields: object) -> PodInfo:
    values: dict[str, object] = {"namespace": "default", "name": name, "uid": name, "node": "n1"}
    values.update(phase="Running", **fields)
    return PodInfo(**values)  # type: ignore[arg-type]


def test_it_skips_mirror_and_daemonset_pods_and_refuses_unmanaged_ones() -> None:
    pods = [
        pod("web", owner_kind="ReplicaSet", owner_name="web-1"),
        pod("agent", owner_kind="DaemonSet", owner_name="agent"),
        pod("etcd-n1", mirror=True),
        pod("bare"),
        pod("leaving", owner_kind="ReplicaSet", deleting=True),
    ]
    plan = plan_drain(pods)
    assert [p.name for p in plan.evict] == ["web"]
    assert [(p.name, reason.split(" ")[0]) for p, reason in plan.skip] == [
        ("agent", "DaemonSet"),
        ("etcd-n1", "mirror"),
    ]
    assert [p.name for p in plan.refuse] == ["bare"]
    assert [p.name for p in plan.wait_for] == ["leaving"]


def test_force_evicts_unmanaged_pods_too() -> None:
    plan = plan_drain([pod("bare")], force=True)
    assert [p.name for p in plan.evict] == ["bare"] and plan.refuse == []


def test_emptiness_counts_only_pods_that_have_to_move() -> None:
    pods = [pod("web", owner_kind="ReplicaSet"), pod("agent", owner_kind="DaemonSet"), pod("bare")]
    assert evictable_count(pods) == 2
