"""Just enough of Kubernetes' protobuf encoding to read the bodies kubectl sends that way.

kubectl's typed clients (drain's evictions, ``create namespace|configmap|secret|
deployment``) send ``application/vnd.kubernetes.protobuf``: the magic ``k8s\\x00``
then a runtime.Unknown envelope {typeMeta{apiVersion=1, kind=2}, raw=2}
(apimachinery/pkg/runtime/generated.proto). The field numbers below are those of
the k8s.io/api generated.proto files for the fields those commands set; other
fields are ignored and other kinds get 415. gogo-protobuf writes empty values
for non-pointer fields, so empty strings, zeros and false are treated as unset
except for pointer fields (marked ``*``), as the JSON encoding would omit them.
"""

from __future__ import annotations

import base64
from typing import Any

from .errors import BadRequest, UnsupportedMediaType

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# message -> field number -> (json name, type); "[]" prefix: repeated; "*" suffix: pointer.
# Types: str, int, bool, map (string->string), mapb64 (string->bytes as base64), or a message.
SCHEMA: dict[str, dict[int, tuple[str, str]]] = {
    "ObjectMeta": {
        1: ("name", "str"),
        2: ("generateName", "str"),
        3: ("namespace", "str"),
        5: ("uid", "str"),
        6: ("resourceVersion", "str"),
        10: ("deletionGracePeriodSeconds", "int*"),
        11: ("labels", "map"),
        12: ("annotations", "map"),
        13: ("ownerReferences", "[]OwnerReference"),
        14: ("finalizers", "[]str"),
    },
    "OwnerReference": {
        5: ("apiVersion", "str"),
        1: ("kind", "str"),
        3: ("name", "str"),
        4: ("uid", "str"),
        6: ("controller", "bool*"),
        7: ("blockOwnerDeletion", "bool*"),
    },
    "Preconditions": {1: ("uid", "str*"), 2: ("resourceVersion", "str*")},
    "DeleteOptions": {
        1: ("gracePeriodSeconds", "int*"),
        2: ("preconditions", "Preconditions"),
        3: ("orphanDependents", "bool*"),
        4: ("propagationPolicy", "str*"),
        5: ("dryRun", "[]str"),
    },
    "Eviction": {1: ("metadata", "ObjectMeta"), 2: ("deleteOptions", "DeleteOptions")},
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: ("finalizers", "[]str")},
    "ConfigMap": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "map"),
        3: ("binaryData", "mapb64"),
        4: ("immutable", "bool*"),
    },
    "Secret": {
        1: ("metadata", "ObjectMeta"),
        2: ("data", "mapb64"),
        3: ("type", "str"),
        4: ("stringData", "map"),
        5: ("immutable", "bool*"),
    },
    "Deployment": {1: ("metadata", "ObjectMeta"), 2: ("spec", "DeploymentSpec")},
    "DeploymentSpec": {
        1: ("replicas", "int*"),
        2: ("selector", "LabelSelector"),
        3: ("template", "PodTemplateSpec"),
        4: ("strategy", "DeploymentStrategy"),
        5: ("minReadySeconds", "int"),
        6: ("revisionHistoryLimit", "int*"),
        7: ("paused", "bool"),
        9: ("progressDeadlineSeconds", "int*"),
    },
    "DeploymentStrategy": {1: ("type", "str"), 2: ("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {
        1: ("maxUnavailable", "IntOrString"),
        2: ("maxSurge", "IntOrString"),
    },
    "LabelSelector": {
        1: ("matchLabels", "map"),
        2: ("matchExpressions", "[]LabelSelectorRequirement"),
    },
    "LabelSelectorRequirement": {1: ("key", "str"), 2: ("operator", "str"), 3: ("values", "[]str")},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "PodSpec": {
        2: ("containers", "[]Container"),
        3: ("restartPolicy", "str"),
        4: ("terminationGracePeriodSeconds", "int*"),
        6: ("dnsPolicy", "str"),
        7: ("nodeSelector", "map"),
        8: ("serviceAccountName", "str"),
        10: ("nodeName", "str"),
        11: ("hostNetwork", "bool"),
        19: ("schedulerName", "str"),
    },
    "Container": {
        1: ("name", "str"),
        2: ("image", "str"),
        3: ("command", "[]str"),
        4: ("args", "[]str"),
        5: ("workingDir", "str"),
        6: ("ports", "[]ContainerPort"),
        7: ("env", "[]EnvVar"),
        13: ("terminationMessagePath", "str"),
        14: ("imagePullPolicy", "str"),
        20: ("terminationMessagePolicy", "str"),
    },
    "ContainerPort": {
        1: ("name", "str"),
        2: ("hostPort", "int"),
        3: ("containerPort", "int"),
        4: ("protocol", "str"),
        5: ("hostIP", "str"),
    },
    "EnvVar": {1: ("name", "str"), 2: ("value", "str")},
    # kubectl auth can-i (k8s.io/api/authorization/v1/generated.proto).
    "SelfSubjectAccessReview": {
        1: ("metadata", "ObjectMeta"),
        2: ("spec", "SelfSubjectAccessReviewSpec"),
    },
    "SelfSubjectAccessReviewSpec": {
        1: ("resourceAttributes", "ResourceAttributes"),
        2: ("nonResourceAttributes", "NonResourceAttributes"),
    },
    "ResourceAttributes": {
        1: ("namespace", "str"),
        2: ("verb", "str"),
        3: ("group", "str"),
        4: ("version", "str"),
        5: ("resource", "str"),
        6: ("subresource", "str"),
        7: ("name", "str"),
    },
    "NonResourceAttributes": {1: ("path", "str"), 2: ("verb", "str")},
}


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


