"""Preview: a new version answers at its own hostname, and by header, before it takes the traffic.

At the end of the deploy's health step the version's preview is written to etcd
(``previews/<backend record>``, deployer.etcdstore): every load balancer then routes
``<app>--v<N>.<domain of the frontend>`` and, on the app's frontend hostname, requests
carrying ``X-Greenlight-Version: <N>`` to that backend record, through two map entries
applied with HAProxy's runtime API (deployer.lbconfig.preview_routes), without a reload.

In traffic mode haproxy the preview points at the version's own backend record (its pods).
In traffic mode service that record's one server is the app's stable Service, which
selects the live version until the switch, so the preview gets a backend record of its
own, the *preview backend* ``<namespace>.<app>-v<N>.preview`` (lbconfig.preview_backend),
whose one server is the version's Service ``<app>-v<N>`` (its ClusterIP and the container
port), checked like every server. It is written before the preview that points at it;
being a new backend it costs each load balancer a reload, while the version is checked,
never at the switch (the switch waits only for its own frontend and backend records).

The preview, and a preview backend, go with the version's backend record, in the same
etcd transaction (EtcdStore.delete_backend, delete_route), whichever way the version is
retired: retirement, a rollback, a deferred retirement, undeploy.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.conf import settings

from deployer import k8s, traffic
from deployer.cluster import object_name
from deployer.collaborators import backend_name
from deployer.errors import BackendError
from deployer.etcdstore import EtcdStore
from deployer.lbconfig import PREVIEW_HEADER, is_dns_name, preview_backend
from deployer.models import Deployment

if TYPE_CHECKING:
    from deployer.workflow import Workflow

logger = logging.getLogger(__name__)

__all__ = [
    "PREVIEW_HEADER",
    "preview_hostname",
    "preview_url",
    "publish",
    "published_url",
]

# How long the health step waits for the load balancers to serve the preview; it goes on
# without (the preview is announced as written) rather than hold the deploy up.
APPLY_WAIT_SECONDS = 5.0


def preview_hostname(app: str, frontend: str, version: int) -> str | None:
    """``<app>--v<N>`` under the frontend's domain (the frontend less its first label).

    A one-label frontend is the domain itself. None when the result is no DNS name (a
    label longer than 63 characters, a name longer than 253).
    """
    frontend = frontend.lower().rstrip(".")
    _first, dot, domain = frontend.partition(".")
    hostname = f"{app.lower()}--v{version}.{domain if dot else frontend}"
    return hostname if is_dns_name(hostname) else None


def lb_port_suffix() -> str:
    """``:<port>`` of the load balancer's URL (settings.LB_URL) unless it is 80."""
    port = urlsplit(settings.LB_URL).port
    return f":{port}" if port and port != 80 else ""


def preview_url(deployment: Deployment, port_suffix: str | None = None) -> str | None:
    """The URL a deploy's version is previewed at (whether or not it is published now).

    None for another kind of run, before the version is picked, or when the hostname
    would be no DNS name. ``port_suffix`` defaults to the load
    balancer's (lb_port_suffix), as the workflow's last log line has it.
    """
    descriptor = deployment.descriptor or {}
    if deployment.kind != Deployment.Kind.DEPLOY or deployment.version is None:
        return None
    hostname = preview_hostname(
        str(descriptor.get("name", "")), str(descriptor.get("frontend", "")), deployment.version
    )
    if hostname is None:
        return None
    suffix = lb_port_suffix() if port_suffix is None else port_suffix
    return f"http://{hostname}{suffix}/"


def published_url(deployment: Deployment) -> str | None:
    """preview_url while the version's preview is in etcd (it is not retired), else None.

    Reads etcd only for a deploy whose health step passed and that was not rolled back;
    None, logged, when etcd does not answer.
    """
    url = preview_url(deployment)
    health = (deployment.steps or {}).get("health") or {}
    if url is None or health.get("state") != "done":
        return None
    if deployment.status in (Deployment.Status.FAILED, Deployment.Status.ABORTED):
        return None
    descriptor = deployment.descriptor
    assert deployment.version is not None
    backend = backend_name(
        str(descriptor["namespace"]), str(descriptor["name"]), deployment.version
    )
    if traffic.is_service_mode(descriptor):
        backend = preview_backend(backend)
    try:
        with EtcdStore() as store:
            record = store.get_preview(backend)
    except (BackendError, ValueError) as exc:
        logger.warning("could not read the preview of %s: %s", backend, exc)
        return None
    return url if record is not None else None


def publish(workflow: Workflow) -> None:
    """Write the version's preview and say in the log where it answers; never fails the deploy.

    Waits up to APPLY_WAIT_SECONDS for every live load balancer to serve it. Its log line
    is stored with the next write (Workflow.deferred), as the health step's end is.
    """
    with workflow.deferred():
        _publish(workflow)


def previewed_backend(workflow: Workflow) -> str:
    """The backend record the run's preview points at (and is keyed by in etcd).

    The version's own record in traffic mode haproxy, its preview backend in mode service.
    """
    backend = workflow.new_backend()
    return preview_backend(backend) if traffic.is_service_mode(workflow.descriptor) else backend


