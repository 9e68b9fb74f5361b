"""Helpers for the runtime tests: manifests, watch-based waits, HTTP to pod IPs, processes."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from tests.servers import LocalCluster, start_localcluster

Obj = dict[str, Any]
_SERIALIZER = client.ApiClient()


def wire(obj: Any) -> Obj:
    """A client model as its wire (camelCase JSON) dict."""
    return _SERIALIZER.sanitize_for_serialization(obj)


def deployment(
    name: str,
    image: str = "demo/hello:1",
    replicas: int = 1,
    readiness: bool = True,
    **spec: Any,
) -> Obj:
    """A Deployment of one container labelled app=<name>, with an HTTP readiness probe."""
    container: Obj = {
        "name": "app",
        "image": image,
        "ports": [{"containerPort": 8080, "name": "http"}],
    }
    if readiness:
        container["readinessProbe"] = {
            "httpGet": {"path": "/health", "port": 8080},
            "periodSeconds": 1,
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container]},
            },
            **spec,
        },
    }


def watch_until(
    list_fn: Callable[..., Any],
    predicate: Callable[[dict[str, Obj]], bool],
    timeout: float = 30,
    **kwargs: Any,
) -> dict[str, Obj]:
    """List then watch ``list_fn(**kwargs)`` until ``predicate(objects by name)`` holds.

    Returns the objects (wire dicts) that satisfied it; AssertionError with the last state on
    timeout. Objects that the watch reports DELETED leave the dict.
    """
    deadline = time.monotonic() + timeout
    listing = list_fn(**kwargs)
    objects = {item.metadata.name: wire(item) for item in listing.items}
    if predicate(objects):
        return objects
    rv = listing.metadata.resource_version
    while time.monotonic() < deadline:
        remaining = max(int(deadline - time.monotonic()), 1)
        stream = watch.Watch().stream(
            list_fn, resource_version=rv, timeout_seconds=remaining, **kwargs
        )
        for event in stream:
            obj = wire(event["object"])
            rv = obj["metadata"]["resourceVersion"]
            if event["type"] == "DELETED":
                objects.pop(obj["metadata"]["name"], None)
            else:
                objects[obj["metadata"]["name"]] = obj
            if predicate(objects):
                return objects
            if time.monotonic() >= deadline:
                break
    raise AssertionError(
        f"condition not reached in {timeout}s; last state:\n{json.dumps(objects, indent=1)[:6000]}"
    )


def condition(obj: Obj, ctype: str) -> Obj | None:
    """The status condition of type ``ctype``."""
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None
    )


def is_ready(pod: Obj) -> bool:
    """Whether the pod's Ready condition is True."""
    cond = condition(pod, "Ready")
    return cond is not None and cond["status"] == "True"


def running_and_ready(count: int) -> Callable[[dict[str, Obj]], bool]:
    """Predicate: exactly ``count`` pods, all Running, Ready and not terminating."""

    def check(pods: dict[str, Obj]) -> bool:
        live = [p for p in pods.values() if not p["metadata"].get("deletionTimestamp")]
        return len(live) == count == len(pods) and all(
            p["status"].get("phase") == "Running" and is_ready(p) for p in live
        )

    return check


def waiting_reason(pod: Obj) -> str | None:
    """The first container's waiting reason, if it is waiting."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    if not statuses:
        return None
    return ((statuses[0].get("state") or {}).get("waiting") or {}).get("reason")


def http_json(
    ip: str, port: int = 8080, path: str = "/health", timeout: float = 3
) -> tuple[int, Obj]:
    """GET http://ip:port/path; return (status, JSON body)."""
    try:
        with urllib.request.urlopen(f"http://{ip}:{port}{path}", timeout=timeout) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def processes_with(marker: str) -> list[str]:
    """Running processes whose command line or environment contains ``marker``.

    Tests mark their pods with a unique env value, so pods of clusters that other test runs
    start on the same machine never count.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            if marker.encode() in cmdline or marker.encode() in environ:
                command = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {command}")
    return found


def wait_processes(marker: str, at_most: int = 0, timeout: float = 10) -> list[str]:
    """Wait until at most ``at_most`` processes carry ``marker``; return those left."""
    deadline = time.monotonic() + timeout
    left = processes_with(marker)
    while len(left) > at_most and time.monotonic() < deadline:
        time.sleep(0.1)  # processes have no watch API; a short backoff is all there is
        left = processes_with(marker)
    return left


def api_for(kubeconfig: Path) -> client.ApiClient:
    """An ApiClient for a kubeconfig."""
    cfg = client.Configuration()
    config.load_kube_config(str(kubeconfig), client_configuration=cfg)
    return client.ApiClient(cfg)


@contextlib.contextmanager
def running_cluster(
    workdir: Path, **kwargs: Any
) -> Iterator[tuple[LocalCluster, client.ApiClient]]:
    """A private cluster for tests that restart, kill or reshape it; stopped afterwards."""
    cluster = start_localcluster(workdir, **kwargs)
    api = api_for(cluster.kubeconfig)
    try:
        yield cluster, api
    finally:
        api.close()
        cluster.stop()
