"""The one module that talks to the kubernetes client: construction and error translation.

Every Kubernetes call of the project goes through the API factories here and runs
inside :func:`translated` (or :func:`call`), so callers only ever see
``deployer.errors.KubeError`` subclasses.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import urllib3
from django.conf import settings
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException, OpenApiException

from deployer.errors import (
    Conflict,
    Forbidden,
    Invalid,
    KubeError,
    NotFound,
    TooManyRequests,
    Transient,
)

T = TypeVar("T")

_lock = threading.Lock()
_client: client.ApiClient | None = None
_client_key: tuple[Any, ...] | None = None


def _settings_key() -> tuple[Any, ...]:
    return (
        bool(settings.KUBE_IN_CLUSTER),
        str(settings.KUBECONFIG),
        settings.KUBE_CONTEXT,
    )


def connection_pool_size() -> int:
    """Connections kept open to the API server: one per worker thread (a few at least).

    The floor covers the threads beside the workflows (heartbeat, pod watches) in a
    process configured with very few worker threads.
    """
    return max(4, int(settings.CELERY_WORKER_CONCURRENCY))


def new_api_client() -> client.ApiClient:
    """A fresh ApiClient configured from settings (in-cluster, or kubeconfig plus context)."""
    configuration = client.Configuration()
    with translated():
        if settings.KUBE_IN_CLUSTER:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=str(settings.KUBECONFIG),
                context=settings.KUBE_CONTEXT,
                client_configuration=configuration,
            )
    # One connection per thread that may call at once (the worker runs deploys in threads):
    # a smaller pool opens and discards a TLS connection for most calls under load.
    configuration.connection_pool_maxsize = connection_pool_size()
    return client.ApiClient(configuration)


def api_client() -> client.ApiClient:
    """The process-wide ApiClient, rebuilt when the settings it came from change (tests)."""
    global _client, _client_key
    key = _settings_key()
    with _lock:
        if _client is None or _client_key != key:
            _client = new_api_client()
            _client_key = key
        return _client


def reset() -> None:
    """Forget the cached client (after a fork, or when a test changes the kubeconfig)."""
    global _client, _client_key
    with _lock:
        _client, _client_key = None, None


def core_v1() -> client.CoreV1Api:
    """CoreV1Api on the shared client."""
    return client.CoreV1Api(api_client())


def apps_v1() -> client.AppsV1Api:
    """AppsV1Api on the shared client."""
    return client.AppsV1Api(api_client())


def policy_v1() -> client.PolicyV1Api:
    """PolicyV1Api on the shared client."""
    return client.PolicyV1Api(api_client())


def _status_message(exc: ApiException) -> str:
    body = exc.body
    if body:
        with contextlib.suppress(ValueError, TypeError):
            data = json.loads(body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
    return str(exc.reason or f"HTTP {exc.status}")


def translate(exc: BaseException) -> KubeError:
    """The project error for a kubernetes-client or transport exception."""
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = _status_message(exc)
        kind: type[KubeError]
        if status == 404:
            kind = NotFound
        elif status == 409:
            kind = Conflict
        elif status in (401, 403):
            kind = Forbidden
        elif status in (400, 422):
            kind = Invalid
        elif status == 429:
            kind = TooManyRequests
        elif status == 0 or status >= 500 or status == 410:
            kind = Transient
        else:
            kind = KubeError
        return kind(message, status=status, reason=str(exc.reason or ""))
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError | TimeoutError):
        return Transient(f"Kubernetes API unreachable: {exc}")
    if isinstance(exc, OpenApiException | config.ConfigException):
        return Invalid(str(exc))
    return KubeError(f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Run the block and re-raise kubernetes-client errors as ``KubeError`` subclasses."""
    try:
        yield
    except KubeError:
        raise
    except (
        ApiException,
        OpenApiException,
        urllib3.exceptions.HTTPError,
        OSError,
        TimeoutError,
        config.ConfigException,
    ) as exc:
        raise translate(exc) from exc


def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` with errors translated."""
    with translated():
        return function(*args, **kwargs)


def stream(
    function: Callable[..., Any],
    *args: Any,
    timeout_seconds: int | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Watch events (``type``, ``object``, ``raw_object``) of a list call, errors translated."""
    watcher = watch.Watch()
    if timeout_seconds is not None:
        kwargs["timeout_seconds"] = timeout_seconds
    try:
        with translated():
            yield from watcher.stream(function, *args, **kwargs)
    finally:
        watcher.stop()
