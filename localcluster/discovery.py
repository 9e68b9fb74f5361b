"""Discovery documents: /version, /api, /api/v1, /apis, /apis/<group>/<version>.

Shapes follow staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/types.go
(APIVersions, APIGroupList, APIResourceList). Aggregated discovery
(``as=APIGroupDiscoveryList``) is not offered: client-go falls back to these
legacy documents when the response is plain application/json.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .resources import GROUPS, RESOURCES, Resource

VERSION_INFO = {
    "major": "1",
    "minor": "37",
    "emulationMajor": "1",
    "emulationMinor": "37",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "36",
    "gitVersion": "v1.37.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_SUB_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "log": ["get"],
    "eviction": ["create"],
    "binding": ["create"],
    "finalize": ["update"],
}


def _hash(r: Resource) -> str:
    return hashlib.sha256(r.key.encode()).digest()[:8].hex()[:11]


def _entries(r: Resource) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": list(r.verbs),
    }
    if r.short_names:
        main["shortNames"] = list(r.short_names)
    if r.categories:
        main["categories"] = list(r.categories)
    main["storageVersionHash"] = _hash(r)
    out = [main]
    for sub in r.subresources:
        entry: dict[str, Any] = {
            "name": f"{r.plural}/{sub}",
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": _SUB_VERBS[sub],
        }
        if sub == "scale":
            entry.update(group="autoscaling", version="v1", kind="Scale")
        elif sub == "eviction":
            entry.update(group="policy", version="v1", kind="Eviction")
        elif sub == "log":
            entry["kind"] = "Pod"
        elif sub == "binding":
            entry["kind"] = "Binding"
        out.append(entry)
    return out


def api_versions(server_address: str) -> dict[str, Any]:
    """The /api document."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    """The APIResourceList for one group/version, or None if it is not served."""
    rs = [r for r in RESOURCES if r.group == group and r.version == version]
    if not rs:
        return None
    gv = f"{group}/{version}" if group else version
    if group == "":
        # The core group also lists "bindings" as kube-apiserver does.
        extra = [
            {
                "name": "bindings",
                "singularName": "binding",
                "namespaced": True,
                "kind": "Binding",
                "verbs": ["create"],
            }
        ]
    else:
        extra = []
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": extra + [e for r in rs for e in _entries(r)],
    }


def _group(name: str) -> dict[str, Any]:
    versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in GROUPS[name]]
    return {"name": name, "versions": versions, "preferredVersion": versions[0]}


def group_list() -> dict[str, Any]:
    """The /apis document."""
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in GROUPS]}


def group(name: str) -> dict[str, Any] | None:
    """The /apis/<group> document, or None."""
    if name not in GROUPS:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group(name)}
