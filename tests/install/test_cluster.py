"""The install manifests against localcluster, with kubectl: a server-side dry run of the example
overlay, and the README's "Install on a cluster" steps followed as far as they can be here.

localcluster serves the API alone (no kubelets): the pods of the image are not started here
(tests/install/test_image_readonly.py runs them), but every object is stored, defaulted and
checked as kube-apiserver does.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.servers import LocalCluster, localcluster_server

from .manifests import EXAMPLE, KUBECTL, REPO, kustomize

GREENLIGHT_DEPLOYMENTS = {
    "greenlight-web",
    "greenlight-worker",
    "greenlight-scheduler",
    "greenlight-lb",
}


# kubectl reads the schemas for apply (and for its own validation before 1.25) from
# /openapi/v2 until 1.29, where client-side apply takes them from /openapi/v3; localcluster
# serves v3 only.
OLDEST_KUBECTL = (1, 29)


def _kubectl_version() -> tuple[int, int]:
    done = subprocess.run(
        [KUBECTL, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    version = json.loads(done.stdout)["clientVersion"]
    return int(version["major"]), int(version["minor"].rstrip("+"))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A fresh localcluster serving the API; a kubectl too old for it fails, naming itself."""
    version = _kubectl_version()
    if version < OLDEST_KUBECTL:
        pytest.fail(
            f"{KUBECTL} is {version[0]}.{version[1]}: localcluster needs kubectl "
            f"{OLDEST_KUBECTL[0]}.{OLDEST_KUBECTL[1]} or later (set KUBECTL to one), since "
            "it serves no /openapi/v2"
        )
    with localcluster_server(tmp_path / "cluster", nodes=1, runtime=False) as started:
        yield started


@pytest.fixture
def api(cluster: LocalCluster) -> Iterator[client.ApiClient]:
    """An official-client ApiClient for the cluster."""
    configuration = client.Configuration()
    config.load_kube_config(str(cluster.kubeconfig), client_configuration=configuration)
    with client.ApiClient(configuration) as api_client:
        yield api_client


def _kubectl(cluster: LocalCluster, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(cluster.kubeconfig), "--cache-dir", str(cache), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )


