"""Service traffic mode: the switch moves the selector of a stable Service named after the app.

An app with ``traffic: service`` keeps a Service ``<app>`` (labels ``app``, managed-by
Greenlight, role ``stable``) beside its versioned ones. Created with the app's first
deploy in this mode, it selects ``app=<app>`` only (or the live version, when an app
switches modes while one runs); the switch then patches ``version=<N>`` into its selector
once every pod of N is healthy, as Argo Rollouts does with its stable Service. Whatever
routes to the Service (kube-proxy, an Ingress controller, a cloud load balancer, and
Greenlight's own HAProxy, whose backend in this mode has the ClusterIP as its one server)
follows.

Zero loss: the old version's pods stop only after the switch has taken effect. The
switch waits until the Service's EndpointSlices list exactly the new version's pods as
ready, then until the new version answers through the ClusterIP on enough new
connections in a row that a proxy still using the old endpoints would have shown it.
Only then does the workflow go on (HAProxy's switch, verification, retirement); retired
pods keep serving their preStop delay and finish in-flight requests after SIGTERM.
A rollback, or a failure of the switch itself, patches the selector back and waits until
the endpoints no longer list the new pods before they are deleted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubernetes import client

from deployer import k8s
from deployer.cluster import MANAGED_BY, MANAGER, object_name
from deployer.collaborators import StopDeployment
from deployer.errors import Conflict, NotFound, Transient
from deployer.health import judge
from deployer.models import Deployment

if TYPE_CHECKING:
    from deployer.workflow import Workflow

SERVICE = "service"
ROLE_LABEL = "greenlight.dev/role"
STABLE = "stable"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# New connections in a row, per new pod, that must reach the new version through the ClusterIP.
ANSWERS_PER_POD = 2


def is_service_mode(descriptor: dict[str, Any]) -> bool:
    """True when the descriptor snapshot switches traffic through the stable Service."""
    return descriptor.get("traffic") == SERVICE


def stable_selector(app: str, version: int | None) -> dict[str, str]:
    """The stable Service's selector: the app's pods, of ``version`` once one was switched to."""
    selector = {"app": app, MANAGED_BY: MANAGER}
    if version is not None:
        selector["version"] = str(version)
    return selector


def stable_ports(descriptor: dict[str, Any]) -> list[dict[str, Any]]:
    """The container port, and the health port when it is another one (HAProxy checks it)."""
    port = int(descriptor["container_port"])
    ports = [{"name": "http", "port": port, "targetPort": port, "protocol": "TCP"}]
    health = descriptor.get("health") or {}
    health_port = int(health.get("port") or port)
    if health.get("enabled", True) and health_port != port:
        ports.append(
            {"name": "health", "port": health_port, "targetPort": health_port, "protocol": "TCP"}
        )
    return ports


def build_stable_service(descriptor: dict[str, Any], version: int | None) -> client.V1Service:
    """The stable Service of an app."""
    name = descriptor["name"]
    return client.V1Service.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": descriptor["namespace"],
                "labels": {"app": name, MANAGED_BY: MANAGER, ROLE_LABEL: STABLE},
            },
            "spec": {
                "type": "ClusterIP",
                "selector": stable_selector(name, version),
                "ports": stable_ports(descriptor),
            },
        }
    )


def _ours(service: client.V1Service) -> bool:
    labels = service.metadata.labels or {}
    return labels.get(MANAGED_BY) == MANAGER and labels.get(ROLE_LABEL) == STABLE


@dataclass
class ServiceTraffic:
    """The stable Service of one app, as one deployment run moves its selector."""

    descriptor: dict[str, Any]
    core: client.CoreV1Api = field(default_factory=k8s.core_v1)
    discovery: client.DiscoveryV1Api = field(
        default_factory=lambda: client.DiscoveryV1Api(k8s.api_client())
    )
    cluster_ip: str = ""
    # Set just before the selector patch: (version selected before it, the one patched in).
    flipped: tuple[int | None, int] | None = None

    @property
    def namespace(self) -> str:
        """The app's namespace."""
        return str(self.descriptor["namespace"])

    @property
    def name(self) -> str:
        """The app's name, which the stable Service has too."""
        return str(self.descriptor["name"])

    @property
    def port(self) -> int:
        """The Service port of the app's traffic (its container port)."""
        return int(self.descriptor["container_port"])

    def read(self) -> client.V1Service | None:
        """The Service named after the app, or None."""
        try:
            return k8s.call(self.core.read_namespaced_service, self.name, self.namespace)
        except NotFound:
            return None

    def ensure(self, live_version: int | None) -> str:
        """Create the stable Service if missing (selecting ``live_version``); its ClusterIP.

        StopDeployment when a Service of that name exists that Greenlight does not manage.
        """
        existing = self.read()
        if existing is None:
            body = build_stable_service(self.descriptor, live_version)
            try:
                existing = k8s.call(self.core.create_namespaced_service, self.namespace, body)
            except Conflict:
                existing = self.read()
        if existing is None:
            raise StopDeployment(f"the Service {self.namespace}/{self.name} could not be created")
        if not _ours(existing):
            raise StopDeployment(
                f"a Service named {self.namespace}/{self.name} exists and is not Greenlight's "
                "stable Service; delete or rename it, or use traffic mode haproxy"
            )
        wanted = stable_ports(self.descriptor)
        have = [
            {"name": p.name, "port": p.port, "targetPort": p.target_port, "protocol": p.protocol}
            for p in existing.spec.ports or []
        ]
        if have != wanted:
            # The container or health port changed since the Service was made.
            existing = k8s.call(
                self.core.patch_namespaced_service,
                self.name,
                self.namespace,
                [{"op": "replace", "path": "/spec/ports", "value": wanted}],
            )
        self.cluster_ip = str(existing.spec.cluster_ip or "")
        if not self.cluster_ip or self.cluster_ip == "None":
            raise StopDeployment(f"the Service {self.namespace}/{self.name} has no ClusterIP")
        return self.cluster_ip

    def selected_version(self) -> int | None:
        """The version in the stable Service's selector now (None: none, or no Service)."""
        service = self.read()
        raw = ((service.spec.selector or {}) if service else {}).get("version", "")
        return int(raw) if str(raw).isdigit() else None

    def point(self, version: int | None) -> None:
        """Patch the selector to ``version`` (None: the app's pods of every version)."""
        k8s.call(
            self.core.patch_namespaced_service,
            self.name,
            self.namespace,
            [
                {
                    "op": "replace",
                    "path": "/spec/selector",
                    "value": stable_selector(self.name, version),
                }
            ],
        )

    def servers(self) -> list[dict[str, Any]]:
        """The load balancer's one server in this mode: the stable Service's ClusterIP."""
        if not self.cluster_ip:
            self.ensure(None)
        return [{"name": self.name, "address": self.cluster_ip, "port": self.port}]

    def wait_endpoints(
        self,
        done: Callable[[set[str]], bool],
        timeout: float,
        cancelled: Callable[[], bool],
        service: str = "",
    ) -> set[str]:
        """Watch the EndpointSlices of ``service`` (default: the stable one) until
        ``done(ready addresses)``; that set.

        TimeoutError, with the last set in its message, at the deadline or on ``cancelled()``.
        """
        deadline = time.monotonic() + timeout
        selector = f"{SERVICE_NAME_LABEL}={service or self.name}"
        slices: dict[str, client.V1EndpointSlice] = {}
        ready: set[str] = set()
        version = ""
        while True:
            if not version:
                listed = k8s.call(
                    self.discovery.list_namespaced_endpoint_slice,
                    self.namespace,
                    label_selector=selector,
                )
                slices = {s.metadata.name: s for s in listed.items}
                version = str(listed.metadata.resource_version or "")
                ready = _ready(slices.values())
            if done(ready):
                return ready
            left = deadline - time.monotonic()
            if left <= 0 or cancelled():
                raise TimeoutError(f"the endpoints are {', '.join(sorted(ready)) or 'none'}")
            try:
                for event in k8s.stream(
                    self.discovery.list_namespaced_endpoint_slice,
                    self.namespace,
                    label_selector=selector,
                    resource_version=version,
                    timeout_seconds=max(1, round(min(left, 5.0))),
                    _request_timeout=min(left, 5.0) + 5,
                ):
                    item = event["object"]
                    version = str(item.metadata.resource_version or version)
                    if event["type"] == "DELETED":
                        slices.pop(item.metadata.name, None)
                    else:
                        slices[item.metadata.name] = item
                    ready = _ready(slices.values())
                    if done(ready) or cancelled() or time.monotonic() >= deadline:
                        break
            except Transient:
                version = ""  # the watch ended badly (expired, API gone): list again
                time.sleep(0.05)

    def delete(self) -> bool:
        """Delete the stable Service if it is Greenlight's; True when one was deleted."""
        existing = self.read()
        if existing is None or not _ours(existing):
            return False
        with contextlib.suppress(NotFound):
            k8s.call(self.core.delete_namespaced_service, self.name, self.namespace)
        return True


