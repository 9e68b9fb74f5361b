"""Pre-switch hooks: a command run in the new version's image, as a Job, before the switch.

An app's ``pre_switch_hook`` (shell words, such as ``migrate --noinput``) runs after the
health checks, once the preview is published, and before traffic moves: a database
migration, or a smoke test against the new version. The words are the container's
``args``, so the image's entrypoint runs them, as ``docker run IMAGE migrate`` would. The
Job is built from the version's own pod template (same image, resources and env, with the
app's env) and gets ``GREENLIGHT_PREVIEW_URL`` (the version's preview address, "" where
there is none), ``GREENLIGHT_VERSION`` and ``GREENLIGHT_POD_IPS`` (the version's pods,
comma-separated). It runs once (``backoffLimit`` 0) for at most the app's
``pre_switch_hook_timeout_seconds`` (``activeDeadlineSeconds``).

The pod's output is relayed into the deploy log under the ``hook`` step while it runs.
A hook that fails or times out stops the deploy, which rolls back as after a failed
health check: nothing was routed to the new version. An abort deletes the Job (its pod
with it). A Job that succeeded is deleted; one that failed is kept, pod and output, for
inspection, until the app's next hook runs (each hook first deletes the app's earlier
hook Jobs), so at most one stays per app.

The Job's pods carry ``app`` but not ``version`` nor the managed-by label: the version's
Service, its ReplicaSet and the app's stable Service select on those, and a hook pod must
neither take traffic nor count as one of the version's pods.
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from kubernetes import client

from deployer import k8s, preview
from deployer.bounds import cut_bytes
from deployer.cluster import MANAGED_BY, MANAGER, build_deployment, object_name
from deployer.collaborators import StopDeployment
from deployer.errors import Conflict, KubeError, NotFound
from deployer.validation import hook_words

if TYPE_CHECKING:
    from deployer.workflow import Workflow

STEP = "hook"
HOOK_LABEL = "greenlight/hook"
HOOK_KIND = "pre-switch"
VERSION_LABEL = "greenlight/version"
DEPLOYMENT_LABEL = "greenlight/deployment"
# How often the run reads the Job, its pod's log and the deployment row (for an abort).
POLL_SECONDS = 0.5
# How long past the Job's own deadline the run waits for the cluster to say it failed.
DEADLINE_GRACE_SECONDS = 30.0
# The most of the hook's output relayed into the deploy log.
MAX_LINES = 2000
MAX_BYTES = 512 * 1024
DEFAULT_TIMEOUT = 300


def command_of(descriptor: dict[str, Any]) -> str:
    """The hook's command line ("" when the app has none)."""
    return str((descriptor.get("pre_switch_hook") or {}).get("command") or "").strip()


def is_set(descriptor: dict[str, Any]) -> bool:
    """Whether a deploy of this descriptor runs a pre-switch hook (and shows its step)."""
    return bool(command_of(descriptor))


def timeout_of(descriptor: dict[str, Any]) -> int:
    """The hook's timeout in seconds."""
    value = (descriptor.get("pre_switch_hook") or {}).get("timeout")
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_TIMEOUT


def job_name(app: str, version: int) -> str:
    """The hook Job of one version: ``<app>-v<N>-hook``."""
    return f"{object_name(app, version)}-hook"


@functools.cache
def _serializer() -> client.ApiClient:
    # Turns the client's models into the API's JSON; it never connects anywhere.
    return client.ApiClient()


