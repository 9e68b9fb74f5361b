"""PATCH bodies: strategic merge (with the real merge keys), JSON merge (RFC 7386), JSON patch (RFC 6902).

Merge keys and strategies come from the Go struct tags in k8s.io/api
(``patchStrategy:"merge" patchMergeKey:"name"`` on containers, env, volumes...);
directives ``$patch``, ``$retainKeys``, ``$setElementOrder/<list>`` and
``$deleteFromPrimitiveList/<list>`` follow
staging/src/k8s.io/apimachinery/pkg/util/strategicpatch/patch.go.
"""

from __future__ import annotations

import copy
from typing import Any

from .errors import BadRequest, UnsupportedMediaType
from .resources import Resource

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE, APPLY, STRATEGIC)

# field name -> merge key, for lists merged by key. Context-dependent names
# (ports) are resolved from the items themselves in _merge_key.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "addresses": "type",
    "taints": "",  # no strategy: replaced wholesale
    "topologySpreadConstraints": "topologyKey",
    "containerStatuses": "",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "podIPs": "ip",
    "hostIPs": "ip",
    "ephemeralContainerStatuses": "",
    "initContainerStatuses": "",
}
# Lists of scalars merged as sets (patchStrategy:"merge" on a []string).
MERGED_PRIMITIVE_LISTS = {"finalizers"}


def unsupported_media_type(content_type: str) -> UnsupportedMediaType:
    """The 415 kube-apiserver answers for an unknown patch Content-Type."""
    return UnsupportedMediaType(
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(PATCH_TYPES)}"
    )


def apply_patch(
    res: Resource, current: dict[str, Any], patch: Any, patch_type: str
) -> dict[str, Any]:
    """Return ``current`` with ``patch`` applied; BadRequest if the patch does not apply."""
    if patch_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise BadRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
        return json_patch(current, patch)
    if not isinstance(patch, dict):
        raise BadRequest(
            "error decoding patch: json: cannot unmarshal array into Go value of type map[string]interface {}"
        )
    if patch_type == MERGE:
        out = merge_patch(current, patch)
    elif patch_type == STRATEGIC:
        out = strategic_merge(current, patch, "")
    else:
        raise unsupported_media_type(patch_type)
    if not isinstance(out, dict):
        raise BadRequest("patch produced a non-object")
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(field: str, items: list[Any]) -> str:
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field, "")