def _scalar(typ: str, val: int | bytes) -> Any:
    if typ == "str":
        return val.decode(errors="replace") if isinstance(val, bytes) else str(val)
    if typ == "bool":
        return bool(val)
    n = val if isinstance(val, int) else 0
    return n - (1 << 64) if n >= 1 << 63 else n


def _int_or_string(buf: bytes) -> int | str | None:
    parts = dict(fields(buf))
    if parts.get(1, 0) == 1:
        return _scalar("str", parts.get(3, b""))
    return _scalar("int", parts.get(2, 0)) if 2 in parts else None


def decode_message(name: str, buf: bytes) -> dict[str, Any]:
    """Decode one message of SCHEMA into its JSON form, dropping unset fields."""
    spec = SCHEMA[name]
    out: dict[str, Any] = {}
    for num, val in fields(buf):
        if num not in spec:
            continue
        key, typ = spec[num]
        repeated = typ.startswith("[]")
        pointer = typ.endswith("*")
        base = typ.removeprefix("[]").removesuffix("*")
        if base in ("map", "mapb64"):
            if not isinstance(val, bytes):
                continue
            entry = dict(fields(val))
            k = _scalar("str", entry.get(1, b""))
            raw = entry.get(2, b"")
            v = (
                base64.b64encode(raw).decode()
                if base == "mapb64" and isinstance(raw, bytes)
                else _scalar("str", raw)
            )
            out.setdefault(key, {})[k] = v
            continue
        if base == "IntOrString":
            decoded: Any = _int_or_string(val) if isinstance(val, bytes) else None
        elif base in SCHEMA:
            decoded = decode_message(base, val) if isinstance(val, bytes) else {}
        else:
            decoded = _scalar(base, val)
        if repeated:
            out.setdefault(key, []).append(decoded)
        elif pointer or decoded not in ("", 0, False, None, {}):
            out[key] = decoded
    return out


def decode(body: bytes) -> dict[str, Any]:
    """Decode a protobuf request body into its JSON form; 415 for kinds not in SCHEMA."""
    if not body.startswith(MAGIC):
        raise BadRequest("provided protobuf is missing the k8s magic prefix")
    api_version = kind = ""
    raw = b""
    for num, val in fields(body[len(MAGIC) :]):
        if num == 1 and isinstance(val, bytes):
            for n, v in fields(val):
                if n == 1:
                    api_version = _scalar("str", v)
                elif n == 2:
                    kind = _scalar("str", v)
        elif num == 2 and isinstance(val, bytes):
            raw = val
    if kind not in SCHEMA:
        raise UnsupportedMediaType(
            f"the body of the request was in an unknown format - localcluster reads {kind or 'this kind'} as application/json only"
        )
    return {"apiVersion": api_version, "kind": kind, **decode_message(kind, raw)}
