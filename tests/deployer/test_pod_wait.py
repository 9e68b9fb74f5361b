"""Waiting for a version's pods on a real localcluster survives a watch that fails on the way."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer import k8s
from deployer.cluster import KubeCluster, version_labels
from deployer.errors import Transient
from deployer.pods import PodStartWait

BUSY = Transient("Kubernetes API unreachable: Read timed out.")


@pytest.fixture
def namespace(kubeconfig: Path, settings: Any) -> Iterator[str]:
    """A namespace of this test's on the session's localcluster, as the deployer reaches it."""
    settings.KUBECONFIG = kubeconfig
    settings.KUBE_IN_CLUSTER = False
    settings.KUBE_CONTEXT = None
    k8s.reset()
    name = f"wait-{uuid.uuid4().hex[:8]}"
    k8s.core_v1().create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        k8s.core_v1().delete_namespace(name)
        k8s.reset()


def start_pod(namespace: str, app: str) -> None:
    """One pod of ``app`` v1, as a version's ReplicaSet would start it."""
    body = {
        "metadata": {"name": f"{app}-v1-0", "labels": version_labels(app, 1)},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": app, "image": "demo/hello:1"}],
        },
    }
    k8s.core_v1().create_namespaced_pod(namespace, body)


def failing_first(
    monkeypatch: pytest.MonkeyPatch, failures: int, first: Callable[[], None] = lambda: None
) -> list[int]:
    """Make the first ``failures`` pod watches fail as a busy API server's do; count calls.

    ``first`` runs when the first watch starts (after the wait listed the pods).
    """
    real = KubeCluster._watch
    calls: list[int] = []

    def watch(self: KubeCluster, *args: Any) -> Iterator[dict[str, Any]]:
        calls.append(1)
        if len(calls) == 1:
            first()
        if len(calls) <= failures:
            raise BUSY
        yield from real(self, *args)

    monkeypatch.setattr(KubeCluster, "_watch", watch)
    return calls


def test_a_failed_watch_is_watched_again_until_the_pods_run(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = failing_first(monkeypatch, 2, first=lambda: start_pod(namespace, "shop"))

    pods = KubeCluster().wait_pods_started(
        PodStartWait(
            namespace, "shop", 1, 1, 60, on_change=lambda pod: None, cancelled=lambda: False
        )
    )

    assert [pod.name for pod in pods] == ["shop-v1-0"]
    assert len(calls) > 2


def test_the_deadline_names_the_error_when_the_api_never_answers_again(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing_first(monkeypatch, 1000)

    with pytest.raises(Transient, match="Read timed out"):
        KubeCluster().wait_pods_started(
            PodStartWait(
                namespace, "none", 1, 1, 2, on_change=lambda pod: None, cancelled=lambda: False
            )
        )