def build_job(
    descriptor: dict[str, Any],
    version: int,
    deployment_id: int,
    preview_url: str,
    pod_ips: list[str],
) -> dict[str, Any]:
    """The hook's Job: the version's pod template, running the hook's words once."""
    name = descriptor["name"]
    pod_spec = _serializer().sanitize_for_serialization(
        build_deployment(descriptor, version).spec.template.spec
    )
    container = pod_spec["containers"][0]
    for key in ("readinessProbe", "livenessProbe", "startupProbe", "lifecycle", "ports"):
        container.pop(key, None)
    container["name"] = "hook"
    container["args"] = hook_words(command_of(descriptor))
    container["env"] = [
        *container.get("env", []),
        {"name": "GREENLIGHT_PREVIEW_URL", "value": preview_url},
        {"name": "GREENLIGHT_VERSION", "value": str(version)},
        {"name": "GREENLIGHT_POD_IPS", "value": ",".join(pod_ips)},
    ]
    pod_spec["restartPolicy"] = "Never"
    labels = {
        "app": name,
        VERSION_LABEL: str(version),
        DEPLOYMENT_LABEL: str(deployment_id),
        HOOK_LABEL: HOOK_KIND,
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(name, version),
            "namespace": descriptor["namespace"],
            "labels": {**labels, MANAGED_BY: MANAGER},
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": timeout_of(descriptor),
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


class HookJobs:
    """The calls hooks make to the cluster (batch/v1 jobs, and the hook pod's log)."""

    def __init__(self, api: client.ApiClient | None = None) -> None:
        api = api or k8s.api_client()
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)

    def create(self, namespace: str, body: dict[str, Any]) -> None:
        """Create the Job (Conflict when one of that name exists)."""
        k8s.call(self.batch.create_namespaced_job, namespace, body)

    def get(self, namespace: str, name: str) -> client.V1Job:
        """Read one Job (NotFound when it is gone)."""
        return k8s.call(self.batch.read_namespaced_job, name, namespace)

    def earlier(self, namespace: str, app: str) -> list[str]:
        """Names of the app's hook Jobs in the cluster."""
        found = k8s.call(
            self.batch.list_namespaced_job,
            namespace,
            label_selector=f"app={app},{HOOK_LABEL}={HOOK_KIND}",
        )
        return [item.metadata.name for item in found.items]

    def delete(self, namespace: str, name: str) -> None:
        """Delete a Job and its pods (Background propagation); absent is fine."""
        with contextlib.suppress(NotFound):
            k8s.call(
                self.batch.delete_namespaced_job,
                name,
                namespace,
                body=client.V1DeleteOptions(propagation_policy="Background"),
            )

    def pod(self, namespace: str, job: str) -> client.V1Pod | None:
        """The newest pod of the Job, if any."""
        found = k8s.call(self.core.list_namespaced_pod, namespace, label_selector=f"job-name={job}")
        pods = sorted(found.items, key=lambda p: p.metadata.creation_timestamp)
        return pods[-1] if pods else None

    def log(self, namespace: str, pod: str) -> str:
        """The pod's output so far, at most MAX_BYTES ("" before the container started)."""
        try:
            response = k8s.call(
                self.core.read_namespaced_pod_log,
                pod,
                namespace,
                limit_bytes=MAX_BYTES + 1,
                _preload_content=False,
                _request_timeout=5,
            )
        except (NotFound, k8s.KubeError):
            return ""
        try:
            return cut_bytes(response.read(MAX_BYTES + 1), MAX_BYTES)
        finally:
            response.release_conn()


@dataclass
class Outcome:
    """How the Job ended: succeeded, and why not."""

    succeeded: bool
    reason: str = ""
    message: str = ""


def _outcome(job: client.V1Job) -> Outcome | None:
    for cond in (job.status and job.status.conditions) or []:
        if cond.status != "True":
            continue
        if cond.type == "Complete":
            return Outcome(True)
        if cond.type == "Failed":
            return Outcome(False, cond.reason or "", cond.message or "")
    return None


def _exit_code(pod: client.V1Pod | None) -> int | None:
    for status in (pod and pod.status and pod.status.container_statuses) or []:
        terminated = status.state and status.state.terminated
        if terminated is not None:
            return int(terminated.exit_code)
    return None


class Relay:
    """Relays the new lines of the hook pod's output into the deploy log."""

    def __init__(self, run: Workflow) -> None:
        self.run = run
        self.sent = 0  # complete lines already relayed
        self.pod = ""
        self.cut = False

    def feed(self, pod: str, text: str, final: bool = False) -> None:
        """Log the lines of ``text`` (the whole output so far) not logged yet."""
        if pod != self.pod:
            self.pod, self.sent = pod, 0
        lines = text.split("\n")
        complete = lines if final else lines[:-1]
        if final and complete and complete[-1] == "":
            complete = complete[:-1]
        new = complete[self.sent :]
        if not new:
            return
        room = MAX_LINES - self.sent
        if room <= 0:
            self.sent += len(new)
            return
        with transaction.atomic():  # one commit for the poll's lines
            for line in new[:room]:
                self.run.log(f"{pod}: {line}", step=STEP)
            if len(new) > room and not self.cut:
                self.cut = True
                self.run.log(
                    f"The hook's output goes on; only its first {MAX_LINES} lines are shown here.",
                    step=STEP,
                )
        self.sent += len(new)


