"""What a node group provider is: its instances, its state, its errors and its calls."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from scaling.models import NodeGroup


@dataclass(frozen=True)
class Instance:
    """A machine in a node group, as the provider sees it."""

    id: str
    protected: bool = False
    state: str = "InService"


@dataclass(frozen=True)
class GroupState:
    """A node group's size limits, desired capacity and instances, as the provider reports them."""

    min_size: int
    max_size: int
    desired: int
    instances: list[Instance] = field(default_factory=list)

    def protected_ids(self) -> set[str]:
        """Instances with scale-in protection: never chosen for removal."""
        return {i.id for i in self.instances if i.protected}


class ProviderError(Exception):
    """The provider refused or failed; ``str(exc)`` says what and, if the user can, what to fix."""

    def __init__(self, message: str, *, code: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.retryable = retryable


class Provider(Protocol):
    """Capacity operations of one provider kind."""

    def node_selector(self, group: NodeGroup) -> str | None:
        """The label selector of the group's Node objects; None: match nodes by instance id."""
        ...

    def describe(self, group: NodeGroup) -> GroupState:
        """The group's current limits, desired capacity and instances."""
        ...

    def scale_out(self, group: NodeGroup, desired: int) -> None:
        """Raise the group's desired capacity to ``desired``."""
        ...

    def terminate(self, group: NodeGroup, instance_id: str) -> None:
        """Terminate one (already drained) instance and decrement the desired capacity."""
        ...