def test_the_example_overlay_applies_in_a_server_side_dry_run_and_stores_nothing(
    cluster: LocalCluster, api: client.ApiClient, tmp_path: Path
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    # A dry run creates nothing, the namespace neither: it must exist (README, step 2).
    created = _kubectl(cluster, tmp_path, "create", "namespace", "greenlight")
    assert created.returncode == 0, created.stderr

    applied = _kubectl(cluster, tmp_path, "apply", "-k", str(EXAMPLE), "--dry-run=server")

    assert applied.returncode == 0, applied.stdout + applied.stderr
    lines = applied.stdout.splitlines()
    assert all(line.endswith("(server dry run)") for line in lines), applied.stdout
    reported = {
        re.sub(r"\.[a-z.]+\.k8s\.io|\.apps|\.policy", "", line.split()[0]) for line in lines
    }
    expected = {f"{obj['kind'].lower()}/{obj['metadata']['name']}" for obj in kustomize(EXAMPLE)}
    assert reported == expected
    assert apps.list_namespaced_deployment("greenlight").items == []
    assert core.list_namespaced_service("greenlight").items == []
    assert [s.metadata.name for s in core.list_namespaced_secret("greenlight").items] == []
    names = [role.metadata.name for role in rbac.list_cluster_role().items]
    assert not any(name.startswith("greenlight") for name in names)


def test_a_dry_run_into_a_namespace_that_does_not_exist_fails_as_kube_apiserver_does(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    applied = _kubectl(cluster, tmp_path, "apply", "-k", str(EXAMPLE), "--dry-run=server")
    assert applied.returncode != 0
    assert 'namespaces "greenlight" not found' in applied.stderr


def _install_section() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("\n## Install on a cluster\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else len(readme)]


def _shell_blocks(section: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


# docker has no engine here, and kubectl verbs that need running pods (the image's) or a
# terminal are recorded instead of run; every other command of the README runs as written.
STUBS = r"""
set -euo pipefail
docker() { echo "docker $*" >> "$NOT_FOLLOWED"; }
kubectl() {
  local verb="" skip=""
  for arg in "$@"; do
    if [ -n "$skip" ]; then skip=""; continue; fi
    case "$arg" in
      -n|--namespace) skip=1 ;;
      -*) ;;
      *) verb=$arg; break ;;
    esac
  done
  case "$verb" in
    exec|port-forward|rollout) echo "kubectl $*" >> "$NOT_FOLLOWED"; return 0 ;;
  esac
  command "$KUBECTL" --kubeconfig "$KUBECONFIG_FILE" --cache-dir "$KUBECTL_CACHE" "$@"
}
"""


def test_the_readme_install_steps_work_as_far_as_they_can_be_followed_here(
    cluster: LocalCluster, api: client.ApiClient, tmp_path: Path
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    rbac = client.RbacAuthorizationV1Api(api)
    # The steps run in a copy of the repository's deploy/ (step 3 writes an overlay there).
    workdir = tmp_path / "checkout"
    shutil.copytree(REPO / "deploy", workdir / "deploy")
    not_followed = tmp_path / "not-followed"
    not_followed.touch()
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "KUBECTL": shutil.which(KUBECTL) or KUBECTL,
        "KUBECONFIG_FILE": str(cluster.kubeconfig),
        "KUBECTL_CACHE": str(tmp_path / "cache"),
        "NOT_FOLLOWED": str(not_followed),
    }
    blocks = _shell_blocks(_install_section())
    assert len(blocks) >= 5
    outputs = []
    for block in blocks:
        done = subprocess.run(
            ["bash", "-c", STUBS + block],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, f"this step failed:\n{block}\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
        if "apply -k deploy/overlays/production" in block:
            _check_production_install(core, apps, rbac)
            again = _kubectl_in(workdir, env, "apply", "-k", "deploy/overlays/production")
            # Applying again changes nothing. A budget is "configured" every time, on
            # kube-apiserver too: its selector's patch strategy is "replace", so kubectl's
            # patch always carries it.
            for line in again.splitlines():
                budget = line.startswith("poddisruptionbudget.policy/")
                assert line.endswith(" configured" if budget else " unchanged"), again
        if "get service greenlight-lb" in block:
            assert re.search(r"greenlight-lb\s+LoadBalancer\s", done.stdout), done.stdout

    assert not_followed.read_text().splitlines() == [
        "docker build -t registry.example.com/greenlight:1.0 .",
        "docker push registry.example.com/greenlight:1.0",
        "kubectl -n greenlight rollout status deployment/greenlight-web",
        "kubectl -n greenlight exec -it deployment/greenlight-web -- python manage.py createsuperuser",
        "kubectl -n greenlight port-forward service/greenlight-web 8000:80",
    ]
    # "To try it out": the example's servers join the same namespace.
    deployments = {d.metadata.name for d in apps.list_namespaced_deployment("greenlight").items}
    assert deployments == GREENLIGHT_DEPLOYMENTS | {"postgres", "redis", "etcd"}


def _kubectl_in(workdir: Path, env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [
            env["KUBECTL"],
            "--kubeconfig",
            env["KUBECONFIG_FILE"],
            "--cache-dir",
            env["KUBECTL_CACHE"],
            *args,
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def _check_production_install(
    core: client.CoreV1Api, apps: client.AppsV1Api, rbac: client.RbacAuthorizationV1Api
) -> None:
    """What steps 2 and 3 leave in the cluster: the pods would run the pushed image on the
    Secret of step 2, as the service account rbac.yaml binds."""
    deployments = {d.metadata.name: d for d in apps.list_namespaced_deployment("greenlight").items}
    assert set(deployments) == GREENLIGHT_DEPLOYMENTS
    secret = core.read_namespaced_secret("greenlight", "greenlight")
    assert set(secret.data) == {"SECRET_KEY", "DATABASE_URL", "GREENLIGHT_REDIS_URL"}
    for deployment in deployments.values():
        pod = deployment.spec.template.spec
        for container in (pod.init_containers or []) + pod.containers:
            assert container.image == "registry.example.com/greenlight:1.0"
            if container.name == "haproxy":
                assert container.env_from is None  # no setting, no secret: the files only
                continue
            sources = {(s.secret_ref or s.config_map_ref).name for s in container.env_from}
            assert "greenlight" in sources, deployment.metadata.name
            settings = next(name for name in sources if name.startswith("greenlight-settings-"))
            data = core.read_namespaced_config_map(settings, "greenlight").data
            assert data["GREENLIGHT_ETCD_ENDPOINT"] == "etcd.example.com:2379"
    assert core.read_namespaced_service("greenlight-lb", "greenlight").spec.type == "LoadBalancer"
    account = core.read_namespaced_service_account("greenlight", "greenlight")
    assert account.metadata.name == "greenlight"
    account_subject = [("ServiceAccount", "greenlight", "greenlight")]
    bindings = (
        rbac.list_cluster_role_binding().items + rbac.list_role_binding_for_all_namespaces().items
    )
    ours = [b for b in bindings if b.metadata.name.startswith("greenlight")]
    assert ours
    for binding in ours:
        subjects = [(s.kind, s.name, s.namespace) for s in binding.subjects]
        assert subjects == account_subject, binding.metadata.name
