"""Node group providers: who adds and removes the machines behind a node group."""

from __future__ import annotations

from scaling.kube import KubeNodes, NodeOps
from scaling.models import NodeGroup
from scaling.providers.aws import AwsProvider
from scaling.providers.base import GroupState, Instance, Provider, ProviderError
from scaling.providers.local import LocalProvider

__all__ = ["GroupState", "Instance", "Provider", "ProviderError", "provider_for"]


def provider_for(group: NodeGroup, ops: NodeOps | None = None) -> Provider:
    """The provider that controls ``group``."""
    if group.provider == "aws":
        return AwsProvider.for_group(group)
    return LocalProvider(ops or KubeNodes())