def strategic_merge(original: Any, patch: Any, field: str) -> Any:
    """Apply a strategic merge patch to ``original`` (the value of ``field``)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(original) if isinstance(original, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(result.get(name), list) and isinstance(value, list):
                result[name] = [v for v in result[name] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        if isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
            order = patch.get(f"$setElementOrder/{key}")
            if isinstance(order, list) and isinstance(result[key], list):
                result[key] = _reorder(key, result[key], order)
        elif isinstance(value, dict):
            merged = strategic_merge(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, original: Any, patch: list[Any]) -> list[Any]:
    if field in MERGED_PRIMITIVE_LISTS:
        base = list(original) if isinstance(original, list) else []
        return base + [v for v in patch if v not in base]
    key = _merge_key(field, patch if patch else (original or []))
    if not key or not all(isinstance(p, dict) for p in patch):
        return [v for v in copy.deepcopy(patch) if not (isinstance(v, dict) and v.get("$patch"))]
    if any(p.get("$patch") == "replace" for p in patch):
        return [copy.deepcopy(p) for p in patch if p.get("$patch") != "replace"]
    result = [copy.deepcopy(o) for o in (original if isinstance(original, list) else [])]
    for item in patch:
        if key not in item:
            raise BadRequest(f"map: {item} does not contain declared merge key: {key}")
        idx = next(
            (i for i, o in enumerate(result) if isinstance(o, dict) and o.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if idx is not None:
                result.pop(idx)
            continue
        if idx is None:
            result.append({k: v for k, v in copy.deepcopy(item).items() if not k.startswith("$")})
        else:
            result[idx] = strategic_merge(result[idx], item, field)
    return result


def _reorder(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    key = _merge_key(field, items)
    if not key:
        return items

    def rank(item: Any) -> int:
        ident = item.get(key) if isinstance(item, dict) else item
        for i, o in enumerate(order):
            if (o.get(key) if isinstance(o, dict) else o) == ident:
                return i
        return len(order)

    return sorted(items, key=rank)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise BadRequest(
            f'the server rejected our request due to an error in our request: JSON pointer must start with "/": {path}'
        )
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _resolve(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        elif isinstance(cur, list) and p.isdigit() and int(p) < len(cur):
            cur = cur[int(p)]
        else:
            raise BadRequest(
                f'the server rejected our request due to an error in our request: doc is missing path: "{path}"'
            )
    return cur


def json_patch(doc: dict[str, Any], ops: list[Any]) -> dict[str, Any]:
    """RFC 6902 JSON patch; BadRequest on a failing op or test."""
    doc = copy.deepcopy(doc)
    for op in ops:
        if (
            not isinstance(op, dict)
            or "op" not in op
            or "path" not in op
            or not isinstance(op["path"], str)
        ):
            raise BadRequest(
                "the server rejected our request due to an error in our request: invalid JSON patch operation"
            )
        kind = op["op"]
        path = op["path"]
        parts = _pointer(path)
        if kind in ("add", "replace", "test") and "value" not in op:
            raise BadRequest(
                f"the server rejected our request due to an error in our request: missing value for {kind}"
            )
        if kind == "test":
            if _resolve(doc, parts, path) != op["value"]:
                raise BadRequest(
                    "the server rejected our request due to an error in our request: testing value failed"
                )
            continue
        if kind in ("move", "copy"):
            if not isinstance(op.get("from"), str):
                raise BadRequest(
                    f"the server rejected our request due to an error in our request: missing from for {kind}"
                )
            src = _pointer(op["from"])
            value = copy.deepcopy(_resolve(doc, src, op.get("from", "")))
            if kind == "move":
                _remove(doc, src, op.get("from", ""))
            _add(doc, parts, value, path)
            continue
        if kind == "add":
            _add(doc, parts, copy.deepcopy(op["value"]), path)
        elif kind == "remove":
            _remove(doc, parts, path)
        elif kind == "replace":
            _resolve(doc, parts, path)
            if not parts:
                doc = copy.deepcopy(op["value"])
                continue
            parent = _resolve(doc, parts[:-1], path)
            if isinstance(parent, list):
                parent[int(parts[-1])] = copy.deepcopy(op["value"])
            else:
                parent[parts[-1]] = copy.deepcopy(op["value"])
        else:
            raise BadRequest(
                f"the server rejected our request due to an error in our request: Unexpected kind: {kind}"
            )
    if not isinstance(doc, dict):
        raise BadRequest(
            "the server rejected our request due to an error in our request: patch produced a non-object"
        )
    return doc


def _add(doc: Any, parts: list[str], value: Any, path: str) -> None:
    if not parts:
        raise BadRequest(
            "the server rejected our request due to an error in our request: cannot replace the document root with add"
        )
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, list):
        if last == "-":
            parent.append(value)
        elif last.isdigit() and int(last) <= len(parent):
            parent.insert(int(last), value)
        else:
            raise BadRequest(
                f'the server rejected our request due to an error in our request: add operation does not apply: doc is missing path: "{path}"'
            )
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise BadRequest(
            f'the server rejected our request due to an error in our request: doc is missing path: "{path}"'
        )


def _remove(doc: Any, parts: list[str], path: str) -> None:
    if not parts:
        raise BadRequest(
            "the server rejected our request due to an error in our request: cannot remove the document root"
        )
    parent = _resolve(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        parent.pop(int(last))
    elif isinstance(parent, dict) and last in parent:
        del parent[last]
    else:
        raise BadRequest(
            f'the server rejected our request due to an error in our request: remove operation does not apply: doc is missing path: "{path}"'
        )
