"""The store's indexes and watch filing: lookups narrow scans and never change an answer.

Every query here is checked against a full scan of the same objects (``labels_match`` /
``fields_match`` over everything stored), after the labels, owners and nodes have moved.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from localcluster.records import Entry
from localcluster.resources import lookup
from localcluster.selectors import compile_query
from localcluster.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "state")
    s.load()
    return s


def cm(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    """A ConfigMap body."""
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}}


def names(entries: list[Entry]) -> list[str]:
    """(namespace/name) of entries, in their order."""
    return [
        f"{e.obj['metadata'].get('namespace', '')}/{e.obj['metadata']['name']}" for e in entries
    ]


def scanned(
    store: Store, resource: str, namespace: str | None, labels: str, fields: str
) -> list[str]:
    """What a full scan of every stored object answers, in key order."""
    res = lookup(resource)
    query = compile_query(res, namespace, labels, fields)
    objects = store.objects[res.key]
    return names([objects[k] for k in sorted(objects) if query.match(objects[k].obj)])


async def test_label_lookups_follow_labels_that_change_and_objects_that_go(store: Store) -> None:
    await store.create("namespaces", None, {"metadata": {"name": "other"}})
    for i in range(6):
        await store.create("configmaps", "default", cm(f"c{i}", app=f"a{i % 3}", tier="web"))
        await store.create("configmaps", "other", cm(f"c{i}", "other", app=f"a{i % 2}"))

    def relabel(obj: dict[str, Any]) -> None:
        obj["metadata"]["labels"] = {"app": "a9", "tier": "db"}

    await store.mutate("configmaps", "default", "c0", relabel)
    await store.delete("configmaps", "default", "c3")
    await store.delete("configmaps", "other", "c1")

    for namespace in (None, "default", "other"):
        for labels in (
            "app=a0",
            "app in (a0,a1)",
            "app=a9,tier=db",
            "tier=web",
            "app!=a1",
            "",
            "!tier",
        ):
            got = names(store.select("configmaps", namespace, labels or None))
            assert got == scanned(store, "configmaps", namespace, labels, ""), (namespace, labels)
    assert names(store.select("configmaps", "default", "app=a0")) == []


async def test_pods_by_node_follow_binding(store: Store) -> None:
    for i in range(4):
        await store.create(
            "pods",
            "default",
            {"metadata": {"name": f"p{i}"}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
        )

    def bind(obj: dict[str, Any]) -> None:
        obj["spec"]["nodeName"] = "n1"

    await store.mutate("pods", "default", "p1", bind)
    await store.mutate("pods", "default", "p3", bind)

    assert names(store.select("pods", None, None, "spec.nodeName=n1")) == [
        "default/p1",
        "default/p3",
    ]
    assert names(store.select("pods", None, None, "spec.nodeName=")) == scanned(
        store, "pods", None, "", "spec.nodeName="
    )
    assert names(store.select("pods", None, None, "spec.nodeName!=n1")) == [
        "default/p0",
        "default/p2",
    ]


async def test_controlled_objects_orphans_and_selecting_owners(store: Store) -> None:
    owner = await store.create("configmaps", "default", cm("owner"))
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    for name in ("b", "a"):
        body = cm(name)
        body["metadata"]["ownerReferences"] = [ref]
        await store.create("configmaps", "default", body)
    await store.create("configmaps", "default", cm("loose"))
    rs = {
        "metadata": {"name": "rs", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web", "tier": "front"}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "front"}},
                "spec": {"containers": [{"name": "c", "image": "x"}]},
            },
        },
    }
    await store.create("replicasets.apps", "default", rs)

    assert names(store.controlled_by("configmaps", owner["metadata"]["uid"])) == [
        "default/a",
        "default/b",
    ]
    assert "default/loose" in names(store.orphans("configmaps", "default"))
    assert "default/a" not in names(store.orphans("configmaps", "default"))
    wanted = {"app": "web", "tier": "front", "extra": "1"}
    assert names(store.selecting("replicasets.apps", "default", wanted)) == ["default/rs"]
    assert names(store.selecting("replicasets.apps", "default", {"app": "api"})) == []
    assert names(store.selecting("replicasets.apps", "other", wanted)) == []


async def test_a_watch_filed_by_label_sees_objects_move_in_and_out_of_its_selector(
    store: Store,
) -> None:
    seen: list[tuple[str, str]] = []
    ready = asyncio.Event()

    async def follow() -> None:
        stream = store.watch(
            "configmaps", "default", label_selector="app=web", resource_version="0"
        )
        ready.set()
        async for etype, obj in stream:
            seen.append((etype, obj["metadata"]["name"]))
            if len(seen) == 4:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0)
    await ready.wait()

    def label(app: str) -> Any:
        def apply(obj: dict[str, Any]) -> None:
            obj["metadata"]["labels"] = {"app": app}

        return apply

    await store.create("configmaps", "default", cm("x", app="api"))
    await store.mutate("configmaps", "default", "x", label("web"))
    await store.mutate("configmaps", "default", "x", label("web2"))
    await store.create("configmaps", "default", cm("y", app="web"))
    await store.delete("configmaps", "default", "y")
    await asyncio.wait_for(task, 5)

    assert seen == [("ADDED", "x"), ("DELETED", "x"), ("ADDED", "y"), ("DELETED", "y")]
    assert len(store.watchers["configmaps"]) == 0


async def test_a_watch_from_a_resource_version_replays_only_what_came_after(store: Store) -> None:
    await store.create("namespaces", None, {"metadata": {"name": "other"}})
    await store.create("configmaps", "default", cm("leaving", app="web"))
    first = await store.create("configmaps", "default", cm("a", app="web"))
    for i in range(50):
        await store.create("configmaps", "default", cm(f"n{i}", app="other"))
        await store.create("configmaps", "other", cm(f"o{i}", "other", app="web"))
    await store.create("configmaps", "default", cm("b", app="web"))

    def leave(obj: dict[str, Any]) -> None:
        obj["metadata"]["labels"] = {"app": "gone"}

    await store.mutate("configmaps", "default", "leaving", leave)

    stream = store.watch(
        "configmaps",
        "default",
        label_selector="app=web",
        resource_version=first["metadata"]["resourceVersion"],
        timeout_seconds=0.2,
    )
    assert [(t, o["metadata"]["name"]) async for t, o in stream] == [
        ("ADDED", "b"),
        ("DELETED", "leaving"),
    ]
