"""Undeploy: remove the app's frontend and every backend, then every version's objects."""

from __future__ import annotations

import time
from typing import ClassVar

from django.db.models import Max

from deployer import traffic
from deployer.collaborators import StopDeployment, backend_name
from deployer.models import App, Deployment
from deployer.workflow import Workflow


class UndeployWorkflow(Workflow):
    """Takes an app out of the load balancer and the cluster; deleting what is gone is fine."""

    steps: ClassVar[list[tuple[str, str]]] = [
        ("route", "Remove the frontend and backends"),
        ("objects", "Delete every version"),
    ]

    def run(self) -> None:
        """Remove the frontend and every backend record, wait for the drain, delete the objects."""
        versions = set(self.cluster.versions(self.namespace, self.name))
        top = Deployment.objects.filter(app_id=self.deployment.app_id).aggregate(
            top=Max("version")
        )["top"]
        # Up to the next version's: a deploy that succeeded wrote it as a standby.
        backends = [backend_name(self.namespace, self.name, v) for v in range(1, (top or 0) + 2)]
        backends += [backend_name(self.namespace, self.name, v) for v in versions]
        with self.step("route"):
            revision = self.lb.delete_route(self.hostname, sorted(set(backends)))
            written = time.monotonic()
            self.log(f"Removed frontend {self.hostname} at revision {revision}.", step="route")
            waited = self.wait_applied(revision, since=written)
            self.log(
                f"Load balancers applied revision {revision}: {waited.summary()}.", step="route"
            )
            self.log_absent(waited, step="route")
            App.objects.filter(pk=self.deployment.app_id).update(live_version=None)
        with self.step("objects"):
            # Requests already on their way to the app finish before its pods stop; a load
            # balancer whose proxysync is down may still route to them: then they stay.
            if not self.wait_drained(revision, step="objects"):
                raise StopDeployment(
                    "the app's pods keep running: a load balancer whose proxysync is down may "
                    "still route to them (see above); undeploy again once it is back"
                )
            for version in sorted(versions):
                self.cluster.delete_version(self.namespace, self.name, version)
                self.log(f"Deleted {self.name}-v{version}.", step="objects")
            traffic.forget(self)  # the stable Service of traffic mode service

    def success_line(self, seconds: float) -> str:
        """The last log line of a successful undeploy."""
        return f"Undeployed {self.name} in {seconds:.2f}s."

    def recover(self, lost_worker: str) -> None:
        """Run the undeploy again from the start after a lost worker: every step is idempotent."""
        self.log_lost_worker(lost_worker)
        self.deployment.steps = {}
        self.execute()
