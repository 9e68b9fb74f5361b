"""A minimal OpenAPI v3 document per group/version, as /openapi/v3 serves it.

kubectl 1.32 reads it to learn that the server validates fields itself
(k8s.io/cli-runtime/pkg/resource/query_param_verifier_v3.go looks for the
``fieldValidation`` query parameter on each kind's PATCH operation). Schemas are
omitted: kubectl then computes strategic merge patches from its compiled-in
types, and /openapi/v2 answers 404, which kubectl tolerates.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .resources import RESOURCES, Resource

_PARAMS = [
    {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
    for name in ("dryRun", "fieldManager", "fieldValidation", "force")
]
_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


def _gv_key(r: Resource) -> str:
    return f"apis/{r.group}/{r.version}" if r.group else f"api/{r.version}"


def _item_path(r: Resource) -> str:
    base = f"/{_gv_key(r)}"
    if r.namespaced:
        return f"{base}/namespaces/{{namespace}}/{r.plural}/{{name}}"
    return f"{base}/{r.plural}/{{name}}"


def gv_document(gv: str) -> dict[str, Any] | None:
    """The OpenAPI v3 document for ``api/v1`` or ``apis/<group>/<version>``, or None."""
    rs = [r for r in RESOURCES if _gv_key(r) == gv]
    if not rs:
        return None
    paths: dict[str, Any] = {}
    for r in rs:
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        paths[_item_path(r)] = {
            "patch": {
                "operationId": f"patch{r.kind}",
                "parameters": _PARAMS,
                "requestBody": {
                    "content": {t: {"schema": {"type": "object"}} for t in _PATCH_TYPES}
                },
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
            },
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0"},
        "paths": paths,
        "components": {},
    }


def index() -> dict[str, Any]:
    """The /openapi/v3 discovery document listing each group/version's URL."""
    out: dict[str, Any] = {}
    for gv in sorted({_gv_key(r) for r in RESOURCES}):
        digest = (
            hashlib.sha256(json.dumps(gv_document(gv), sort_keys=True).encode())
            .hexdigest()[:32]
            .upper()
        )
        out[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": out}