def _ready(slices: Iterable[client.V1EndpointSlice]) -> set[str]:
    ready = set()
    for item in slices:
        for endpoint in item.endpoints or []:
            conditions = endpoint.conditions
            if conditions is None or conditions.ready is not False:
                ready.update(endpoint.addresses or [])
    return ready


# Workflow hooks ----------------------------------------------------------------------


def of(workflow: Workflow) -> ServiceTraffic | None:
    """The run's ServiceTraffic in service mode (made once per run), else None."""
    if not is_service_mode(workflow.descriptor):
        return None
    if workflow.service_traffic is None:
        workflow.service_traffic = ServiceTraffic(workflow.descriptor)
    return workflow.service_traffic


def prepare(workflow: Workflow) -> None:
    """Create step: make sure the stable Service exists (selecting the live version, if any)."""
    traffic = of(workflow)
    if traffic is None:
        return
    ip = traffic.ensure(workflow.previous_version)
    selected = traffic.selected_version()
    workflow.log(
        f"Stable Service {traffic.name} at {ip}:{traffic.port} selects "
        f"{f'v{selected}' if selected else 'every version of the app'}; the switch moves it.",
        step="create",
    )


def switch(workflow: Workflow) -> None:
    """Point the stable Service at the run's version and wait until that has taken effect.

    StopDeployment when the endpoints or the ClusterIP do not show the new version only.
    """
    traffic = of(workflow)
    if traffic is None:
        return
    version = workflow.deployment.version
    assert version is not None
    traffic.ensure(workflow.previous_version)
    before = traffic.selected_version()
    pods = {p.ip for p in workflow.pods if p.ip}
    # Healthy for Greenlight is not yet Ready for Kubernetes (the readiness probe's next
    # period): selected before that, the Service would have no endpoints for a moment.
    try:
        traffic.wait_endpoints(
            lambda ready: pods <= ready,
            workflow.timing.apply_timeout,
            workflow.abort_requested,
            service=object_name(traffic.name, version),
        )
    except TimeoutError as exc:
        workflow.check_abort()
        raise StopDeployment(
            f"v{version}'s pods did not all become Ready endpoints of Service "
            f"{object_name(traffic.name, version)} within {workflow.timing.apply_timeout:.0f}s "
            f"({exc})"
        ) from exc
    traffic.flipped = (before, version)  # before the patch: its outcome is unknown if it raises
    started = time.monotonic()
    traffic.point(version)
    workflow.log(
        f"Service {traffic.name} selects v{version} (was "
        f"{f'v{before}' if before else 'every version'}); waiting until its endpoints are "
        f"v{version}'s {len(pods)} pods only.",
        step="switch",
    )
    try:
        traffic.wait_endpoints(
            lambda ready: ready == pods,
            workflow.timing.apply_timeout,
            workflow.abort_requested,
        )
    except TimeoutError as exc:
        workflow.check_abort()
        raise StopDeployment(
            f"the endpoints of Service {traffic.name} did not become v{version}'s pods within "
            f"{workflow.timing.apply_timeout:.0f}s ({exc})"
        ) from exc
    listed = time.monotonic()
    last = verify_cluster_ip(workflow, traffic, ANSWERS_PER_POD * max(1, len(pods)))
    workflow.log(
        f"v{version} answers through Service {traffic.name} at {traffic.cluster_ip}:"
        f"{traffic.port} ({last}): endpoints after {(listed - started) * 1000:.0f} ms, "
        f"answers after {(time.monotonic() - started) * 1000:.0f} ms.",
        step="switch",
    )


