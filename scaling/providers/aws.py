"""The AWS provider: a node group is an EC2 Auto Scaling group.

Scale-out raises the desired capacity. Scale-in never lowers the desired capacity on
its own (the group would pick and kill an arbitrary, undrained instance); it terminates
the instance that was drained with ``ShouldDecrementDesiredCapacity=True``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from django.conf import settings

from scaling.models import NodeGroup
from scaling.providers.base import GroupState, Instance, ProviderError

# Errors that go away by themselves: another scaling activity, or throttling.
_RETRYABLE = {
    "ScalingActivityInProgress",
    "ResourceContention",
    "Throttling",
    "ThrottlingException",
}


class AwsProvider:
    """Capacity operations on one region's Auto Scaling API."""

    def __init__(
        self,
        client: Any,
        *,
        attempts: int = 5,
        backoff: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.attempts = attempts
        self.backoff = backoff
        self.sleep = sleep

    @classmethod
    def for_group(cls, group: NodeGroup) -> AwsProvider:
        """A provider with a boto3 client for the group's region (or the default region)."""
        region = group.region or settings.SCALING_AWS_REGION
        return cls(boto3.client("autoscaling", region_name=region))

    def node_selector(self, group: NodeGroup) -> str | None:
        """None: a node belongs to the group when its providerID names one of its instances."""
        return None

    def describe(self, group: NodeGroup) -> GroupState:
        """The group's MinSize, MaxSize, DesiredCapacity and instances."""
        name = group.provider_name
        answer = self._call(
            "describe_auto_scaling_groups", name, AutoScalingGroupNames=[name], MaxRecords=1
        )
        found = answer.get("AutoScalingGroups") or []
        if not found:
            raise ProviderError(
                f"There is no Auto Scaling group named {name} in this region; "
                "check the node group's name and region.",
                code="not_found",
            )
        asg = found[0]
        instances = [
            Instance(
                id=i["InstanceId"],
                protected=bool(i.get("ProtectedFromScaleIn")),
                state=str(i.get("LifecycleState", "")),
            )
            for i in asg.get("Instances", [])
        ]
        return GroupState(
            min_size=int(asg["MinSize"]),
            max_size=int(asg["MaxSize"]),
            desired=int(asg["DesiredCapacity"]),
            instances=instances,
        )

    def scale_out(self, group: NodeGroup, desired: int) -> None:
        """Raise DesiredCapacity to ``desired`` (never used to lower it)."""
        name = group.provider_name
        state = self.describe(group)
        if desired < state.desired:
            raise ProviderError(
                f"{name}: refusing to lower the desired capacity directly; "
                "scale in by draining and terminating instances",
                code="bare_decrease",
            )
        if desired > state.max_size:
            raise ProviderError(
                f"{name}: {desired} is above the group's MaxSize of {state.max_size}",
                code="max_size",
            )
        if desired == state.desired:
            return
        self._call(
            "set_desired_capacity",
            name,
            AutoScalingGroupName=name,
            DesiredCapacity=desired,
            HonorCooldown=False,
        )

    def terminate(self, group: NodeGroup, instance_id: str) -> None:
        """Terminate ``instance_id`` and decrement the desired capacity in the same call."""
        self._call(
            "terminate_instance_in_auto_scaling_group",
            group.provider_name,
            InstanceId=instance_id,
            ShouldDecrementDesiredCapacity=True,
        )

    def _call(self, operation: str, group_name: str, **kwargs: Any) -> dict[str, Any]:
        """Call ``operation``, retrying transient refusals with backoff, translating errors."""
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            try:
                return dict(getattr(self.client, operation)(**kwargs))
            except ClientError as exc:
                error = translate(exc, group_name)
                if not error.retryable or attempt == self.attempts:
                    raise error from exc
            except NoCredentialsError as exc:
                raise ProviderError(
                    "No AWS credentials found: configure them for the worker "
                    "(environment, shared credentials file or an instance role).",
                    code="no_credentials",
                ) from exc
            except BotoCoreError as exc:
                if attempt == self.attempts:
                    raise ProviderError(
                        f"AWS unreachable: {exc}", code="unreachable", retryable=True
                    ) from exc
            # Backoff with jitter: another activity on the group is still running.
            self.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")


def translate(exc: ClientError, group_name: str) -> ProviderError:
    """A ProviderError with a message that says what happened for a boto3 ClientError."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "")) or str(exc)
    lowered = message.lower()
    if code in _RETRYABLE:
        return ProviderError(
            f"{group_name}: another scaling activity is in progress ({message})",
            code=code,
            retryable=True,
        )
    if code == "ValidationError" and "min" in lowered and "size" in lowered:
        return ProviderError(
            f"{group_name}: the group would fall below its minimum size ({message})",
            code="min_size",
        )
    if code == "ValidationError" and "protect" in lowered:
        return ProviderError(
            f"{group_name}: the instance is protected from scale-in ({message})",
            code="scale_in_protection",
        )
    if code in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
        return ProviderError(
            f"{group_name}: the AWS credentials may not do this ({message})", code="forbidden"
        )
    return ProviderError(f"{group_name}: AWS refused: {code}: {message}", code=code)
