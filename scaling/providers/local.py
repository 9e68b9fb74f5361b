"""The localcluster provider: a node group is the set of Node objects carrying its label."""

from __future__ import annotations

import secrets

from django.conf import settings

from scaling.kube import NodeOps
from scaling.models import NodeGroup
from scaling.providers import GroupState, Instance, ProviderError


class LocalProvider:
    """Adds simulated nodes by creating Node objects, removes them by deleting them."""

    def __init__(self, ops: NodeOps) -> None:
        self.ops = ops

    def describe(self, group: NodeGroup) -> GroupState:
        """The group's limits (from the database) and its nodes (from the cluster)."""
        nodes = self.ops.list_nodes(group.name)
        instances = [Instance(id=n.instance_id or n.name) for n in nodes]
        return GroupState(
            min_size=group.min_size,
            max_size=group.max_size,
            desired=len(nodes),
            instances=instances,
        )

    def scale_out(self, group: NodeGroup, desired: int) -> None:
        """Create Node objects until the group has ``desired`` nodes."""
        if desired > group.max_size:
            raise ProviderError(
                f"{group.name}: {desired} nodes is above the group's maximum of {group.max_size}",
                code="max_size",
            )
        current = len(self.ops.list_nodes(group.name))
        for _ in range(desired - current):
            suffix = secrets.token_hex(3)
            labels = {
                settings.SCALING_NODE_GROUP_LABEL: group.name,
                settings.SCALING_INSTANCE_ID_LABEL: f"i-local-{suffix}",
            }
            self.ops.create_node(f"{group.name}-{suffix}", labels)

    def terminate(self, group: NodeGroup, instance_id: str) -> None:
        """Delete the node of ``instance_id`` if it is still registered."""
        for node in self.ops.list_nodes(group.name):
            if instance_id in (node.instance_id, node.name):
                self.ops.delete_node(node.name)
