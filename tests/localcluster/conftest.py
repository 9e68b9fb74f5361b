"""Fixtures for the localcluster API conformance suite.

The suite takes its cluster from ``cluster_kubeconfig``: by default a fresh
``python -m localcluster`` on a free loopback port in a temporary directory;
with ``GREENLIGHT_TEST_KUBECONFIG`` set, whatever cluster that kubeconfig names
(so the same assertions can be checked against a real kube-apiserver). Tests
work in their own namespace and clean it up. ``GREENLIGHT_TEST_API_ONLY=1`` starts
localcluster with ``--no-runtime`` (no controllers or kubelets), the way the API
layer is checked on its own.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.resources
import json
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import urllib3
from kubernetes import client, config
from referencing import Registry, Resource

from tests.servers import LocalCluster, localcluster_server

REPO = Path(__file__).resolve().parents[2]
# The Kubernetes version the pinned client (kubernetes 37.x) is generated from.
K8S_VERSION = "1.37.0"
KUBECTL = os.environ.get("KUBECTL", "kubectl")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The cluster under test: an external one from GREENLIGHT_TEST_KUBECONFIG, or a fresh localcluster."""
    external = os.environ.get("GREENLIGHT_TEST_KUBECONFIG")
    if external:
        yield LocalCluster(Path(external))
        return
    with localcluster_server(
        tmp_path_factory.mktemp("localcluster"), nodes=2, runtime=not api_only()
    ) as started:
        yield started


@pytest.fixture(scope="session")
def cluster_kubeconfig(cluster: LocalCluster) -> Path:
    """Path of the kubeconfig for the cluster under test."""
    return cluster.kubeconfig


@pytest.fixture(scope="session")
def api_client(cluster_kubeconfig: Path) -> Iterator[client.ApiClient]:
    """An official-client ApiClient for the cluster under test."""
    cfg = client.Configuration()
    config.load_kube_config(str(cluster_kubeconfig), client_configuration=cfg)
    api = client.ApiClient(cfg)
    yield api
    api.close()


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    """CoreV1Api."""
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    """AppsV1Api."""
    return client.AppsV1Api(api_client)


@pytest.fixture(scope="session")
def policy(api_client: client.ApiClient) -> client.PolicyV1Api:
    """PolicyV1Api."""
    return client.PolicyV1Api(api_client)


