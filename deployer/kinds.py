"""Which workflow runs which kind of deployment, and the steps each one shows."""

from __future__ import annotations

from deployer.deploy import DeployWorkflow
from deployer.models import Deployment
from deployer.swapback import SwapBackWorkflow
from deployer.undeploy import UndeployWorkflow
from deployer.workflow import Workflow

WORKFLOWS: dict[str, type[Workflow]] = {
    Deployment.Kind.DEPLOY: DeployWorkflow,
    Deployment.Kind.SWAP_BACK: SwapBackWorkflow,
    Deployment.Kind.UNDEPLOY: UndeployWorkflow,
}

STEPS: dict[str, list[tuple[str, str]]] = {kind: cls.steps for kind, cls in WORKFLOWS.items()}


def planned_steps(deployment: Deployment) -> list[tuple[str, str]]:
    """The steps a run of ``deployment`` takes (its kind's, less the optional ones it skips)."""
    workflow = WORKFLOWS.get(deployment.kind)
    return workflow.planned_steps(deployment.descriptor) if workflow else []
