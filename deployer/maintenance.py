"""The other kinds of run: swap back to a warm version, undeploy, and recovery after a lost worker.

A mixin of deployer.workflow.Workflow: the methods use its collaborators, its steps and
its single rollback path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import Max

from deployer.collaborators import StopDeployment, backend_name
from deployer.models import App, Deployment

if TYPE_CHECKING:
    from deployer.workflow import Workflow

    _Base = Workflow
else:
    _Base = object


class OtherKinds(_Base):
    """Swap back, undeploy and recover, for Workflow."""

    def run_swap_back(self) -> None:
        """Health-check the warm previous version, switch to it, retire the version left."""
        version = self.deployment.version
        assert version is not None
        self.take_previous_backend()
        self.deployment.previous_version = self.previous_version
        self._save("previous_version")
        with self.step("health"):
            if not self.cluster.version_exists(self.namespace, self.name, version):
                raise StopDeployment(f"v{version} is no longer warm; redeploy it instead.")
            self.pods = [
                p for p in self.cluster.pods(self.namespace, self.name, version) if p.started
            ]
            if not self.pods:
                raise StopDeployment(f"v{version} has no running pods.")
            self.check_health(self.clock.monotonic() + float(self.d["health"]["deadline"]))
        with self.step("switch", first=self.write_route):
            self.switch()
        with self.step("verify"):
            self.verify()
        with self.step("retire"):
            if self.previous_version and self.previous_version != version:
                self.wait_drained(self.switch_revision)
                self.delete_version(self.previous_version)

    def run_undeploy(self) -> None:
        """Remove the frontend and every backend, then every version's objects."""
        versions = set(self.cluster.versions(self.namespace, self.name))
        top = Deployment.objects.filter(app_id=self.deployment.app_id).aggregate(
            top=Max("version")
        )["top"]
        backends = [backend_name(self.namespace, self.name, v) for v in range(1, (top or 0) + 1)]
        backends += [backend_name(self.namespace, self.name, v) for v in versions]
        with self.step("route"):
            revision = self.lb.delete_route(self.hostname, sorted(set(backends)))
            self.log(f"Removed frontend {self.hostname} at revision {revision}.", step="route")
            self.wait_applied(revision)
            App.objects.filter(pk=self.deployment.app_id).update(live_version=None)
        with self.step("objects"):
            # Requests already on their way to the app finish before its pods stop.
            self.wait_drained(revision, step="objects")
            for version in sorted(versions):
                self.cluster.delete_version(self.namespace, self.name, version)
                self.log(f"Deleted {self.name}-v{version}.", step="objects")

    def recover(self, lost_worker: str) -> None:
        """Finish or roll back a RUNNING deployment whose worker died; leave nothing half-done."""
        self.log(
            f"The worker running this deployment ({lost_worker or 'unknown'}) was lost; recovering.",
            level="warning",
            step="recover",
        )
        kind, version = self.deployment.kind, self.deployment.version
        self.previous_version = self.deployment.previous_version
        if self.previous_version:
            self.previous_backend = backend_name(self.namespace, self.name, self.previous_version)
        if kind == Deployment.Kind.UNDEPLOY:
            self.deployment.steps = {}
            self.execute()  # idempotent: deleting what is gone is fine
            return
        started = self.clock.monotonic()
        frontend = self.lb.get_frontend(self.hostname)
        points_to_new = bool(version and frontend and frontend.get("backend") == self.new_backend())
        verified = self.deployment.steps.get("verify", {}).get("state") == "done"
        if kind == Deployment.Kind.DEPLOY and points_to_new and verified:
            self.log("The switch was verified before the worker died; finishing.", step="recover")
            App.objects.filter(pk=self.deployment.app_id).update(live_version=version)
            failure: StopDeployment | None = None
            try:
                with self.step("retire"):
                    self.retire()
            except Exception as exc:
                failure = StopDeployment(f"could not retire the old version: {exc}")
            self.finish(failure, self.clock.monotonic() - started)
            return
        self.switch_started = points_to_new
        self.created = kind == Deployment.Kind.DEPLOY and version is not None
        # The backend record is written before the switch: the lost worker may have done so.
        self.backend_written = self.created and self.lb.get_backend(self.new_backend()) is not None
        failure = StopDeployment("the worker running this deployment was lost; rolled back")
        self.cleanup(failure)
        self.finish(failure, self.clock.monotonic() - started)