@pytest.fixture
def namespace(core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    with contextlib.suppress(client.ApiException):
        core.delete_namespace(name)


@dataclass
class RawResponse:
    """A raw HTTP answer from the API server."""

    status: int
    headers: dict[str, str]
    data: bytes

    def json(self) -> Any:
        """The body decoded as JSON."""
        return json.loads(self.data)


@pytest.fixture(scope="session")
def raw(api_client: client.ApiClient) -> Callable[..., RawResponse]:
    """Send a request as-is (any verb, path, body, headers) with the client's credentials."""
    cfg = api_client.configuration
    pool = urllib3.PoolManager(
        cert_reqs="CERT_REQUIRED" if cfg.verify_ssl and cfg.ssl_ca_cert else "CERT_NONE",
        ca_certs=cfg.ssl_ca_cert,
        cert_file=cfg.cert_file,
        key_file=cfg.key_file,
    )
    auth = cfg.api_key.get("authorization") or cfg.api_key.get("BearerToken")

    def send(
        method: str,
        path: str,
        body: bytes | str | dict[str, Any] | list[Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
        preload: bool = True,
    ) -> Any:
        hdrs = dict(headers or {})
        if auth:
            prefix = cfg.api_key_prefix.get("authorization", "")
            hdrs.setdefault("Authorization", f"{prefix} {auth}".strip())
        if isinstance(body, dict | list):
            body = json.dumps(body)
            hdrs.setdefault("Content-Type", "application/json")
        r = pool.request(
            method,
            cfg.host + path,
            body=body,
            headers=hdrs,
            timeout=timeout,
            retries=False,
            preload_content=preload,
        )
        if not preload:
            return r
        return RawResponse(r.status, dict(r.headers), r.data)

    return send


@pytest.fixture(scope="session")
def kubectl_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A discovery cache for kubectl, so test clusters on random ports stay out of ~/.kube."""
    return tmp_path_factory.mktemp("kubectl-cache")


@pytest.fixture(scope="session")
def kubectl(
    cluster_kubeconfig: Path, kubectl_cache: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run kubectl against the cluster under test; returns the CompletedProcess."""

    def run(
        *args: str, input: str | None = None, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [
                KUBECTL,
                "--kubeconfig",
                str(cluster_kubeconfig),
                "--cache-dir",
                str(kubectl_cache),
                *args,
            ],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return run


# kube-apiserver's meta/v1 kinds carry apiVersion "v1" on the wire but live in the
# "meta" files of kubernetes-validate's schema directory.
_META_KINDS = {"Status", "APIResourceList", "APIGroupList", "APIGroup", "APIVersions", "WatchEvent"}


@functools.cache
def _validator(filename: str) -> Any:
    root = (
        importlib.resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / f"v{K8S_VERSION}-local-strict"
    )
    schema = json.loads((root / filename).read_text())
    defs = json.loads((root / "_definitions.json").read_text())
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


def validate(obj: Any) -> None:
    """Validate a response body against the kubernetes-validate (strict) schema for K8S_VERSION.

    Kinds are located the way kubernetes_validate.validate() does; meta/v1 kinds
    (Status, discovery documents) from their "-meta-v1" files.
    """
    if hasattr(obj, "to_dict"):
        obj = client.ApiClient().sanitize_for_serialization(obj)
    kind = obj["kind"]
    if kind in _META_KINDS:
        filename = f"{kind.lower()}-meta-v1.json"
    else:
        api_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", obj["apiVersion"])
        filename = f"{kind.lower()}-{api_version}.json"
    _validator(filename).validate(obj)


def api_only() -> bool:
    """Whether the suite runs localcluster without its runtime (GREENLIGHT_TEST_API_ONLY=1)."""
    return os.environ.get("GREENLIGHT_TEST_API_ONLY") == "1"


def runtime_present() -> bool:
    """Whether the runtime (controllers, kubelet) exists in this checkout and is enabled."""
    return (REPO / "localcluster" / "runtime.py").exists() and not api_only()


def wait_deleted(list_fn: Callable[..., Any], *args: Any, name: str, timeout: float = 20) -> None:
    """Block until the object ``name`` is gone, watching (not polling) from the listed resourceVersion."""
    listing = list_fn(*args, field_selector=f"metadata.name={name}")
    if not listing.items:
        return
    from kubernetes import watch

    w = watch.Watch()
    for ev in w.stream(
        list_fn,
        *args,
        field_selector=f"metadata.name={name}",
        resource_version=listing.metadata.resource_version,
        timeout_seconds=int(timeout),
    ):
        if ev["type"] == "DELETED":
            w.stop()
            return
    raise AssertionError(f"{name} still exists after {timeout}s")


def wait_for(
    list_fn: Callable[..., Any],
    *args: Any,
    name: str,
    check: Callable[[Any], bool],
    timeout: float = 30,
) -> Any:
    """Watch the object ``name`` until ``check(obj)`` holds; return it (AssertionError on timeout)."""
    from kubernetes import watch

    listing = list_fn(*args, field_selector=f"metadata.name={name}")
    for item in listing.items:
        if check(item):
            return item
    w = watch.Watch()
    for ev in w.stream(
        list_fn,
        *args,
        field_selector=f"metadata.name={name}",
        resource_version=listing.metadata.resource_version,
        timeout_seconds=int(timeout),
    ):
        if ev["type"] != "DELETED" and check(ev["object"]):
            w.stop()
            return ev["object"]
    raise AssertionError(f"{name} did not reach the expected state within {timeout}s")


def controllers_running(cluster: LocalCluster) -> bool:
    """Whether something (a runtime, or a real cluster) runs controllers and kubelets."""
    return cluster.process is None or runtime_present()
