"""The autoscaling/v1 Scale subresource of deployments and replicasets.

After pkg/registry/apps/deployment/storage/storage.go (ScaleREST).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .errors import BadRequest, MethodNotAllowed, not_found
from .patch import apply_patch
from .resources import Resource
from .store import dumps


async def scale(
    api: Any, request: web.Request, res: Resource, namespace: str | None, name: str
) -> web.Response:
    """The autoscaling/v1 Scale subresource of deployments and replicasets."""
    current = api.store.peek(res, namespace, name)
    if current is None:
        raise not_found(res.plural, res.group, name)
    if request.method == "GET":
        return api.json(_scale_of(current))
    if request.method not in ("PUT", "PATCH"):
        raise MethodNotAllowed("the server does not allow this method on the requested resource")
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    body = await api.body(request, None, patch=request.method == "PATCH")
    scale = apply_patch(res, _scale_of(current), body, ctype) if request.method == "PATCH" else body
    if not isinstance(scale, dict):
        raise BadRequest("the body of the request must be a Scale object")
    replicas = (scale.get("spec") or {}).get("replicas", 0)
    if not isinstance(replicas, int) or isinstance(replicas, bool):
        raise BadRequest(
            'Scale in version "v1" cannot be handled as a Scale: json: cannot unmarshal into Go struct field ScaleSpec.spec.replicas of type int32'
        )
    rv = (scale.get("metadata") or {}).get("resourceVersion") if request.method == "PUT" else None

    def set_replicas(obj: dict[str, Any]) -> dict[str, Any]:
        obj["spec"]["replicas"] = replicas
        if rv:
            obj["metadata"]["resourceVersion"] = rv
        return obj

    updated = json.loads(dumps(current))
    entry = api.store.update_sync(res, namespace, name, set_replicas(updated))
    return api.json(_scale_of(entry.obj))


def _scale_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    selector = obj.get("spec", {}).get("selector") or {}
    sel = ",".join(f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items())
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace", ""),
            "uid": meta.get("uid", ""),
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
        "status": {"replicas": obj.get("status", {}).get("replicas", 0), "selector": sel},
    }
