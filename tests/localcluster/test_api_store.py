"""The in-process Store API the runtime uses (no HTTP): contract and edge cases.

Sources: the Store docstrings (localcluster/store.py) and the API semantics they
mirror: https://kubernetes.io/docs/reference/using-api/api-concepts/ (watch from a
resourceVersion, 410 Expired), staging/src/k8s.io/apiserver/pkg/registry/generic/registry/store.go.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from localcluster.errors import AlreadyExists, Conflict, Expired, Invalid, NotFound
from localcluster.store import Store


def cm(name: str, **labels: str) -> dict[str, object]:
    """A ConfigMap body."""
    return {"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "state")
    s.load()
    return s


async def test_it_creates_gets_lists_and_refuses_duplicates(store: Store) -> None:
    created = await store.create("configmaps", "default", cm("a", app="x"))
    assert created["kind"] == "ConfigMap" and created["metadata"]["uid"]
    assert (await store.get("configmaps", "default", "a"))["data"] == {"k": "v"}
    items, rv = await store.list("configmaps", "default", label_selector="app=x")
    assert [i["metadata"]["name"] for i in items] == ["a"] and int(rv) >= int(
        created["metadata"]["resourceVersion"]
    )
    with pytest.raises(AlreadyExists):
        await store.create("configmaps", "default", cm("a"))
    with pytest.raises(NotFound):
        await store.get("configmaps", "default", "b")


async def test_update_conflicts_on_a_stale_resource_version_and_mutate_does_not(
    store: Store,
) -> None:
    first = await store.create("configmaps", "default", cm("a"))
    await store.update("configmaps", "default", "a", {**first, "data": {"k": "2"}})
    with pytest.raises(Conflict):
        await store.update("configmaps", "default", "a", {**first, "data": {"k": "3"}})

    def bump(obj: dict[str, object]) -> None:
        obj["data"] = {"k": "4"}

    assert (await store.mutate("configmaps", "default", "a", bump))["data"] == {"k": "4"}


async def test_validation_errors_are_invalid(store: Store) -> None:
    with pytest.raises(Invalid) as err:
        await store.create(
            "pods", "default", {"metadata": {"name": "p"}, "spec": {"containers": []}}
        )
    assert err.value.status()["details"]["causes"][0]["field"] == "spec.containers"


async def test_watch_replays_from_a_resource_version_and_then_follows(store: Store) -> None:
    _, rv = await store.list("configmaps", "default")
    await store.create("configmaps", "default", cm("a"))
    events = store.watch("configmaps", "default", resource_version=rv)
    assert (await anext(events))[0] == "ADDED"
    await store.patch("configmaps", "default", "a", {"data": {"k": "2"}})
    etype, obj = await asyncio.wait_for(anext(events), 5)
    assert (etype, obj["data"]) == ("MODIFIED", {"k": "2"})
    await store.delete("configmaps", "default", "a")
    assert (await asyncio.wait_for(anext(events), 5))[0] == "DELETED"
    await events.aclose()


async def test_watch_from_a_version_older_than_the_history_is_expired(tmp_path: Path) -> None:
    store = Store(None, history_size=3)
    store.load()
    _, rv = await store.list("configmaps", "default")
    for i in range(5):
        await store.create("configmaps", "default", cm(f"c{i}"))
    with pytest.raises(Expired):
        await anext(store.watch("configmaps", "default", resource_version=rv))


async def test_pod_deletion_is_graceful_when_bound_and_final_with_grace_zero(store: Store) -> None:
    pod = {
        "metadata": {"name": "p"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
    }
    await store.create("pods", "default", pod)
    marked = await store.delete("pods", "default", "p")
    assert marked["metadata"]["deletionGracePeriodSeconds"] == 30
    assert (await store.get("pods", "default", "p"))["metadata"]["deletionTimestamp"]
    await store.delete("pods", "default", "p", grace_period_seconds=0)
    with pytest.raises(NotFound):
        await store.get("pods", "default", "p")


async def test_state_and_counter_survive_a_reload(tmp_path: Path) -> None:
    first = Store(tmp_path / "s")
    first.load()
    created = await first.create("configmaps", "default", cm("kept"))
    first.close()
    second = Store(tmp_path / "s")
    second.load()
    assert (await second.get("configmaps", "default", "kept"))["metadata"]["uid"] == created[
        "metadata"
    ]["uid"]
    assert second.rv >= int(created["metadata"]["resourceVersion"])
