"""The deployer's view of Kubernetes: versioned Deployments and Services of an app, and their pods."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client

from deployer import k8s
from deployer.bounds import LOG_TAIL_BYTES, cut_bytes
from deployer.envvars import container_env
from deployer.errors import Conflict, Forbidden, NotFound, Transient
from deployer.podevents import PodEventFeed
from deployer.pods import PodInfo, PodStartWait, label_version, pod_info
from deployer.validation import termination_grace_seconds

logger = logging.getLogger(__name__)

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "greenlight"
# The ReplicaSet controller deletes the pods with the lowest cost first (scale-down victims).
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
# Defaults for descriptor snapshots taken before the settings existed.
DEFAULT_STOP_DELAY = 5
DEFAULT_MAX_UNAVAILABLE = 1
# Pause before watching pods again after a watch failed (the deadline still bounds the wait).
WATCH_RETRY_SECONDS = 0.5
# The longest window of a watch of a new version's pods: each window is one request to the
# API server, and an abort is noticed at the next pod event or the window's end.
POD_WATCH_WINDOW_SECONDS = 5.0


class PodFailed(Exception):
    """A pod of the new version failed in a way waiting cannot fix (bad image, crash loop)."""


def object_name(app: str, version: int) -> str:
    """The Deployment and Service name of one version: ``<app>-v<N>``."""
    return f"{app}-v{version}"


def backend_name(namespace: str, app: str, version: int) -> str:
    """The etcd backend record of one version: ``<namespace>.<app>-v<N>``."""
    return f"{namespace}.{app}-v{version}"


def version_labels(app: str, version: int) -> dict[str, str]:
    """Labels on every object and pod of one version."""
    return {"app": app, "version": str(version), MANAGED_BY: MANAGER}


def build_deployment(descriptor: dict[str, Any], version: int) -> client.V1Deployment:
    """The Deployment of one version from a descriptor snapshot (see App.snapshot)."""
    name, namespace = descriptor["name"], descriptor["namespace"]
    labels = version_labels(name, version)
    health = descriptor["health"]
    # A value may reference a Secret's key (valueFrom.secretKeyRef): it never reaches Greenlight.
    env = container_env(descriptor.get("env", {}))
    env += [
        {"name": "APP_NAME", "value": name},
        {"name": "APP_VERSION", "value": str(version)},
        {"name": "PORT", "value": str(descriptor["container_port"])},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    container: dict[str, Any] = {
        "name": name,
        "image": descriptor["image"],
        "ports": [{"containerPort": descriptor["container_port"], "name": "http"}],
        "env": env,
        "resources": {k: v for k, v in descriptor.get("resources", {}).items() if v},
    }
    if health.get("enabled", True):
        # Readiness keeps Endpoints (and so the load balancer's servers) to healthy pods.
        container["readinessProbe"] = {
            "httpGet": {"path": health["path"], "port": int(health["port"])},
            "periodSeconds": 1,
            "timeoutSeconds": max(1, int(health.get("timeout", 2))),
            "failureThreshold": 2,
        }
    extra = dict(descriptor.get("extra_pod_spec", {}))
    stop_delay = int(descriptor.get("stop_delay_seconds", DEFAULT_STOP_DELAY))
    if stop_delay:
        # Endpoints and load balancers take the pod out of rotation at its deletionTimestamp;
        # the delay keeps it serving until they have, and only then comes SIGTERM.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": stop_delay}}}
    pod_spec: dict[str, Any] = {
        **extra,
        "terminationGracePeriodSeconds": termination_grace_seconds(stop_delay, extra),
        "containers": [container],
    }
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": object_name(name, version), "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": int(descriptor["replicas"]),
            "selector": {"matchLabels": {"app": name, "version": str(version)}},
            "strategy": {"type": "RollingUpdate"},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }
    return client.V1Deployment.from_dict(body)


def build_service(descriptor: dict[str, Any], version: int) -> client.V1Service:
    """The ClusterIP Service of one version."""
    name, namespace = descriptor["name"], descriptor["namespace"]
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": object_name(name, version),
            "namespace": namespace,
            "labels": version_labels(name, version),
        },
        "spec": {
            "selector": {"app": name, "version": str(version)},
            "ports": [
                {
                    "name": "http",
                    "port": int(descriptor["container_port"]),
                    "targetPort": int(descriptor["container_port"]),
                }
            ],
        },
    }
    return client.V1Service.from_dict(body)


def build_disruption_budget(
    descriptor: dict[str, Any], version: int
) -> client.V1PodDisruptionBudget:
    """The PodDisruptionBudget of one version: drains take its pods down a few at a time."""
    name, namespace = descriptor["name"], descriptor["namespace"]
    body = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": object_name(name, version),
            "namespace": namespace,
            "labels": version_labels(name, version),
        },
        "spec": {
            "maxUnavailable": int(descriptor.get("max_unavailable", DEFAULT_MAX_UNAVAILABLE)),
            "selector": {"matchLabels": {"app": name, "version": str(version)}},
        },
    }
    return client.V1PodDisruptionBudget.from_dict(body)


def _create_or_replace(
    create: Callable[..., Any], replace: Callable[..., Any], namespace: str, body: Any
) -> None:
    """Create ``body`` in ``namespace``, or replace the object of that name that exists."""
    try:
        k8s.call(create, namespace, body)
    except Conflict:
        k8s.call(replace, body.metadata.name, namespace, body)


class KubeCluster:
    """Versioned objects of apps in a Kubernetes cluster, through deployer.k8s."""

    def __init__(
        self,
        core: client.CoreV1Api | None = None,
        apps: client.AppsV1Api | None = None,
        policy: client.PolicyV1Api | None = None,
    ) -> None:
        self.core = core or k8s.core_v1()
        self.apps = apps or k8s.apps_v1()
        self.policy = policy or k8s.policy_v1()

    def versions(self, namespace: str, app: str) -> list[int]:
        """Versions of ``app`` that have a Deployment in the cluster, ascending."""
        found = k8s.call(
            self.apps.list_namespaced_deployment,
            namespace,
            label_selector=f"app={app},{MANAGED_BY}={MANAGER}",
        )
        versions = set()
        for item in found.items:
            raw = (item.metadata.labels or {}).get("version", "")
            if raw.isdigit():
                versions.add(int(raw))
        return sorted(versions)

    def version_exists(self, namespace: str, app: str, version: int) -> bool:
        """True when the version's Deployment exists and is not being deleted."""
        try:
            found = k8s.call(
                self.apps.read_namespaced_deployment, object_name(app, version), namespace
            )
        except NotFound:
            return False
        return found.metadata.deletion_timestamp is None

    def create_version(self, descriptor: dict[str, Any], version: int) -> None:
        """Create the version's budget, Deployment and Service (an existing one is replaced)."""
        namespace = descriptor["namespace"]
        deployment = build_deployment(descriptor, version)
        service = build_service(descriptor, version)
        budget = build_disruption_budget(descriptor, version)
        # The budget first: no pod of the version ever runs unprotected.
        _create_or_replace(
            self.policy.create_namespaced_pod_disruption_budget,
            self.policy.replace_namespaced_pod_disruption_budget,
            namespace,
            budget,
        )
        _create_or_replace(
            self.apps.create_namespaced_deployment,
            self.apps.replace_namespaced_deployment,
            namespace,
            deployment,
        )
        # An existing Service has the same selector and port: it is what we would create.
        with contextlib.suppress(Conflict):
            k8s.call(self.core.create_namespaced_service, namespace, service)

    def delete_version(self, namespace: str, app: str, version: int) -> None:
        """Delete the version's Deployment (its pods with it), Service and budget; absent is fine."""
        name = object_name(app, version)
        options = client.V1DeleteOptions(propagation_policy="Background")
        for delete in (
            self.apps.delete_namespaced_deployment,
            self.core.delete_namespaced_service,
            self.policy.delete_namespaced_pod_disruption_budget,
        ):
            with contextlib.suppress(NotFound):
                k8s.call(delete, name, namespace, body=options)

    def scale(self, namespace: str, app: str, version: int, replicas: int) -> None:
        """Set the version's replicas."""
        k8s.call(
            self.apps.patch_namespaced_deployment_scale,
            object_name(app, version),
            namespace,
            {"spec": {"replicas": replicas}},
        )

    def cordoned_nodes(self) -> set[str]:
        """Names of the nodes marked unschedulable (those being emptied)."""
        found = k8s.call(self.core.list_node)
        return {n.metadata.name for n in found.items if n.spec and n.spec.unschedulable}

    def set_deletion_cost(self, namespace: str, costs: dict[str, int | None]) -> None:
        """Annotate pods with their pod-deletion-cost (None removes it); gone pods are skipped."""
        for name, cost in sorted(costs.items()):
            value = None if cost is None else str(cost)
            with contextlib.suppress(NotFound):
                k8s.call(
                    self.core.patch_namespaced_pod,
                    name,
                    namespace,
                    {"metadata": {"annotations": {DELETION_COST: value}}},
                )

    def wait_pods_gone(
        self, namespace: str, app: str, version: int, keep: int, timeout: float
    ) -> list[PodInfo]:
        """Watch until at most ``keep`` pods of the version are not being deleted; return them.

        Returns what is left at the timeout too: the caller decides what that means.
        """
        deadline = time.monotonic() + timeout
        selector = f"app={app},version={version},{MANAGED_BY}={MANAGER}"
        listed = k8s.call(self.core.list_namespaced_pod, namespace, label_selector=selector)
        pods = {p.metadata.name: pod_info(p) for p in listed.items}
        resource_version = listed.metadata.resource_version

        def staying() -> list[PodInfo]:
            return sorted((p for p in pods.values() if not p.deleting), key=lambda p: p.name)

        while len(staying()) > keep:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for event in self._watch(namespace, selector, resource_version, min(1.0, remaining)):
                obj = event["object"]
                resource_version = obj.metadata.resource_version or resource_version
                if event["type"] == "DELETED":
                    pods.pop(obj.metadata.name, None)
                else:
                    pods[obj.metadata.name] = pod_info(obj)
                if len(staying()) <= keep:
                    break
        return staying()

    def pods(self, namespace: str, app: str, version: int) -> list[PodInfo]:
        """The version's pods."""
        found = k8s.call(
            self.core.list_namespaced_pod,
            namespace,
            label_selector=f"app={app},version={version},{MANAGED_BY}={MANAGER}",
        )
        return [pod_info(pod) for pod in found.items]

    def managed_pods(self, namespace: str) -> list[PodInfo]:
        """Every Greenlight-managed pod in ``namespace``."""
        found = k8s.call(
            self.core.list_namespaced_pod, namespace, label_selector=f"{MANAGED_BY}={MANAGER}"
        )
        return [pod_info(pod) for pod in found.items]

    def ready_pod_counts(self, namespace: str) -> Counter[tuple[str, int | None]]:
        """Ready Greenlight-managed pods in ``namespace`` by (app, version) label.

        For list pages: the pods are read as JSON, without the client's models, whose
        construction costs about as much per pod as the rest of a page per app.
        """
        response = k8s.call(
            self.core.list_namespaced_pod,
            namespace,
            label_selector=f"{MANAGED_BY}={MANAGER}",
            _preload_content=False,
        )
        try:
            items = json.loads(response.data).get("items") or []
        except ValueError as exc:
            raise Transient(f"the pod list of {namespace} is not JSON: {exc}") from exc
        finally:
            response.release_conn()
        counts: Counter[tuple[str, int | None]] = Counter()
        for item in items:
            labels = (item.get("metadata") or {}).get("labels") or {}
            conditions = (item.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
                counts[labels.get("app", ""), label_version(labels)] += 1
        return counts

    def pod_log_tail(
        self, namespace: str, pod: str, lines: int = 10, limit: int = LOG_TAIL_BYTES
    ) -> str:
        """The last lines a pod's container printed, at most ``limit`` bytes ("" when unavailable).

        One byte more than ``limit`` is asked for, to tell a cut log from one of exactly
        that size. The API server stops after ``limitBytes``, and the body is read only
        that far as well, so a server that ignores the limit cannot make the worker hold
        a huge log.
        """
        try:
            response = k8s.call(
                self.core.read_namespaced_pod_log,
                pod,
                namespace,
                tail_lines=lines,
                limit_bytes=limit + 1,
                _preload_content=False,
                _request_timeout=5,
            )
        except Forbidden as exc:  # a missing permission is said, not just an empty tail
            logger.warning("cannot read the log of pod %s/%s: %s", namespace, pod, exc)
            return ""
        except k8s.KubeError:
            return ""
        try:
            data = response.read(limit + 1)
        except Exception:
            logger.info("could not read the log of pod %s/%s", namespace, pod, exc_info=True)
            return ""
        finally:
            response.release_conn()
        return cut_bytes(data, limit)

    def wait_pods_started(self, wait: PodStartWait) -> list[PodInfo]:
        """Watch the version's pods until ``wait.replicas`` of them run; raise PodFailed or TimeoutError."""
        feed = PodEventFeed(self.core, wait.namespace, f"{object_name(wait.app, wait.version)}-")
        if wait.on_event is not None:
            feed.start()

        def relay() -> None:
            for kind, text in feed.drain():
                if wait.on_event is not None:
                    wait.on_event(kind, text)

        selector = f"app={wait.app},version={wait.version},{MANAGED_BY}={MANAGER}"
        try:
            return self._wait_started(wait, selector, relay)
        finally:
            feed.stop()
            relay()

    def _wait_started(
        self, wait: PodStartWait, selector: str, relay: Callable[[], None]
    ) -> list[PodInfo]:
        """Watch the pods of ``selector`` until ``wait.replicas`` run; ``relay()`` passes events on."""
        namespace, replicas, timeout = wait.namespace, wait.replicas, wait.timeout
        on_change, cancelled = wait.on_change, wait.cancelled
        deadline = time.monotonic() + timeout
        listed = k8s.call(self.core.list_namespaced_pod, namespace, label_selector=selector)
        pods: dict[str, PodInfo] = {}
        seen: dict[str, str] = {}

        def update(info: PodInfo, deleted: bool = False) -> None:
            if deleted:
                pods.pop(info.name, None)
                return
            pods[info.name] = info
            state = info.describe()
            if seen.get(info.name) != state:
                seen[info.name] = state
                on_change(info)
            if info.fatal:
                raise PodFailed(f"pod {info.name}: {info.fatal}")

        for pod in listed.items:
            update(pod_info(pod))
        resource_version = listed.metadata.resource_version
        failure: Transient | None = None
        while True:
            live = [p for p in pods.values() if p.started and not p.deleting]
            if len(live) >= replicas:
                return sorted(live, key=lambda p: p.name)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if failure is not None:
                    raise failure
                raise TimeoutError(f"{len(live)} of {replicas} pods running after {timeout:.0f}s")
            if cancelled():
                return sorted(live, key=lambda p: p.name)
            relay()
            try:
                for event in self._watch(
                    namespace, selector, resource_version, min(POD_WATCH_WINDOW_SECONDS, remaining)
                ):
                    obj = event["object"]
                    resource_version = obj.metadata.resource_version or resource_version
                    relay()
                    update(pod_info(obj), deleted=event["type"] == "DELETED")
                    live = [p for p in pods.values() if p.started and not p.deleting]
                    if len(live) >= replicas or cancelled():
                        break
                failure = None
            except Transient as exc:
                # A watch window that timed out or lost its connection (a busy API server)
                # says nothing about the pods: watch again until the deadline, which then
                # names this error if the API never answered again.
                logger.warning("watch of %s pods failed, watching again: %s", selector, exc)
                failure = exc
                time.sleep(min(WATCH_RETRY_SECONDS, max(0.0, deadline - time.monotonic())))

    def _watch(
        self, namespace: str, selector: str, resource_version: str | None, seconds: float
    ) -> Iterator[dict[str, Any]]:
        yield from k8s.stream(
            self.core.list_namespaced_pod,
            namespace,
            label_selector=selector,
            resource_version=resource_version,
            timeout_seconds=max(1, round(seconds)),
            _request_timeout=seconds + 5,
        )
