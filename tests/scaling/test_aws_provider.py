"""The AWS provider against moto, and its error paths through botocore's Stubber."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from scaling.models import NodeGroup, ScalingRun
from scaling.providers import ProviderError
from scaling.providers.aws import AwsProvider
from scaling.runner import RunContext, execute
from scaling.schedule import FrozenClock
from tests.scaling.conftest import FakeNodes

REGION = "eu-west-1"


@pytest.fixture
def aws() -> Iterator[dict[str, Any]]:
    """A moto Auto Scaling group ``workers`` with min 1, max 5 and 3 instances."""
    with mock_aws():
        ec2 = boto3.client("ec2", region_name=REGION)
        image = ec2.describe_images()["Images"][0]["ImageId"]
        ec2.create_launch_template(
            LaunchTemplateName="workers",
            LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"},
        )
        autoscaling = boto3.client("autoscaling", region_name=REGION)
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName="workers",
            LaunchTemplate={"LaunchTemplateName": "workers"},
            MinSize=1,
            MaxSize=5,
            DesiredCapacity=3,
            AvailabilityZones=[f"{REGION}a"],
        )
        calls: list[tuple[str, dict[str, Any]]] = []

        def record(model: Any, params: dict[str, Any], **_: Any) -> None:
            calls.append((model.name, params))

        autoscaling.meta.events.register("provide-client-params.autoscaling.*", record)
        yield {"client": autoscaling, "calls": calls}


def _group(db: None = None, **fields: Any) -> NodeGroup:
    values = {"name": "workers", "provider": "aws", "region": REGION, "min_size": 1}
    values.update(max_size=5, desired=3, **fields)
    return NodeGroup.objects.create(**values)


def _instances(client: Any) -> list[str]:
    asg = client.describe_auto_scaling_groups(AutoScalingGroupNames=["workers"])
    return [i["InstanceId"] for i in asg["AutoScalingGroups"][0]["Instances"]]


def _desired(client: Any) -> int:
    asg = client.describe_auto_scaling_groups(AutoScalingGroupNames=["workers"])
    return int(asg["AutoScalingGroups"][0]["DesiredCapacity"])


def _cluster_for(client: Any) -> FakeNodes:
    nodes = FakeNodes()
    for index, instance in enumerate(_instances(client)):
        labels = {"kubernetes.io/hostname": f"ip-10-0-0-{index}"}
        nodes.add(f"ip-10-0-0-{index}", labels, provider_id=f"aws:///{REGION}a/{instance}")
    return nodes


@pytest.mark.django_db
def test_it_describes_the_group(aws: dict[str, Any]) -> None:
    state = AwsProvider(aws["client"]).describe(_group())
    assert (state.min_size, state.max_size, state.desired) == (1, 5, 3)
    assert len(state.instances) == 3


@pytest.mark.django_db
def test_it_scales_out_by_raising_the_desired_capacity(aws: dict[str, Any]) -> None:
    AwsProvider(aws["client"]).scale_out(_group(), 4)
    assert _desired(aws["client"]) == 4


@pytest.mark.django_db
def test_it_never_lowers_the_desired_capacity_directly(aws: dict[str, Any]) -> None:
    with pytest.raises(ProviderError, match="refusing to lower"):
        AwsProvider(aws["client"]).scale_out(_group(), 2)
    assert _desired(aws["client"]) == 3


@pytest.mark.django_db
def test_scale_in_drains_deletes_and_terminates_with_a_decrement(aws: dict[str, Any]) -> None:
    client = aws["client"]
    group = _group()
    nodes = _cluster_for(client)
    # A node of another group, emptier than any: membership is by instance id, so it stays.
    nodes.add("other-group-node", {}, provider_id=f"aws:///{REGION}a/i-0fffffffffffffff0")
    run = ScalingRun.objects.create(
        kind=ScalingRun.Kind.SET_CAPACITY, params={"group_id": group.pk, "desired": 1}
    )
    services = RunContext(
        clock=FrozenClock(datetime(2026, 6, 1, tzinfo=UTC)),
        ops_factory=lambda: nodes,
        provider=lambda g, ops: AwsProvider(client),
    )
    execute(run.pk, services)
    run.refresh_from_db()
    assert run.status == ScalingRun.Status.SUCCEEDED, run.failure_reason
    assert _desired(client) == 1
    assert len(nodes.nodes) == 2 and "other-group-node" in nodes.nodes
    assert [c[0] for c in nodes.calls].count("delete") == 2
    names = [name for name, _ in aws["calls"]]
    assert "SetDesiredCapacity" not in names
    terminations = [p for name, p in aws["calls"] if name == "TerminateInstanceInAutoScalingGroup"]
    assert len(terminations) == 2
    assert all(p["ShouldDecrementDesiredCapacity"] is True for p in terminations)
    group.refresh_from_db()
    assert group.desired == 1 and group.baseline_desired == 3


@pytest.mark.django_db
def test_scale_in_never_goes_below_the_minimum(aws: dict[str, Any]) -> None:
    client = aws["client"]
    group = _group(min_size=2)
    nodes = _cluster_for(client)
    run = ScalingRun.objects.create(
        kind=ScalingRun.Kind.SET_CAPACITY, params={"group_id": group.pk, "desired": 0}
    )
    services = RunContext(ops_factory=lambda: nodes, provider=lambda g, ops: AwsProvider(client))
    execute(run.pk, services)
    run.refresh_from_db()
    assert run.status == ScalingRun.Status.SUCCEEDED
    assert _desired(client) == 2
    assert "outside min 2" in " ".join(run.logs.values_list("message", flat=True))


@pytest.mark.django_db
def test_scale_in_keeps_instances_protected_from_scale_in(aws: dict[str, Any]) -> None:
    client = aws["client"]
    instances = _instances(client)
    client.set_instance_protection(
        InstanceIds=instances[:2], AutoScalingGroupName="workers", ProtectedFromScaleIn=True
    )
    group = _group()
    nodes = _cluster_for(client)
    run = ScalingRun.objects.create(
        kind=ScalingRun.Kind.SET_CAPACITY, params={"group_id": group.pk, "desired": 1}
    )
    services = RunContext(ops_factory=lambda: nodes, provider=lambda g, ops: AwsProvider(client))
    execute(run.pk, services)
    run.refresh_from_db()
    assert run.status == ScalingRun.Status.FAILED
    assert "removed 1 of 2" in run.failure_reason
    assert set(_instances(client)) == set(instances[:2])
    group.refresh_from_db()
    assert group.desired == 2 == _desired(client)


def _stubbed() -> tuple[AwsProvider, Stubber, list[float]]:
    client = boto3.client(
        "autoscaling",
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    sleeps: list[float] = []
    return AwsProvider(client, attempts=3, sleep=sleeps.append), Stubber(client), sleeps


TERMINATE = {"InstanceId": "i-0abc", "ShouldDecrementDesiredCapacity": True}


@pytest.mark.django_db
def test_a_min_size_violation_is_reported_as_such() -> None:
    provider, stub, sleeps = _stubbed()
    stub.add_client_error(
        "terminate_instance_in_auto_scaling_group",
        service_error_code="ValidationError",
        service_message="Currently, desired capacity 1 is not able to be decreased below min size 1",
        expected_params=TERMINATE,
    )
    with stub, pytest.raises(ProviderError, match="below its minimum size") as error:
        provider.terminate(_group(), "i-0abc")
    assert error.value.code == "min_size" and sleeps == []


@pytest.mark.django_db
def test_a_protected_instance_is_reported_as_such() -> None:
    provider, stub, _ = _stubbed()
    stub.add_client_error(
        "terminate_instance_in_auto_scaling_group",
        service_error_code="ValidationError",
        service_message="Instance i-0abc is protected from scale in",
        expected_params=TERMINATE,
    )
    with stub, pytest.raises(ProviderError, match="protected from scale-in") as error:
        provider.terminate(_group(), "i-0abc")
    assert error.value.code == "scale_in_protection"


@pytest.mark.django_db
def test_a_scaling_activity_in_progress_is_retried_with_backoff() -> None:
    provider, stub, sleeps = _stubbed()
    for _ in range(2):
        stub.add_client_error(
            "terminate_instance_in_auto_scaling_group",
            service_error_code="ScalingActivityInProgress",
            service_message="Scaling activity abc is in progress",
            http_status_code=400,
            expected_params=TERMINATE,
        )
    stub.add_response(
        "terminate_instance_in_auto_scaling_group",
        {"Activity": _activity()},
        expected_params=TERMINATE,
    )
    with stub:
        provider.terminate(_group(), "i-0abc")
        stub.assert_no_pending_responses()
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0]


@pytest.mark.django_db
def test_a_scaling_activity_that_never_ends_fails_as_retryable() -> None:
    provider, stub, sleeps = _stubbed()
    for _ in range(3):
        stub.add_client_error(
            "terminate_instance_in_auto_scaling_group",
            service_error_code="ScalingActivityInProgress",
            service_message="Scaling activity abc is in progress",
        )
    with stub, pytest.raises(ProviderError, match="in progress") as error:
        provider.terminate(_group(), "i-0abc")
    assert error.value.retryable and len(sleeps) == 2


def _activity() -> dict[str, Any]:
    return {
        "ActivityId": "abc",
        "AutoScalingGroupName": "workers",
        "Cause": "terminated",
        "StartTime": datetime(2026, 6, 1, tzinfo=UTC),
        "StatusCode": "InProgress",
    }