def verify_cluster_ip(workflow: Workflow, traffic: ServiceTraffic, needed: int) -> str:
    """Ask the ClusterIP on new connections until ``needed`` answers in a row are the version's."""
    version = str(workflow.deployment.version)
    health = workflow.descriptor["health"]
    path = str(health["path"]) if health.get("enabled", True) else "/"
    address = f"http://{traffic.cluster_ip}:{traffic.port}"
    deadline = time.monotonic() + workflow.timing.verify_timeout
    in_a_row, last = 0, ""
    while in_a_row < needed:
        try:
            status, body = workflow.health.through_lb(address, workflow.hostname, path)
            healthy, detail, answered = judge(status, body, str(health.get("type", "")))
            ok = (healthy or not health.get("enabled", True)) and answered in ("", version)
            last = f"{detail}, version {answered or '?'}"
        except OSError as exc:
            ok, last = False, f"no answer: {exc}"
        in_a_row = in_a_row + 1 if ok else 0
        if in_a_row >= needed:
            break
        if time.monotonic() >= deadline:
            raise StopDeployment(
                f"v{version} did not answer through Service {traffic.name} at {address} "
                f"{needed} times in a row within {workflow.timing.verify_timeout:.0f}s "
                f"(last answer: {last})"
            )
        if not ok:
            workflow.check_abort()
            time.sleep(0.02)
    return last


