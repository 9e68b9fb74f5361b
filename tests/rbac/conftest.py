"""A localcluster that enforces RBAC, with Greenlight's token bound to deploy/base/rbac.yaml.

The cluster runs with ``--authorization-mode=RBAC`` and a ``--token-auth-file`` holding one
token for the service account ``greenlight/greenlight`` (user
``system:serviceaccount:greenlight:greenlight``, as kube-apiserver names a service account),
so rbac.yaml's subjects apply unchanged. ``kubeconfig`` is Greenlight's (that token); the
tests' own setup and cleanup use the admin kubeconfig (``system:masters``). The deployer's
stack fixtures are the ones of tests/deployer, here on this cluster.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from deployer import k8s
from tests.deployer.conftest import deploy_stack, live  # noqa: F401 (fixtures for this folder)
from tests.scaling.conftest import CATALOG
from tests.scaling.kubehelp import Cluster
from tests.servers import LocalCluster, localcluster_server

REPO = Path(__file__).resolve().parents[2]
RBAC_FILE = REPO / "deploy" / "base" / "rbac.yaml"
SA_NAMESPACE = "greenlight"
SA_NAME = "greenlight"
GREENLIGHT_USER = f"system:serviceaccount:{SA_NAMESPACE}:{SA_NAME}"
RBAC_KINDS = {
    "ClusterRole": "cluster_role",
    "ClusterRoleBinding": "cluster_role_binding",
    "Role": "namespaced_role",
    "RoleBinding": "namespaced_role_binding",
}


def rbac_objects(path: Path = RBAC_FILE) -> list[dict[str, Any]]:
    """The Roles, ClusterRoles and bindings of ``path``, each checked to name Greenlight's account."""
    objects = [o for o in yaml.safe_load_all(path.read_text()) if o]
    for obj in objects:
        assert obj["kind"] in RBAC_KINDS, f"{path} holds a {obj['kind']}: only RBAC objects"
        for subject in obj.get("subjects") or []:
            assert (subject["kind"], subject["name"], subject.get("namespace")) == (
                "ServiceAccount",
                SA_NAME,
                SA_NAMESPACE,
            ), f"{obj['metadata']['name']} binds {subject}, not Greenlight's service account"
    return objects


@dataclass
class EnforcingCluster:
    """The RBAC-enforcing localcluster: admin kubeconfig, Greenlight's, and what is bound now."""

    server: LocalCluster
    greenlight: Path

    def admin(self) -> client.RbacAuthorizationV1Api:
        """The RBAC API as the cluster admin."""
        cfg = client.Configuration()
        config.load_kube_config(str(self.server.kubeconfig), client_configuration=cfg)
        return client.RbacAuthorizationV1Api(client.ApiClient(cfg))

    def bind(self, objects: list[dict[str, Any]]) -> None:
        """Make ``objects`` (rbac.yaml's, maybe changed) exactly what is bound: replace or create each."""
        api = self.admin()
        try:
            for obj in objects:
                suffix = RBAC_KINDS[obj["kind"]]
                meta = obj["metadata"]
                args = [meta["namespace"]] if suffix.startswith("namespaced") else []
                try:
                    current = getattr(api, f"read_{suffix}")(meta["name"], *args)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    getattr(api, f"create_{suffix}")(*args, obj)
                    continue
                body = json.loads(json.dumps(obj))
                body["metadata"]["resourceVersion"] = current.metadata.resource_version
                getattr(api, f"replace_{suffix}")(meta["name"], *args, body)
        finally:
            api.api_client.close()


@pytest.fixture(scope="session")
def enforcing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnforcingCluster]:
    """A 3-node localcluster enforcing RBAC, Greenlight's account bound to rbac.yaml."""
    workdir = tmp_path_factory.mktemp("rbac-localcluster")
    token = secrets.token_urlsafe(24)
    tokens = workdir / "tokens.csv"
    groups = f"system:serviceaccounts,system:serviceaccounts:{SA_NAMESPACE}"
    tokens.write_text(f'{token},{GREENLIGHT_USER},{secrets.token_hex(8)},"{groups}"\n')
    tokens.chmod(0o600)
    catalog = workdir / "images.json"
    catalog.write_text(json.dumps(CATALOG))
    options = ["--authorization-mode", "RBAC", "--token-auth-file", str(tokens)]
    with localcluster_server(workdir, nodes=3, images=catalog, extra_args=options) as server:
        greenlight = workdir / "greenlight.kubeconfig"
        kubeconfig = yaml.safe_load(server.kubeconfig.read_text())
        kubeconfig["users"][0]["user"]["token"] = token
        greenlight.write_text(yaml.safe_dump(kubeconfig))
        greenlight.chmod(0o600)
        enforcing = EnforcingCluster(server, greenlight)
        enforcing.bind(rbac_objects())
        yield enforcing


@pytest.fixture(scope="session")
def localcluster(enforcing: EnforcingCluster) -> LocalCluster:
    """The enforcing cluster (its admin kubeconfig), in place of the session's usual one."""
    return enforcing.server


@pytest.fixture(scope="session")
def kubeconfig(enforcing: EnforcingCluster) -> Path:
    """Greenlight's kubeconfig: the token bound to rbac.yaml and nothing else."""
    return enforcing.greenlight


@pytest.fixture
def cluster(enforcing: EnforcingCluster, settings: Any, db: None) -> Iterator[Cluster]:
    """The scaling tests' helper, making and removing its workloads as the admin, while
    Greenlight's own calls (settings.KUBECONFIG) carry Greenlight's token."""
    settings.KUBE_IN_CLUSTER = False
    settings.KUBE_CONTEXT = None
    settings.KUBECONFIG = enforcing.server.kubeconfig
    k8s.reset()
    helper = Cluster()  # its clients keep the admin's ApiClient
    settings.KUBECONFIG = enforcing.greenlight
    k8s.reset()
    try:
        yield helper
    finally:
        helper.cleanup()
        k8s.reset()
