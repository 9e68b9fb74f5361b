"""The blue-green deploy, top to bottom: pick a version, create it, check it, switch, retire.

The new version's backend record is written, without servers, as soon as the version is
picked, so that the reload that adds it to HAProxy happens while the pods start; its
servers are written once the pods run (a runtime change), while they are
health-checked. It gets no traffic until the frontend points at it, and by then HAProxy
has it with its servers, so the switch is a map change without a reload. A deploy that
succeeded also writes the next version's record, without servers (a *standby*), with its
retirement's reload: the next deploy finds its backend in HAProxy already, however fast
its pods start. Steps, logging and the rollback path are deployer.workflow.Workflow's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from django.db.models import Max

from deployer import guard, hooks, preview, promotion, traffic
from deployer.cluster import PodFailed
from deployer.collaborators import StopDeployment, backend_name
from deployer.errors import BackendError
from deployer.healthsteps import check_health, log_pod_output
from deployer.logsink import Level
from deployer.models import App, Deployment
from deployer.pods import STARTING_REASONS, PodInfo, PodStartWait
from deployer.workflow import Workflow


class DeployWorkflow(Workflow):
    """Deploys a new version of an app beside the live one and moves traffic to it."""

    steps: ClassVar[list[tuple[str, str]]] = [
        ("prepare", "Pick the version"),
        ("create", "Create the new version"),
        ("pods", "Wait for pods to run"),
        ("health", "Health-check every pod"),
        ("hook", "Run the pre-switch hook"),
        ("promotion", "Wait for promotion"),
        ("switch", "Switch traffic"),
        ("verify", "Verify through the load balancer"),
        ("guard", "Guard the new version"),
        ("retire", "Retire the old version"),
    ]
    # Steps a descriptor may leave out of its run (and its page).
    optional_steps: ClassVar[dict[str, Callable[[dict[str, Any]], bool]]] = {
        "promotion": promotion.is_manual,
        "hook": hooks.is_set,
    }

    def run(self) -> None:
        """Steps 2-7 of the blue-green workflow."""
        with self.step("prepare"):
            self.prepare()
        with self.step("create"):
            self.create()
        with self.step("pods"):
            deadline = self.clock.monotonic() + float(self.descriptor["health"]["deadline"])
            self.wait_pods(deadline)
            self.write_backend()
        with self.step("health"):
            check_health(self, deadline)
            preview.publish(self)  # the version answers at its preview hostname and by header
        hooks.run(self)  # the app's pre-switch hook, as a Job, when it names one
        promotion.run(self)  # manual promotion: waits for Promote or Reject
        with self.step("switch", first=self.write_route):
            self.switch()
        with self.step("verify"):
            self.verify()
        with self.step("guard"):
            guard.watch(self)
        with self.step("retire"):
            self.retire()

    def prepare(self) -> None:
        """Pick N = highest version in the cluster or the database + 1; note the live backend."""
        known = self.cluster.versions(self.namespace, self.name)
        in_db = Deployment.objects.filter(app_id=self.deployment.app_id).aggregate(
            top=Max("version")
        )["top"]
        version = max([0, in_db or 0, *known]) + 1
        self.deployment.version = version
        self.write_empty_backend()
        self.take_previous_backend()
        self.deployment.previous_version = self.previous_version
        self.save("version", "previous_version")
        live = f"v{self.previous_version}" if self.previous_version else "nothing"
        self.log(
            f"New version v{version} of {self.name}; {live} is live now. Backend "
            f"{self.new_backend()} written without servers at etcd revision "
            f"{self.backend_revision}.",
            step="prepare",
        )

    def write_empty_backend(self) -> None:
        """Write the new version's backend record without servers: HAProxy gets it meanwhile."""
        # Before the write, whose outcome is unknown if it raises: a rollback deletes the
        # record, and the version's objects (absent is fine).
        self.created = self.backend_written = True
        self.backend_revision = self.lb.put_backend(
            self.new_backend(), {"servers": [], **self.backend_options()}
        )

    def write_standby(self, version: int) -> None:
        """Write ``version``'s backend record without servers, for the deploy that picks it.

        Unrouted and empty, it serves nothing; the deploy writes the same record again
        (no change, so no reload), and undeploy deletes it with the others.
        """
        standby = backend_name(self.namespace, self.name, version)
        try:
            if self.lb.get_backend(standby) is None:
                self.lb.put_backend(standby, {"servers": [], **self.backend_options(version)})
        except BackendError as exc:
            # Only the next deploy's switch would wait for a reload: this one stays done.
            self.log(f"Could not write the standby backend {standby}: {exc}", level="warning")

    def create(self) -> None:
        """Create the version's Deployment and Service."""
        version = self.deployment.version
        assert version is not None
        self.created = True  # before the call: a half-done create is cleaned up too
        self.cluster.create_version(self.descriptor, version)
        traffic.prepare(self)  # service mode: the app's stable Service
        self.log(
            f"Created Deployment and Service {self.name}-v{version}: image {self.descriptor['image']}, "
            f"{self.descriptor['replicas']} replicas.",
            step="create",
        )

    def wait_pods(self, deadline: float) -> None:
        """Watch until every pod runs; a bad image or a crash loop fails at once."""
        version = self.deployment.version
        assert version is not None

        def on_change(pod: PodInfo) -> None:
            level: Level = (
                "warning" if pod.reason and pod.reason not in STARTING_REASONS else "info"
            )
            self.log(f"Pod {pod.name}: {pod.describe()}", level=level, step="pods")

        def on_event(kind: str, text: str) -> None:
            # Events come in bursts before a pod's change: stored with it, in one commit.
            with self.deferred():
                self.log(
                    f"Event: {text}", level="warning" if kind == "Warning" else "info", step="pods"
                )

        try:
            self.pods = self.cluster.wait_pods_started(
                PodStartWait(
                    self.namespace,
                    self.name,
                    version,
                    int(self.descriptor["replicas"]),
                    max(0.0, deadline - self.clock.monotonic()),
                    on_change=on_change,
                    cancelled=self.abort_requested,
                    on_event=on_event,
                )
            )
        except PodFailed as exc:
            log_pod_output(self)
            raise StopDeployment(str(exc)) from exc
        except TimeoutError as exc:
            raise StopDeployment(f"pods did not start in time: {exc}") from exc
        self.check_abort()

    def write_backend(self) -> None:
        """Write the new version's backend record (no frontend points at it yet)."""
        backend = self.new_backend()
        self.backend_written = True  # before the write: its outcome is unknown if it raises
        self.backend_revision = self.lb.put_backend(
            backend, {"servers": self.servers(), **self.backend_options()}
        )
        self.log(
            f"Backend {backend} ({len(self.servers())} servers) written at etcd revision "
            f"{self.backend_revision}; it gets traffic only after the switch.",
            step="pods",
        )

    def retire(self) -> None:
        """Delete old versions; keep the previous one warm for ``keep_old_seconds`` if set.

        When a load balancer whose proxysync is down may still route to the old version
        (its HAProxy answers), the old version stays and its retirement is deferred: tried
        again later, when the deploy's last line has long been written.
        """
        version = self.deployment.version
        assert version is not None
        self.write_standby(version + 1)
        keep = int(self.descriptor.get("keep_old_seconds", 0))
        old = [v for v in self.cluster.versions(self.namespace, self.name) if v != version]
        if self.previous_version and self.previous_version not in old:
            old.append(self.previous_version)
        if not old:
            self.log("No old version to retire.", step="retire")
            return
        if not self.wait_drained(self.switch_revision):
            self.defer_retire(old)
            return
        for item in sorted(old):
            if item == self.previous_version and keep > 0:
                self.schedule_retire(self.deployment.pk, item, float(keep))
                self.log(
                    f"Keeping v{item} warm for {keep}s so that a swap back is instant.",
                    step="retire",
                )
                continue
            self.delete_version(item)
        self.forget_old_frontends()

    def forget_old_frontends(self) -> None:
        """Remove the frontend record of a hostname the app no longer uses."""
        earlier = (
            Deployment.objects.filter(app_id=self.deployment.app_id, switched_at__isnull=False)
            .exclude(pk=self.deployment.pk)
            .order_by("-switched_at")
            .first()
        )
        old_host = earlier.descriptor.get("frontend") if earlier else None
        if old_host and old_host != self.hostname:
            frontend = self.lb.get_frontend(old_host)
            if frontend and str(frontend.get("backend", "")).startswith(
                f"{self.namespace}.{self.name}-v"
            ):
                self.lb.delete_route(old_host, [])
                self.log(f"Removed the old frontend {old_host}.", step="retire")

    def resume(self) -> StopDeployment | None:
        """Finish a switch verified before the worker died; otherwise roll back as any kind."""
        verified = self.deployment.steps.get("verify", {}).get("state") == "done"
        if self.switch_started and verified:
            self.log("The switch was verified before the worker died; finishing.", step="recover")
            App.objects.filter(pk=self.deployment.app_id).update(
                live_version=self.deployment.version
            )
            try:
                with self.step("retire"):
                    self.retire()
            except Exception as exc:
                return StopDeployment(f"could not retire the old version: {exc}")
            return None
        self.created = self.deployment.version is not None
        # The backend record is written before the switch: the lost worker may have done so.
        self.backend_written = self.created and self.lb.get_backend(self.new_backend()) is not None
        return super().resume()
