"""Restarts and crashes of localcluster: objects persist, pods start again, no process is orphaned.

Sources: https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-restarts
(a node restart counts as a container restart), prctl(2) PR_SET_PDEATHSIG.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.servers import start_localcluster

from .conftest import runtime_present
from .runtime_support import (
    api_for,
    deployment,
    http_json,
    processes_with,
    running_and_ready,
    wait_processes,
    waiting_reason,
    watch_until,
)

pytestmark = pytest.mark.skipif(
    not runtime_present(), reason="the localcluster runtime is not in this checkout"
)


def app_pods(core: client.CoreV1Api, app: str) -> Any:
    """A list function over one app's pods in the default namespace."""

    def list_pods(**kwargs: Any) -> Any:
        return core.list_namespaced_pod("default", label_selector=f"app={app}", **kwargs)

    return list_pods


def test_it_keeps_the_objects_and_starts_their_pods_again_after_a_restart(tmp_path: Path) -> None:
    marker = f"restart-{uuid.uuid4().hex[:8]}"
    body = deployment("hello", replicas=2)
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [
        {"name": "MESSAGE", "value": marker}
    ]
    cluster = start_localcluster(tmp_path, nodes=2)
    try:
        api = api_for(cluster.kubeconfig)
        core = client.CoreV1Api(api)
        client.AppsV1Api(api).create_namespaced_deployment("default", body)
        before = watch_until(app_pods(core, "hello"), running_and_ready(2))
        api.close()
        cluster.stop()
        assert wait_processes(marker) == [], "a clean stop stops every pod process"

        cluster = start_localcluster(tmp_path, nodes=2)
        api = api_for(cluster.kubeconfig)
        core = client.CoreV1Api(api)
        after = watch_until(app_pods(core, "hello"), running_and_ready(2))
        assert set(after) == set(before), "the same pods, not replacements"
        for name, pod in after.items():
            assert pod["status"]["podIP"] == before[name]["status"]["podIP"]
            status = pod["status"]["containerStatuses"][0]
            assert status["restartCount"] == 1
            assert status["lastState"]["terminated"]["reason"] == "Unknown"
            assert http_json(pod["status"]["podIP"])[1]["message"] == marker
        api.close()
    finally:
        cluster.stop()
    assert wait_processes(marker) == []


def test_it_leaves_no_orphans_when_killed_and_recovers_its_pods(tmp_path: Path) -> None:
    marker = f"orphan-{uuid.uuid4().hex[:8]}"
    catalog = tmp_path / "images.json"
    # A user image whose process forks a grandchild: PR_SET_PDEATHSIG alone would miss it.
    catalog.write_text(
        json.dumps({"example.com/forker:*": {"command": ["sh", "-c", "sleep 300 & sleep 300"]}})
    )
    cluster = start_localcluster(tmp_path / "lc", nodes=1, images=catalog)
    try:
        api = api_for(cluster.kubeconfig)
        core = client.CoreV1Api(api)
        pod = {
            "metadata": {"name": "forker", "labels": {"app": "forker"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "example.com/forker:1",
                        "env": [{"name": "MARK", "value": marker}],
                    },
                    {
                        "name": "web",
                        "image": "demo/hello:1",
                        "env": [{"name": "MARK", "value": marker}],
                    },
                ]
            },
        }
        core.create_namespaced_pod("default", pod)
        core.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": "unknown", "labels": {"app": "unknown"}},
                "spec": {"containers": [{"name": "app", "image": "example.com/other:1"}]},
            },
        )
        watch_until(app_pods(core, "forker"), running_and_ready(1))
        assert len(wait_processes(marker, at_most=4)) == 4  # sh, two sleeps, the web server
        watch_until(
            app_pods(core, "unknown"),
            lambda ps: waiting_reason(ps.get("unknown", {})) == "ImagePullBackOff",
        )
        api.close()

        cluster.kill()
        assert wait_processes(marker, timeout=10) == [], (
            "SIGKILL of localcluster orphaned pod processes"
        )

        cluster = start_localcluster(tmp_path / "lc", nodes=1, images=catalog)
        api = api_for(cluster.kubeconfig)
        # From the first answer on, the lost runs are counted: no stale Ready from before.
        first = client.CoreV1Api(api).read_namespaced_pod("forker", "default")
        assert [s.restart_count for s in first.status.container_statuses] == [1, 1]
        pods = watch_until(app_pods(client.CoreV1Api(api), "forker"), running_and_ready(1))
        statuses = pods["forker"]["status"]["containerStatuses"]
        assert [s["name"] for s in statuses] == ["app", "web"]
        assert [s["restartCount"] for s in statuses] == [1, 1], statuses
        api.close()
    finally:
        cluster.stop()
    assert wait_processes(marker) == []
    assert processes_with(str(tmp_path)) == []
