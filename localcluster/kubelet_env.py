"""A container's environment and command line, built the way the kubelet builds them."""

from __future__ import annotations

import base64
import math
import os
import re
from typing import Any

from .images import Image
from .store import Store

_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class ConfigError(Exception):
    """A referenced ConfigMap, Secret or key is missing: CreateContainerConfigError."""


def expand(text: str, env: dict[str, str]) -> str:
    """Expand ``$(VAR)`` references as in Kubernetes (``$$`` escapes; unknown refs stay)."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR_REF.sub(sub, text)


def _field_ref(pod: dict[str, Any], path: str) -> str:
    meta = pod["metadata"]
    status = pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs") or []),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs") or []),
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = sorted((meta.get(path.split(".")[1]) or {}).items())
        return "\n".join(f'{k}="{v}"' for k, v in items)
    return ""


def _quantity(value: str) -> float:
    units = {
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "Ki": 1024,
        "Mi": 1024**2,
        "Gi": 1024**3,
        "Ti": 1024**4,
    }
    match = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value).strip())
    if not match:
        return 0.0
    return float(match.group(1)) * units.get(match.group(2), 1.0)


def _resource_ref(container: dict[str, Any], ref: dict[str, Any]) -> str:
    kind, _, resource = str(ref.get("resource", "")).partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(resource)
    if value is None:
        # Unset limits report node allocatable in a real kubelet; any large number will do.
        value = "4" if resource == "cpu" else "8Gi"
    divisor = _quantity(str(ref.get("divisor") or "1"))
    return str(max(math.ceil(_quantity(str(value)) / (divisor or 1.0)), 1))


def _lookup(
    store: Store, kind: str, namespace: str, name: str, key: str | None, optional: bool
) -> dict[str, str] | None:
    resource = "configmaps" if kind == "configmap" else "secrets"
    obj = store.peek(resource, namespace, name)
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind} "{name}" not found')
    data: dict[str, str] = dict(obj.get("data") or {})
    if kind == "secret":
        data = {k: base64.b64decode(v).decode(errors="replace") for k, v in data.items()}
        data.update(obj.get("stringData") or {})
    if key is not None and key not in data:
        if optional:
            return None
        raise ConfigError(f"couldn't find key {key} in {kind.capitalize()} {namespace}/{name}")
    return data


def container_env(
    store: Store,
    pod: dict[str, Any],
    container: dict[str, Any],
    image: Image,
    extra: dict[str, str],
) -> dict[str, str]:
    """The process environment: host basics, image env, envFrom, env (in order, expanded), extras."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOSTNAME": pod["spec"].get("hostname") or pod["metadata"]["name"],
        "HOME": os.environ.get("HOME", "/root"),
    }
    env.update(image.env)
    env.update(extra)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, field in (("configmap", "configMapRef"), ("secret", "secretRef")):
            ref = source.get(field)
            if ref:
                data = _lookup(
                    store, kind, namespace, ref.get("name", ""), None, bool(ref.get("optional"))
                )
                for k, v in (data or {}).items():
                    env[prefix + k] = v
    for var in container.get("env") or []:
        name = var.get("name")
        if not name:
            continue
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"] or {}
        if "fieldRef" in source:
            env[name] = _field_ref(pod, source["fieldRef"].get("fieldPath", ""))
        elif "resourceFieldRef" in source:
            env[name] = _resource_ref(container, source["resourceFieldRef"])
        else:
            for kind, field in (("configmap", "configMapKeyRef"), ("secret", "secretKeyRef")):
                ref = source.get(field)
                if ref:
                    key = ref.get("key", "")
                    data = _lookup(
                        store, kind, namespace, ref.get("name", ""), key, bool(ref.get("optional"))
                    )
                    if data is not None:
                        env[name] = data[key]
    return env


def container_argv(container: dict[str, Any], image: Image, env: dict[str, str]) -> list[str]:
    """The command line: ``command`` replaces the entrypoint, ``args`` the image's arguments."""
    command = container.get("command")
    args = container.get("args")
    if command:
        argv = list(command) + list(args or [])
    elif args is not None:
        argv = image.entrypoint + list(args)
    else:
        argv = image.entrypoint + image.cmd
    return [expand(str(a), env) for a in argv]
