"""The install manifests as kubectl renders them, and what the tests read from them."""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "base"
EXAMPLE = REPO / "deploy" / "overlays" / "example"
KUBECTL = os.environ.get("KUBECTL", "kubectl")
# The schemas every rendered object must match: the Kubernetes release the pinned client
# (kubernetes 37.x) is generated from.
K8S_VERSION = "1.37.0"

Manifest = dict[str, Any]


def kustomize(path: Path) -> list[Manifest]:
    """Every object ``kubectl kustomize path`` renders; AssertionError with kubectl's output if it fails."""
    proc = subprocess.run(
        [KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def named(objects: list[Manifest], kind: str, name: str) -> Manifest:
    """The object of ``kind`` whose name is ``name`` (generated names: up to their hash suffix)."""
    for obj in objects:
        if obj["kind"] != kind:
            continue
        actual = obj["metadata"]["name"]
        if actual == name or actual.rsplit("-", 1)[0] == name:
            return obj
    raise AssertionError(f"no {kind} {name} among {[o['metadata']['name'] for o in objects]}")


def containers(pod_spec: Manifest) -> Iterator[Manifest]:
    """Every container of a pod spec, init containers first."""
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


def workloads(objects: list[Manifest]) -> list[Manifest]:
    """The Deployments."""
    return [obj for obj in objects if obj["kind"] == "Deployment"]


def environment(
    objects: list[Manifest], container: Manifest, fields: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment ``container`` starts with: its envFrom ConfigMaps and Secrets, then env.

    A fieldRef takes its value from ``fields`` (``{"status.podIP": ...}``), and ``$(NAME)``
    references are expanded, as the kubelet does.
    """
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            secret = named(objects, "Secret", source["secretRef"]["name"])
            env.update({k: base64.b64decode(v).decode() for k, v in secret["data"].items()})
    for variable in container.get("env", []):
        field_ref = variable.get("valueFrom", {}).get("fieldRef")
        if field_ref is not None and fields is not None:
            env[variable["name"]] = fields[field_ref["fieldPath"]]
        if "value" in variable:
            value = variable["value"]
            for name, known in env.items():
                value = value.replace(f"$({name})", known)
            env[variable["name"]] = value
    return env
