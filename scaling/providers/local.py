"""The localcluster provider: a node group is the set of Node objects carrying its label."""

from __future__ import annotations

import secrets

from scaling.kube import LOCAL_GROUP_LABEL, LOCAL_INSTANCE_LABEL, NodeOps
from scaling.models import NodeGroup
from scaling.providers.base import GroupState, Instance, ProviderError


class LocalProvider:
    """Adds simulated nodes by creating Node objects, removes them by deleting them."""

    def __init__(self, ops: NodeOps) -> None:
        self.ops = ops

    def node_selector(self, group: NodeGroup) -> str | None:
        """localcluster labels every node with its group."""
        return f"{LOCAL_GROUP_LABEL}={group.name}"

    def describe(self, group: NodeGroup) -> GroupState:
        """The group's limits (from the database) and its nodes (from the cluster)."""
        nodes = self.ops.list_nodes(self.node_selector(group))
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
        current = len(self.ops.list_nodes(self.node_selector(group)))
        for _ in range(desired - current):
            suffix = secrets.token_hex(3)
            labels = {
                LOCAL_GROUP_LABEL: group.name,
                LOCAL_INSTANCE_LABEL: f"i-local-{suffix}",
            }
            self.ops.create_node(f"{group.name}-{suffix}", labels)

    def terminate(self, group: NodeGroup, instance_id: str) -> None:
        """Delete the node of ``instance_id`` if it is still registered."""
        for node in self.ops.list_nodes(self.node_selector(group)):
            if instance_id in (node.instance_id, node.name):
                self.ops.delete_node(node.name)
