"""The deployer's own exceptions: user-facing request errors and translated backend errors."""

from __future__ import annotations


class DeployError(Exception):
    """A request the user can fix; ``str(exc)`` is the message to show them."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AppBusy(DeployError):
    """The app is being undeployed (or is otherwise unable to take this request now)."""


class InvalidRequest(DeployError):
    """The request's arguments are invalid (replicas over the cap, unknown image, ...)."""


class NothingToDo(DeployError):
    """The request has no effect (no live version to scale, no warm version to swap back to)."""


class BackendError(Exception):
    """A failure of Kubernetes or etcd that the user cannot fix; logged with context."""


class KubeError(BackendError):
    """A Kubernetes API call failed; ``status`` is the HTTP status (0 when unreachable)."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    """The object does not exist (404)."""


class Conflict(KubeError):
    """The object already exists or was changed concurrently (409)."""


class Forbidden(KubeError):
    """The credentials may not do this (401/403)."""


class Invalid(KubeError):
    """The API refused the object as invalid (400/422)."""


class Transient(KubeError):
    """Worth retrying: unreachable API, timeouts, 429 and 5xx."""


class TooManyRequests(Transient):
    """429: e.g. an eviction blocked by a disruption budget."""


class StoreError(BackendError):
    """etcd could not be reached or refused the operation."""