def restore(workflow: Workflow) -> None:
    """Rollback: point the stable Service back where it was before this run's switch.

    After a lost worker (nothing noted in this process) the Service is read: when it
    selects the run's version, it goes back to the deployment's previous one. Waits
    (bounded) until its endpoints no longer list the run's pods, so that deleting them
    takes nothing away from the Service.
    """
    traffic = of(workflow)
    if traffic is None:
        return
    if traffic.flipped is not None:
        before, version = traffic.flipped
    else:
        run_version = workflow.deployment.version
        if run_version is None or traffic.selected_version() != run_version:
            return  # the selector never moved to this run's version
        before, version = workflow.previous_version, run_version
    traffic.point(before)
    traffic.flipped = None
    workflow.log(
        f"Service {traffic.name} selects {f'v{before}' if before else 'every version'} again.",
        level="warning",
        step="rollback",
    )
    if before is None:
        return  # no earlier version: the run's pods stay selected until they are deleted
    pods = workflow.pods or workflow.cluster.pods(traffic.namespace, traffic.name, version)
    leaving = {p.ip for p in pods if p.ip}
    try:
        ready = traffic.wait_endpoints(
            lambda ready: bool(ready) and not ready & leaving,
            workflow.timing.apply_timeout,
            lambda: False,
        )
    except TimeoutError as exc:
        workflow.log(
            f"The endpoints of Service {traffic.name} still list v{version}'s pods after "
            f"{workflow.timing.apply_timeout:.0f}s ({exc}).",
            level="error",
            step="rollback",
        )
        return
    workflow.log(
        f"Service {traffic.name}'s endpoints are v{before}'s {len(ready)} pods again.",
        step="rollback",
    )


def backend_options(workflow: Workflow) -> dict[str, Any]:
    """What a service-mode backend record carries besides the workflow's options."""
    return {"traffic": SERVICE} if of(workflow) is not None else {}


def forget(workflow: Workflow) -> None:
    """Undeploy: delete the app's stable Service, if it ever deployed in service mode."""
    used = is_service_mode(workflow.descriptor) or (
        Deployment.objects.filter(app_id=workflow.deployment.app_id, descriptor__traffic=SERVICE)
        .exclude(kind=Deployment.Kind.UNDEPLOY)
        .exists()
    )
    if not used:
        return
    traffic = ServiceTraffic(workflow.descriptor)
    if traffic.delete():
        workflow.log(f"Deleted the stable Service {traffic.name}.", step="objects")