def write_preview_backend(workflow: Workflow) -> str:
    """Traffic mode service: write the preview backend, the version's Service as its one server.

    Returns its name. BackendError when the Service cannot be read or has no ClusterIP.
    """
    version = workflow.deployment.version
    assert version is not None
    service_traffic = traffic.of(workflow)
    assert service_traffic is not None
    name = object_name(workflow.name, version)
    service = k8s.call(service_traffic.core.read_namespaced_service, name, workflow.namespace)
    address = str(service.spec.cluster_ip or "")
    if not address or address == "None":
        raise BackendError(f"its Service {workflow.namespace}/{name} has no ClusterIP")
    port = int(workflow.descriptor["container_port"])
    options = workflow.backend_options()
    # The version's Service carries the container port only: a health port of its own is
    # not reachable through it, so such a check is a connection check of that port.
    if options.get("check_port") not in (None, port):
        options.pop("check_port")
        options.pop("check_path", None)
    options["preview"] = True
    backend = previewed_backend(workflow)
    workflow.lb.put_backend(
        backend, {"servers": [{"name": name, "address": address, "port": port}], **options}
    )
    return backend


def _publish(workflow: Workflow) -> None:
    version = workflow.deployment.version
    assert version is not None
    hostname = preview_hostname(workflow.name, workflow.hostname, version)
    if hostname is None:
        workflow.log(
            f"No preview of v{version}: {workflow.name}--v{version} under the domain of "
            f"{workflow.hostname} is not a DNS name (a label of at most 63 characters, "
            "253 in all).",
            level="warning",
            step="health",
        )
        return
    backend = workflow.new_backend()
    records: tuple[str, ...] = (f"previews/{backend}",)
    record = {
        "hostname": hostname,
        "frontend": workflow.hostname.lower(),
        "version": version,
        "app": workflow.name,
        "namespace": workflow.namespace,
    }
    url = f"http://{hostname}{workflow.lb_port_suffix}/"
    header = f"{PREVIEW_HEADER}: {version}"
    served_by = ""
    try:
        if traffic.is_service_mode(workflow.descriptor):
            # Before the preview: a preview of a backend not yet rendered is left out.
            backend = write_preview_backend(workflow)
            records = (f"backends/{backend}", f"previews/{backend}")
            served_by = (
                f" through preview backend {backend} to Service "
                f"{object_name(workflow.name, version)}"
            )
        revision = workflow.lb.put_preview(backend, record)
        waited = workflow.lb.wait_applied(
            revision,
            min(APPLY_WAIT_SECONDS, workflow.timing.apply_timeout),
            cancelled=workflow.abort_requested,
            records=records,
        )
    except BackendError as exc:
        logger.warning("deployment #%s: preview not written", workflow.deployment.pk, exc_info=True)
        workflow.log(f"No preview of v{version}: {exc}", level="warning", step="health")
        return
    refused = [
        f"{balancer.id}: {reason}"
        for balancer in waited.balancers
        for key in records
        if (reason := ((balancer.applied or {}).get("skipped") or {}).get(key))
    ]
    if refused:
        workflow.log(
            f"Preview of v{version} at {url} left out by {'; '.join(refused)}.",
            level="warning",
            step="health",
        )
    elif waited:
        workflow.log(
            f"Preview of v{version} at {url} (and at http://{workflow.hostname}"
            f"{workflow.lb_port_suffix}/ with header {header}){served_by}, served by every "
            f"load balancer from etcd revision {revision}; it stays until v{version} is "
            "retired.",
            step="health",
        )
    else:
        workflow.log(
            f"Preview of v{version} at {url} (and with header {header}){served_by} written "
            f"at etcd revision {revision}; not yet served by every load balancer "
            f"({waited.problem}).",
            level="warning",
            step="health",
        )


def withdraw(workflow: Workflow) -> None:
    """Rollback: delete the run's preview before its pods go; never raises for etcd.

    Before the switch it waits until no load balancer carries requests to it
    (Workflow.wait_drained); after the switch the rollback's own drain wait, which follows
    the swap back, covers it. Nothing to do when no preview was written. A preview backend
    (traffic mode service) goes with the version's backend record.
    """
    version = workflow.deployment.version
    health = (workflow.deployment.steps or {}).get("health") or {}
    if version is None or health.get("state") != "done":
        return  # the preview is written at the end of the health step
    backend = previewed_backend(workflow)
    try:
        if workflow.lb.get_preview(backend) is None:
            return
        revision = workflow.lb.delete_preview(backend)
    except BackendError as exc:
        workflow.log(
            f"Could not remove the preview of v{version} yet ({exc}); it goes with its backend.",
            level="warning",
            step="rollback",
        )
        return
    workflow.log(f"Removed the preview of v{version} (revision {revision}).", step="rollback")
    if not workflow.switch_started:
        workflow.wait_drained(revision, step="rollback")
