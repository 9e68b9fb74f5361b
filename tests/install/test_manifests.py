"""The install manifests: every rendered object matches the Kubernetes 1.37 schemas, and the
pods run Greenlight's real commands as a non-root user on a read-only root filesystem."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from launcher.stack import WORKER_THREADS

from .manifests import (
    BASE,
    EXAMPLE,
    K8S_VERSION,
    REPO,
    Manifest,
    containers,
    kustomize,
    named,
    workloads,
)

GREENLIGHT_PODS = {"greenlight-web", "greenlight-worker", "greenlight-scheduler", "greenlight-lb"}


@pytest.fixture(scope="module")
def base() -> list[Manifest]:
    """What `kubectl kustomize deploy/base` renders."""
    return kustomize(BASE)


@pytest.fixture(scope="module")
def example() -> list[Manifest]:
    """What `kubectl kustomize deploy/overlays/example` renders."""
    return kustomize(EXAMPLE)


def _invalid(objects: list[Manifest]) -> list[str]:
    problems = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}")
    return problems


@pytest.mark.parametrize("layout", ["base", "example"])
def test_every_rendered_object_matches_the_kubernetes_schemas(
    layout: str, request: pytest.FixtureRequest
) -> None:
    objects = request.getfixturevalue(layout)
    assert len(objects) >= 12
    assert _invalid(objects) == []


def test_the_schema_check_refuses_a_misspelt_field_and_a_wrong_type(
    base: list[Manifest],
) -> None:
    web = copy.deepcopy(named(base, "Deployment", "greenlight-web"))
    web["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilsystem"] = (
        True
    )
    lb = copy.deepcopy(named(base, "Deployment", "greenlight-lb"))
    lb["spec"]["replicas"] = "two"
    problems = _invalid([web, lb])
    assert len(problems) == 2
    assert "readOnlyRootFilsystem" in problems[0]
    assert "'two' is not of type 'integer'" in problems[1]


def test_the_secret_template_matches_the_schema_and_holds_what_the_pods_read() -> None:
    template = yaml.safe_load((BASE / "secret.template.yaml").read_text())
    assert _invalid([template]) == []
    assert set(template["stringData"]) == {"SECRET_KEY", "DATABASE_URL", "GREENLIGHT_REDIS_URL"}


def test_the_base_holds_every_process_and_leaves_the_servers_outside(
    base: list[Manifest],
) -> None:
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in base}
    assert {name for kind, name in kinds if kind == "Deployment"} == GREENLIGHT_PODS
    assert {("Service", "greenlight-web"), ("Service", "greenlight-lb")} <= kinds
    assert ("ServiceAccount", "greenlight") in kinds
    assert {"ClusterRole", "ClusterRoleBinding", "RoleBinding"} <= {kind for kind, _ in kinds}
    # PostgreSQL, Redis and etcd are external: the settings name them.
    assert not any(kind == "Secret" for kind, _ in kinds)
    settings = named(base, "ConfigMap", "greenlight-settings")["data"]
    assert settings["GREENLIGHT_ETCD_ENDPOINT"] == "etcd.example.com:2379"
    assert named(base, "Service", "greenlight-lb")["spec"]["type"] == "LoadBalancer"
    budgets = {obj["metadata"]["name"] for obj in base if obj["kind"] == "PodDisruptionBudget"}
    # One scheduler only (Recreate): a budget would block every drain of its node.
    assert budgets == GREENLIGHT_PODS - {"greenlight-scheduler"}
    for service in (obj for obj in base if obj["kind"] == "Service"):
        selector = service["spec"]["selector"]
        matching = [
            d
            for d in workloads(base)
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, service["metadata"]["name"]


def test_the_example_adds_single_replica_servers_and_the_secret(example: list[Manifest]) -> None:
    for name in ("postgres", "redis", "etcd"):
        assert named(example, "Deployment", name)["spec"]["replicas"] == 1
        assert named(example, "Service", name)
    secret = named(example, "Secret", "greenlight")
    assert set(secret["data"]) == {"SECRET_KEY", "DATABASE_URL", "GREENLIGHT_REDIS_URL"}
    assert (
        named(example, "ConfigMap", "greenlight-settings")["data"]["GREENLIGHT_ETCD_ENDPOINT"]
        == "etcd:2379"
    )
    # Every reference to a generated object follows its hashed name.
    names = {obj["metadata"]["name"] for obj in example}
    for deployment in workloads(example):
        for container in containers(deployment["spec"]["template"]["spec"]):
            for source in container.get("envFrom", []):
                ref = source.get("configMapRef") or source.get("secretRef")
                assert ref["name"] in names
    assert {obj["metadata"].get("namespace") for obj in example if obj["kind"] != "Namespace"} - {
        None
    } == {"greenlight", "default"}


@pytest.mark.parametrize("layout", ["base", "example"])
def test_every_pod_runs_as_non_root_on_a_read_only_root_filesystem(
    layout: str, request: pytest.FixtureRequest
) -> None:
    for deployment in workloads(request.getfixturevalue(layout)):
        spec = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] > 0, name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        writable = {volume["name"] for volume in spec.get("volumes", []) if "emptyDir" in volume}
        for container in containers(spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert container["resources"]["requests"].keys() == {"cpu", "memory"}, name
            assert {m["name"] for m in container.get("volumeMounts", [])} <= writable, name


def test_greenlight_pods_have_probes_and_use_its_image_and_account(base: list[Manifest]) -> None:
    for deployment in workloads(base):
        spec = deployment["spec"]["template"]["spec"]
        for container in spec["containers"]:
            assert container["image"] == "greenlight:latest"
            assert "livenessProbe" in container or "readinessProbe" in container, container["name"]
        if deployment["metadata"]["name"] == "greenlight-scheduler":
            assert spec["automountServiceAccountToken"] is False
        else:
            assert spec["serviceAccountName"] == "greenlight"


def _command(base: list[Manifest], deployment: str, container: str) -> list[str]:
    spec = named(base, "Deployment", deployment)["spec"]["template"]["spec"]
    return next(c for c in containers(spec) if c["name"] == container)["command"]


def test_the_pods_run_the_commands_of_the_compose_file_and_the_stack(base: list[Manifest]) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert _command(base, "greenlight-web", "web") == compose["web"]["command"]
    assert _command(base, "greenlight-web", "migrate") == compose["migrate"]["command"]
    assert _command(base, "greenlight-worker", "worker") == compose["worker"]["command"]
    assert _command(base, "greenlight-lb", "proxysync") == compose["proxysync-0"]["command"]
    scheduler = _command(base, "greenlight-scheduler", "scheduler")
    assert scheduler[:-1] == compose["scheduler"]["command"][:-1]
    # HAProxy as launcher.stack starts it: master-worker, a master socket, the config.
    haproxy = shlex.split(_command(base, "greenlight-lb", "haproxy")[-1].split(";")[-1])
    assert haproxy == [
        "exec",
        "haproxy",
        "-W",
        "-db",
        "-S",
        "/run/haproxy/master.sock,mode,600",
        "-f",
        "/run/haproxy/haproxy.cfg",
    ]
    # The worker's pool comes from the settings, however it is started.
    assert str(WORKER_THREADS) not in _command(base, "greenlight-worker", "worker")


def test_the_load_balancer_shares_its_files_between_proxysync_and_haproxy(
    base: list[Manifest],
) -> None:
    spec = named(base, "Deployment", "greenlight-lb")["spec"]["template"]["spec"]
    proxysync, haproxy = spec["containers"]
    shared = {m["name"]: m["mountPath"] for m in proxysync["volumeMounts"]}
    assert {m["name"]: m["mountPath"] for m in haproxy["volumeMounts"]}.items() <= shared.items()
    folder = Path(shared["haproxy"])
    env = {v["name"]: v.get("value") for v in proxysync["env"]}
    assert Path(env["GREENLIGHT_HAPROXY_CONFIG"]).parent == folder
    assert Path(env["GREENLIGHT_HAPROXY_MASTER_SOCKET"]).parent == folder
    assert env["GREENLIGHT_HAPROXY_BIND"] == "0.0.0.0"
    assert env["GREENLIGHT_LB_ADDRESS"] == f"http://$(POD_IP):{env['GREENLIGHT_LB_PORT']}"
    ports = {p["name"]: p["containerPort"] for p in haproxy["ports"]}
    assert ports == {
        "http": int(env["GREENLIGHT_LB_PORT"]),
        "stats": int(env["GREENLIGHT_HAPROXY_STATS_PORT"]),
    }


def test_the_kustomizations_use_only_what_kubectl_1_20_reads() -> None:
    # kustomize v2.0.3 (kubectl 1.14 to 1.20) reads files only from `resources` and knows
    # neither `patches` nor `labels`; a directory is a base.
    known = {
        "apiVersion",
        "kind",
        "resources",
        "bases",
        "images",
        "configMapGenerator",
        "secretGenerator",
        "patchesStrategicMerge",
        "patchesJson6902",
        "namespace",
    }
    for folder in (BASE, EXAMPLE):
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        assert set(kustomization) <= known, folder
        for resource in kustomization.get("resources", []):
            assert (folder / resource).is_file(), f"{folder}: {resource} is not a file"
        for generator in kustomization.get("configMapGenerator", []) + kustomization.get(
            "secretGenerator", []
        ):
            assert generator["namespace"] == "greenlight"
            assert all(re.fullmatch(r"[A-Z_]+=.*", item) for item in generator["literals"])


@pytest.mark.parametrize("layout", ["base", "example"])
def test_rbac_binds_the_service_account_in_every_namespace_apps_may_use(
    layout: str, request: pytest.FixtureRequest
) -> None:
    objects = request.getfixturevalue(layout)
    account = named(objects, "ServiceAccount", "greenlight")["metadata"]
    bindings = [obj for obj in objects if obj["kind"] in ("RoleBinding", "ClusterRoleBinding")]
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account["name"], "namespace": account["namespace"]}
        ], binding["metadata"]["name"]
    settings = named(objects, "ConfigMap", "greenlight-settings")["data"]
    bound = {b["metadata"]["namespace"] for b in bindings if b["kind"] == "RoleBinding"}
    assert set(settings["GREENLIGHT_NAMESPACES"].split(",")) <= bound
    assert settings["GREENLIGHT_NAMESPACE"] in bound
