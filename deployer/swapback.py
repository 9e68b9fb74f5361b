"""Swap back: health-check the warm previous version, switch to it, retire the version left."""

from __future__ import annotations

from typing import ClassVar

from deployer.collaborators import StopDeployment
from deployer.healthsteps import check_health
from deployer.workflow import Workflow


class SwapBackWorkflow(Workflow):
    """Moves traffic back to a version that was kept warm (``deployment.version``)."""

    steps: ClassVar[list[tuple[str, str]]] = [
        ("health", "Health-check the previous version"),
        ("switch", "Switch traffic"),
        ("verify", "Verify through the load balancer"),
        ("retire", "Retire the version swapped away from"),
    ]

    def run(self) -> None:
        """Check the warm version's running pods, switch to it, then delete the version left."""
        version = self.deployment.version
        assert version is not None
        self.take_previous_backend()
        self.deployment.previous_version = self.previous_version
        self.save("previous_version")
        with self.step("health"):
            if not self.cluster.version_exists(self.namespace, self.name, version):
                raise StopDeployment(f"v{version} is no longer warm; redeploy it instead.")
            self.pods = [
                p for p in self.cluster.pods(self.namespace, self.name, version) if p.started
            ]
            if not self.pods:
                raise StopDeployment(f"v{version} has no running pods.")
            check_health(
                self, self.clock.monotonic() + float(self.descriptor["health"]["deadline"])
            )
        with self.step("switch", first=self.write_route):
            self.switch()
        with self.step("verify"):
            self.verify()
        with self.step("retire"):
            if self.previous_version and self.previous_version != version:
                self.wait_drained(self.switch_revision)
                self.delete_version(self.previous_version)
