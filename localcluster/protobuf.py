"""Just enough of Kubernetes' protobuf encoding to read the bodies kubectl sends that way.

kubectl's typed clients (drain's evictions and pod deletions, ``create
deployment``...) send ``application/vnd.kubernetes.protobuf``: the magic
``k8s\\x00`` then a runtime.Unknown envelope (staging/src/k8s.io/apimachinery/
pkg/runtime/generated.proto). Only Eviction and DeleteOptions are decoded here
(field numbers from k8s.io/api/policy/v1/generated.proto and
apimachinery/pkg/apis/meta/v1/generated.proto); other kinds get 415.
"""

from __future__ import annotations

from typing import Any

from .errors import BadRequest, UnsupportedMediaType

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise BadRequest("unexpected EOF in protobuf body")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise BadRequest("varint overflow in protobuf body")


def fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """Split a message into (field number, varint value or length-delimited bytes)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
            out.append((num, val))
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise BadRequest("unexpected EOF in protobuf body")
            out.append((num, buf[pos : pos + length]))
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise BadRequest(f"unsupported protobuf wire type {wire}")
    return out


def _str(v: int | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _signed(v: int | bytes) -> int:
    n = int(v) if not isinstance(v, bytes) else 0
    return n - (1 << 64) if n >= 1 << 63 else n


def _object_meta(buf: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    names = {1: "name", 2: "generateName", 3: "namespace", 5: "uid", 6: "resourceVersion"}
    for num, val in fields(buf):
        if num in names:
            meta[names[num]] = _str(val)
    return meta


def _delete_options(buf: bytes) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    for num, val in fields(buf):
        if num == 1:
            opts["gracePeriodSeconds"] = _signed(val)
        elif num == 2 and isinstance(val, bytes):
            pre: dict[str, str] = {}
            for n, v in fields(val):
                pre[{1: "uid", 2: "resourceVersion"}.get(n, str(n))] = _str(v)
            opts["preconditions"] = pre
        elif num == 3:
            opts["orphanDependents"] = bool(val)
        elif num == 4:
            opts["propagationPolicy"] = _str(val)
        elif num == 5:
            opts.setdefault("dryRun", []).append(_str(val))
    return opts


def decode(body: bytes) -> dict[str, Any]:
    """Decode a protobuf-encoded Eviction or DeleteOptions into its JSON form; 415 for other kinds."""
    if not body.startswith(MAGIC):
        raise BadRequest("provided protobuf is missing the k8s magic prefix")
    api_version = kind = ""
    raw = b""
    for num, val in fields(body[len(MAGIC) :]):
        if num == 1 and isinstance(val, bytes):
            for n, v in fields(val):
                if n == 1:
                    api_version = _str(v)
                elif n == 2:
                    kind = _str(v)
        elif num == 2 and isinstance(val, bytes):
            raw = val
    if kind == "Eviction":
        obj: dict[str, Any] = {"apiVersion": api_version, "kind": kind}
        for num, val in fields(raw):
            if num == 1 and isinstance(val, bytes):
                obj["metadata"] = _object_meta(val)
            elif num == 2 and isinstance(val, bytes):
                obj["deleteOptions"] = _delete_options(val)
        return obj
    if kind == "DeleteOptions":
        return {"apiVersion": api_version, "kind": kind, **_delete_options(raw)}
    raise UnsupportedMediaType(
        f"the body of the request was in an unknown format - localcluster reads {kind or 'this kind'} as application/json only"
    )