def run(workflow: Workflow) -> None:
    """The ``hook`` step of a deploy whose app names a pre-switch hook; nothing otherwise."""
    if not is_set(workflow.descriptor):
        return
    with workflow.step(STEP):
        execute(workflow)


def execute(workflow: Workflow, jobs: HookJobs | None = None) -> None:
    """Run the hook's Job to its end; StopDeployment when it fails, times out or is aborted."""
    jobs = jobs or HookJobs()
    descriptor = workflow.descriptor
    namespace, app = workflow.namespace, workflow.name
    version = workflow.deployment.version
    assert version is not None
    timeout = timeout_of(descriptor)
    url = preview.preview_url(workflow.deployment) or ""
    body = build_job(
        descriptor, version, workflow.deployment.pk, url, [p.ip for p in workflow.pods if p.ip]
    )
    name = body["metadata"]["name"]
    for earlier in jobs.earlier(namespace, app):
        jobs.delete(namespace, earlier)
    try:
        jobs.create(namespace, body)
    except Conflict:
        # Only a Job kept from a lost run of this very version can hold the name.
        jobs.delete(namespace, name)
        _wait_gone(jobs, namespace, name)
        jobs.create(namespace, body)
    workflow.log(
        f"Job {name} runs `{command_of(descriptor)}` in {descriptor['image']} "
        f"(timeout {timeout}s); GREENLIGHT_PREVIEW_URL={url or '(none)'}.",
        step=STEP,
    )
    keep = False
    try:
        outcome = _follow(workflow, jobs, namespace, name, timeout)
        if not outcome.succeeded:
            keep = True
            raise StopDeployment(_failure(outcome, timeout))
        workflow.log(f"The pre-switch hook succeeded; Job {name} is deleted.", step=STEP)
    finally:
        if not keep:
            with contextlib.suppress(KubeError):
                jobs.delete(namespace, name)


def _failure(outcome: Outcome, timeout: int) -> str:
    if outcome.reason == "DeadlineExceeded":
        return f"the pre-switch hook timed out after {timeout}s"
    if outcome.reason == "exit":
        return f"the pre-switch hook failed: {outcome.message}"
    return f"the pre-switch hook failed: {outcome.message or outcome.reason}"


def _wait_gone(jobs: HookJobs, namespace: str, name: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            jobs.get(namespace, name)
        except NotFound:
            return
        time.sleep(POLL_SECONDS)


def _follow(workflow: Workflow, jobs: HookJobs, namespace: str, name: str, timeout: int) -> Outcome:
    """Poll the Job and relay its pod's output until the Job ends (or the run is aborted)."""
    relay = Relay(workflow)
    deadline = workflow.clock.monotonic() + timeout + DEADLINE_GRACE_SECONDS
    while True:
        if workflow.abort_requested():
            jobs.delete(namespace, name)
            workflow.log(f"Aborted: Job {name} and its pod are deleted.", step=STEP)
            raise StopDeployment("aborted by user", aborted=True)
        job = jobs.get(namespace, name)
        outcome = _outcome(job)
        pod = jobs.pod(namespace, name)
        if pod is not None and (pod.status and pod.status.phase) != "Pending":
            relay.feed(
                pod.metadata.name, jobs.log(namespace, pod.metadata.name), final=bool(outcome)
            )
        if outcome is not None:
            if not outcome.succeeded and outcome.reason == "BackoffLimitExceeded":
                code = _exit_code(pod)
                if code is not None:
                    return Outcome(False, "exit", f"its command exited with status {code}")
            return outcome
        if workflow.clock.monotonic() >= deadline:
            # The cluster never ended it: the Job goes, as after an abort.
            jobs.delete(namespace, name)
            return Outcome(False, "DeadlineExceeded", "")
        workflow.clock.sleep(POLL_SECONDS)
