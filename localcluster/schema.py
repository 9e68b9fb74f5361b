"""Structural decoding of request bodies, the way kube-apiserver's JSON decoder does it.

Types come from the official ``kubernetes`` client's generated models (the
pinned version), so whatever is stored here is exactly what that client can
read back. Type mismatches are the decoder's 400 ("cannot unmarshal");
unknown fields are dropped, or rejected with ``fieldValidation=Strict`` as in
staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from kubernetes.client import models as _models

from .errors import BadRequest, field_required, invalid
from .resources import RESOURCES, Resource

_MODEL_FOR_KIND = {"Event": "CoreV1Event"}
_ZERO: dict[str, Any] = {
    "str": "",
    "datetime": "",
    "bytes": "",
    "int": 0,
    "float": 0,
    "bool": False,
}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")
_INNER = re.compile(r"^(List|Dict)\[(?:str, )?(.+)\]$")


@cache
def _fields(model: str) -> dict[str, tuple[str, str, bool]]:
    """Map wire name -> (attribute, type string, required) for a generated model."""
    cls = getattr(_models, model)
    out: dict[str, tuple[str, str, bool]] = {}
    for attr, typ in cls.openapi_types.items():
        wire = cls.attribute_map[attr]
        info = cls.model_fields.get(attr)
        out[wire] = (attr, typ, bool(info and info.is_required()))
    return out


def model_for(res: Resource) -> str:
    """Return the generated model name for a resource's kind (``V1Pod``)."""
    return _MODEL_FOR_KIND.get(res.kind, f"V1{res.kind}")


def _go_type(typ: str) -> str:
    m = _INNER.match(typ)
    if m:
        inner = _go_type(m.group(2))
        return f"[]{inner}" if m.group(1) == "List" else f"map[string]{inner}"
    if typ in ("str", "datetime", "bytes"):
        return "string"
    if typ == "int":
        return "int32"
    if typ == "object":
        return "interface {}"
    if typ.startswith("V1"):
        return "v1." + typ[2:]
    return typ


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


class _Decoder:
    def __init__(self, res: Resource, strict: bool) -> None:
        self.res = res
        self.strict = strict
        self.unknown: list[str] = []
        self.missing: list[str] = []

    def fail(self, value: Any, model: str, path: str, typ: str) -> BadRequest:
        """The decoder's 400 for a value of the wrong JSON type."""
        kind = self.res.kind
        return BadRequest(
            f'{kind} in version "{self.res.version}" cannot be handled as a {kind}: json: '
            f"cannot unmarshal {_json_type(value)} into Go struct field {model[2:] if model.startswith('V1') else model}.{path} of type {_go_type(typ)}"
        )

    def value(self, value: Any, typ: str, model: str, path: str) -> Any:
        """Check (and coerce integral floats in) one value of type ``typ``."""
        if value is None:
            return None
        m = _INNER.match(typ)
        if m:
            inner = m.group(2)
            if m.group(1) == "List":
                if not isinstance(value, list):
                    raise self.fail(value, model, path, typ)
                return [self.element(v, inner, model, path) for v in value]
            if not isinstance(value, dict):
                raise self.fail(value, model, path, typ)
            return {k: self.element(v, inner, model, path) for k, v in value.items()}
        if typ == "datetime":
            if not isinstance(value, str):
                raise self.fail(value, model, path, typ)
            if not _RFC3339.match(value):
                kind = self.res.kind
                raise BadRequest(
                    f'{kind} in version "{self.res.version}" cannot be handled as a {kind}: '
                    f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse "{value}" as "2006"'
                )
            ok = True
        elif typ in ("str", "bytes"):
            ok = isinstance(value, str)
        elif typ == "int":
            ok = (
                isinstance(value, int)
                and not isinstance(value, bool)
                or (isinstance(value, float) and value.is_integer())
            )
            if ok:
                value = int(value)
                # Go's decoder refuses numbers that overflow the field (int64 at most).
                ok = -(2**63) <= value < 2**63
        elif typ == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif typ == "bool":
            ok = isinstance(value, bool)
        elif typ == "object":
            ok = True
        elif hasattr(_models, typ):
            if not isinstance(value, dict):
                raise self.fail(value, model, path, typ)
            return self.model(value, typ, path)
        else:
            ok = True
        if not ok:
            raise self.fail(value, model, path, typ)
        return value

    def element(self, value: Any, typ: str, model: str, path: str) -> Any:
        """A list item or map value: Go decodes null there as the type's zero value."""
        if value is None:
            return _ZERO.get(typ, {} if hasattr(_models, typ) else None)
        return self.value(value, typ, model, path)

    def model(self, obj: dict[str, Any], model: str, path: str) -> dict[str, Any]:
        """Check an object against a generated model, collecting unknown and missing fields."""
        fields = _fields(model)
        out: dict[str, Any] = {}
        for key, val in obj.items():
            spec = fields.get(key)
            sub = f"{path}.{key}" if path else key
            if spec is None:
                self.unknown.append(sub)
                continue
            out[key] = self.value(val, spec[1], model, sub)
        for key, (_attr, _typ, required) in fields.items():
            if required and out.get(key) is None:
                self.missing.append(f"{path}.{key}" if path else key)
        return out


def decode(
    res: Resource, obj: dict[str, Any], strict: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """Type-check ``obj`` as ``res``'s kind; return (pruned object, unknown field paths).

    BadRequest on a type mismatch or (``strict``) an unknown field; Invalid when a
    field the schema requires is missing.
    """
    d = _Decoder(res, strict)
    out = d.model(obj, model_for(res), "")
    unknown = [u for u in d.unknown if u not in ("status",)]
    if strict and unknown:
        msg = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise BadRequest(f"strict decoding error: {msg}")
    missing = [m for m in d.missing if not m.startswith("status.") and m != "status"]
    if missing:
        name = (obj.get("metadata") or {}).get("name") or ""
        raise invalid(res.kind, res.group, name, [field_required(m) for m in missing])
    return out, unknown


def decode_model(model: str, obj: dict[str, Any], kind_res: Resource) -> dict[str, Any]:
    """Type-check a request body of a non-stored kind (Eviction, Scale, DeleteOptions)."""
    return _Decoder(kind_res, False).model(obj, model, "")


def warm() -> None:
    """Import and index every model reachable from the served kinds (keeps first requests fast)."""
    seen: set[str] = set()
    todo = [model_for(r) for r in RESOURCES] + ["V1DeleteOptions", "V1Eviction", "V1Scale"]
    while todo:
        model = todo.pop()
        if model in seen or not hasattr(_models, model):
            continue
        seen.add(model)
        for _attr, typ, _req in _fields(model).values():
            m = _INNER.match(typ)
            inner = m.group(2) if m else typ
            if hasattr(_models, inner):
                todo.append(inner)
