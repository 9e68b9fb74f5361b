"""State survives a restart, resourceVersion counter included.

Source: https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions
(resource versions only increase; clients may compare them within a resource),
and the issue's contract for --state-dir.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from kubernetes import client, config

from tests.servers import LocalCluster, start_localcluster

from .conftest import api_only, validate


def core_for(lc: LocalCluster) -> client.CoreV1Api:
    """A CoreV1Api for one cluster."""
    cfg = client.Configuration()
    config.load_kube_config(str(lc.kubeconfig), client_configuration=cfg)
    return client.CoreV1Api(client.ApiClient(cfg))


def test_objects_and_the_resource_version_survive_a_restart(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    if cluster.process is None:
        pytest.skip("restarts a localcluster of its own")
    first = start_localcluster(tmp_path, nodes=1, runtime=not api_only())
    try:
        core = core_for(first)
        created = core.create_namespaced_config_map(
            "default", {"metadata": {"name": "kept"}, "data": {"a": "1"}}
        )
        core.patch_namespaced_config_map("kept", "default", {"data": {"a": "2"}})
        before = int(core.list_namespaced_config_map("default").metadata.resource_version)
    finally:
        first.stop()
    assert first.process is not None and first.process.returncode == 0
    second = start_localcluster(tmp_path, port=first.port, nodes=1, runtime=not api_only())
    try:
        core = core_for(second)
        kept = core.read_namespaced_config_map("kept", "default")
        validate(kept)
        assert kept.data == {"a": "2"}
        assert kept.metadata.uid == created.metadata.uid
        fresh = core.create_namespaced_config_map("default", {"metadata": {"name": "fresh"}})
        assert int(fresh.metadata.resource_version) > before
    finally:
        second.stop()
    assert second.process is not None and second.process.returncode == 0


def test_it_exits_cleanly_on_sigint(cluster: LocalCluster, tmp_path: Path) -> None:
    if cluster.process is None:
        pytest.skip("starts a localcluster of its own")
    import os
    import signal

    lc = start_localcluster(tmp_path, nodes=1, runtime=not api_only())
    assert lc.process is not None
    os.killpg(lc.process.pid, signal.SIGINT)
    assert lc.process.wait(15) == 0
