"""Errors carrying a Kubernetes ``Status`` body, shaped like kube-apiserver's.

Messages follow k8s.io/apimachinery/pkg/api/errors/errors.go so that clients
which match on them (kubectl, client-go, the Python client) behave as against
a real cluster.
"""

from __future__ import annotations

from typing import Any


class StatusError(Exception):
    """An API error; ``status()`` is the metav1.Status body the server answers with."""

    code = 500
    reason = "InternalError"

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        group: str | None = None,
        kind: str | None = None,
        causes: list[dict[str, str]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = {}
        if name is not None:
            self.details["name"] = name
        if group:
            self.details["group"] = group
        if kind is not None:
            self.details["kind"] = kind
        if causes:
            self.details["causes"] = causes
        if retry_after is not None:
            self.details["retryAfterSeconds"] = retry_after

    def status(self) -> dict[str, Any]:
        """Return the metav1.Status dict for this error."""
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


class BadRequest(StatusError):
    """400: the request itself is malformed."""

    code = 400
    reason = "BadRequest"


class Unauthorized(StatusError):
    """401: no valid credentials; the body has no details, like kube-apiserver's."""

    code = 401
    reason = "Unauthorized"

    def status(self) -> dict[str, Any]:
        """Return the metav1.Status dict, without the empty details kube-apiserver omits."""
        body = super().status()
        if not self.details:
            del body["details"]
        return body


class Forbidden(StatusError):
    """403: the request is understood but refused (e.g. terminating namespace)."""

    code = 403
    reason = "Forbidden"


class NotFound(StatusError):
    """404: the object (or resource) does not exist."""

    code = 404
    reason = "NotFound"


class MethodNotAllowed(StatusError):
    """405: the verb is not supported on this resource."""

    code = 405
    reason = "MethodNotAllowed"


class NotAcceptable(StatusError):
    """406: no acceptable representation."""

    code = 406
    reason = "NotAcceptable"


class Conflict(StatusError):
    """409: optimistic concurrency failure (stale resourceVersion)."""

    code = 409
    reason = "Conflict"


class AlreadyExists(StatusError):
    """409: an object with this name already exists."""

    code = 409
    reason = "AlreadyExists"


class Expired(StatusError):
    """410: the requested resourceVersion is older than the watch history."""

    code = 410
    reason = "Expired"


class RequestEntityTooLarge(StatusError):
    """413: the body exceeds the server's limit."""

    code = 413
    reason = "RequestEntityTooLarge"


class UnsupportedMediaType(StatusError):
    """415: a Content-Type the endpoint does not accept."""

    code = 415
    reason = "UnsupportedMediaType"


class Invalid(StatusError):
    """422: the object fails validation; ``causes`` lists each field error."""

    code = 422
    reason = "Invalid"


class TooManyRequests(StatusError):
    """429: try later (eviction blocked by a PodDisruptionBudget)."""

    code = 429
    reason = "TooManyRequests"


class InternalError(StatusError):
    """500: a server-side failure."""

    code = 500
    reason = "InternalError"


def qualified(plural: str, group: str) -> str:
    """Return the group-qualified resource name used in messages (``deployments.apps``)."""
    return f"{plural}.{group}" if group else plural


def not_found(plural: str, group: str, name: str) -> NotFound:
    """Build the NotFound error kube-apiserver returns for a missing object."""
    return NotFound(
        f'{qualified(plural, group)} "{name}" not found', name=name, group=group, kind=plural
    )


def already_exists(plural: str, group: str, name: str) -> AlreadyExists:
    """Build the AlreadyExists error for a create whose name is taken."""
    return AlreadyExists(
        f'{qualified(plural, group)} "{name}" already exists', name=name, group=group, kind=plural
    )


def conflict(plural: str, group: str, name: str, why: str | None = None) -> Conflict:
    """Build the Conflict error for a stale resourceVersion."""
    why = (
        why
        or "the object has been modified; please apply your changes to the latest version and try again"
    )
    return Conflict(
        f'Operation cannot be fulfilled on {qualified(plural, group)} "{name}": {why}',
        name=name,
        group=group,
        kind=plural,
    )


def invalid(kind: str, group: str, name: str, causes: list[dict[str, str]]) -> Invalid:
    """Build the 422 Invalid error; ``causes`` are {reason, message, field} dicts."""
    qual_kind = f"{kind}.{group}" if group else kind
    parts = [f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return Invalid(
        f'{qual_kind} "{name}" is invalid: {summary}',
        name=name,
        group=group,
        kind=kind,
        causes=causes,
    )


def field_required(field: str, detail: str = "") -> dict[str, str]:
    """Return a FieldValueRequired cause."""
    msg = "Required value" + (f": {detail}" if detail else "")
    return {"reason": "FieldValueRequired", "message": msg, "field": field}


def field_invalid(field: str, value: Any, detail: str) -> dict[str, str]:
    """Return a FieldValueInvalid cause; ``value`` is rendered like Go's %q for strings."""
    shown = f'"{value}"' if isinstance(value, str) else _go_repr(value)
    return {
        "reason": "FieldValueInvalid",
        "message": f"Invalid value: {shown}: {detail}",
        "field": field,
    }


def field_not_supported(field: str, value: Any, allowed: list[str]) -> dict[str, str]:
    """Return a FieldValueNotSupported cause."""
    shown = f'"{value}"' if isinstance(value, str) else _go_repr(value)
    opts = ", ".join(f'"{a}"' for a in allowed)
    return {
        "reason": "FieldValueNotSupported",
        "message": f"Unsupported value: {shown}: supported values: {opts}",
        "field": field,
    }


def _go_repr(value: Any) -> str:
    # Approximates Go's %#v for the map[string]string values the apiserver prints.
    if isinstance(value, dict):
        inner = ", ".join(f'"{k}":"{v}"' for k, v in value.items())
        return "map[string]string{" + inner + "}"
    return str(value)
