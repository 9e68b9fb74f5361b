"""Label and field selectors with kube-apiserver's syntax and error messages.

Label selectors follow k8s.io/apimachinery/pkg/labels/selector.go (equality
and set-based); field selectors follow pkg/fields/selector.go (=, ==, !=).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest
from .resources import Resource

Requirement = tuple[str, str, frozenset[str]]
LabelSelector = tuple[Requirement, ...]
FieldSelector = tuple[tuple[str, str, str], ...]

_KEY_RE = re.compile(
    r"^([a-z0-9A-Z]([a-z0-9A-Z._-]*[a-z0-9A-Z])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
)
_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SET_RE = re.compile(r"^\s*(\S+?)\s+(in|notin)\s*\(([^)]*)\)\s*")


def _split_top(text: str) -> list[str]:
    # Commas inside "(a,b)" belong to a set, not to the requirement list.
    parts: list[str] = []
    depth = 0
    cur = ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _check_key(key: str, raw: str) -> None:
    if not _KEY_RE.match(key) or len(key.split("/")[-1]) > 63:
        raise BadRequest(
            f"unable to parse requirement: invalid label key \"{key}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )


def _check_value(value: str) -> None:
    if len(value) > 63 or not _VALUE_RE.match(value):
        raise BadRequest(
            f'unable to parse requirement: invalid label value: "{value}": at key: must be no more than 63 characters'
            if len(value) > 63
            else f"unable to parse requirement: values[0][]: Invalid value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
        )


def parse_label_selector(text: str | Mapping[str, str] | LabelSelector | None) -> LabelSelector:
    """Parse a label selector string (or a matchLabels dict, or parsed requirements); BadRequest when malformed."""
    if text is None:
        return ()
    if isinstance(text, tuple):
        return text
    if isinstance(text, Mapping):
        return tuple((k, "=", frozenset([v])) for k, v in text.items())
    text = text.strip()
    if not text:
        return ()
    reqs: list[Requirement] = []
    for raw in _split_top(text):
        part = raw.strip()
        if not part:
            raise BadRequest(
                f"unable to parse requirement: found '', expected: identifier in \"{text}\""
            )
        m = _SET_RE.match(part)
        if m and m.end() == len(part):
            key, op, vals = m.group(1), m.group(2), m.group(3)
            _check_key(key, part)
            values = frozenset(v.strip() for v in vals.split(",") if v.strip())
            for v in values:
                _check_value(v)
            reqs.append((key, op, values))
            continue
        for op in ("!=", "==", "="):
            if op in part:
                key, _, value = part.partition(op)
                key, value = key.strip(), value.strip()
                _check_key(key, part)
                _check_value(value)
                reqs.append((key, "!=" if op == "!=" else "=", frozenset([value])))
                break
        else:
            if part.startswith("!"):
                key = part[1:].strip()
                _check_key(key, part)
                reqs.append((key, "!", frozenset()))
            else:
                if " " in part or "(" in part or ")" in part:
                    raise BadRequest(
                        f"unable to parse requirement: found '{part}', expected: in, notin, =, ==, !=, gt, lt"
                    )
                _check_key(part, part)
                reqs.append((part, "exists", frozenset()))
    return tuple(reqs)


def selector_from_label_selector(sel: Mapping[str, Any] | None) -> LabelSelector | None:
    """Convert a metav1.LabelSelector dict (matchLabels/matchExpressions) into requirements.

    An empty selector matches everything; None (absent) matches nothing and gives None.
    """
    if sel is None:
        return None
    reqs: list[Requirement] = [
        (k, "=", frozenset([str(v)])) for k, v in (sel.get("matchLabels") or {}).items()
    ]
    for expr in sel.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}.get(
            expr.get("operator", "")
        )
        if op is None:
            continue
        reqs.append((expr.get("key", ""), op, frozenset(expr.get("values") or [])))
    return tuple(reqs)


def labels_match(selector: LabelSelector, labels: Mapping[str, str] | None) -> bool:
    """Return whether ``labels`` satisfy every requirement."""
    labels = labels or {}
    for key, op, values in selector:
        present = key in labels
        if op in ("=", "in"):
            if not present or labels[key] not in values:
                return False
        elif op in ("!=", "notin"):
            if present and labels[key] in values:
                return False
        elif op == "exists":
            if not present:
                return False
        elif op == "!" and present:
            return False
    return True


def parse_field_selector(text: str | None, resource: Resource) -> FieldSelector:
    """Parse a field selector for ``resource``; BadRequest for unsupported fields like the real server."""
    if not text or not text.strip():
        return ()
    out: list[tuple[str, str, str]] = []
    for raw in text.split(","):
        part = raw.strip()
        for op in ("!=", "==", "="):
            if op in part:
                key, _, value = part.partition(op)
                key = key.strip()
                op = "!=" if op == "!=" else "="
                break
        else:
            raise BadRequest(f"invalid selector: '{text}'; can't understand '{part}'")
        if key not in ("metadata.name", "metadata.namespace") and key not in resource.fields:
            raise BadRequest(f"field label not supported: {key}")
        out.append((key, op, value.strip()))
    return tuple(out)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    if path == "source":
        src = obj.get("source") or {}
        return str(src.get("component", "") if isinstance(src, dict) else "")
    cur: Any = obj
    for part in _field_path(path):
        # Stored objects are plain JSON dicts; a dict check is cheaper than an ABC's.
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(selector: FieldSelector, obj: Mapping[str, Any]) -> bool:
    """Return whether ``obj`` satisfies every field requirement."""
    for key, op, value in selector:
        actual = _field_value(obj, key)
        if (actual == value) != (op == "="):
            return False
    return True


@functools.lru_cache(maxsize=256)
def _field_path(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def required_pairs(selector: LabelSelector) -> list[frozenset[tuple[str, str]]]:
    """For each requirement that needs a label with one of a few values, the (key, value) pairs.

    An object matching the selector carries one pair of every set: what an index of objects by
    label can look up instead of scanning.
    """
    return [
        frozenset((key, value) for value in values)
        for key, op, values in selector
        if op in ("=", "in") and values
    ]


@dataclass(frozen=True)
class Query:
    """A parsed list or watch query: namespace (None: all), label and field requirements."""

    namespace: str | None
    labels: LabelSelector
    fields: FieldSelector

    def match(self, obj: Mapping[str, Any]) -> bool:
        """Whether ``obj`` is in the namespace and satisfies both selectors."""
        meta = obj.get("metadata") or {}
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        if self.labels and not labels_match(self.labels, meta.get("labels")):
            return False
        return not self.fields or fields_match(self.fields, obj)


def compile_query(
    resource: Resource,
    namespace: str | None,
    label_selector: str | Mapping[str, str] | LabelSelector | None,
    field_selector: str | None,
) -> Query:
    """Parse both selectors for ``resource``; BadRequest when either is malformed."""
    return Query(
        namespace or None,
        parse_label_selector(label_selector),
        parse_field_selector(field_selector, resource),
    )


def make_matcher(
    resource: Resource,
    namespace: str | None,
    label_selector: str | Mapping[str, str] | LabelSelector | None,
    field_selector: str | None,
) -> Callable[[Mapping[str, Any]], bool]:
    """Build a predicate for objects in ``namespace`` (None: all) matching both selectors."""
    return compile_query(resource, namespace, label_selector, field_selector).match
