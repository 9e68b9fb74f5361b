"""Jobs on the runtime, through the official client: pods to completion, backoffLimit,
activeDeadlineSeconds, the Complete and Failed conditions, deletion with propagation.

Sources: pkg/controller/job (job_controller.go), pkg/apis/batch/v1/defaults.go,
pkg/apis/batch/validation, https://kubernetes.io/docs/concepts/workloads/controllers/job/.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from .conftest import runtime_present, wait_deleted, wait_for

pytestmark = pytest.mark.skipif(
    not runtime_present(), reason="the localcluster runtime is not in this checkout"
)


def job(name: str, env: dict[str, str], **spec: Any) -> dict[str, Any]:
    """A Job running demo/hello's migrate command once."""
    restart_policy = spec.pop("restart_policy", "Never")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            **spec,
            "template": {
                "metadata": {"labels": {"purpose": "test"}},
                "spec": {
                    "restartPolicy": restart_policy,
                    "containers": [
                        {
                            "name": "migrate",
                            "image": "demo/hello:1",
                            "args": ["migrate"],
                            "env": [{"name": k, "value": v} for k, v in env.items()],
                        }
                    ],
                },
            },
        },
    }


def conditions(obj: client.V1Job) -> dict[str, client.V1JobCondition]:
    """The Job's conditions by type."""
    return {c.type: c for c in obj.status.conditions or []}


def ended(obj: client.V1Job) -> bool:
    """Whether the Job has its terminal condition."""
    types = set(conditions(obj))
    return "Complete" in types or "Failed" in types


def test_a_job_runs_its_pod_to_completion_and_is_complete(
    core: client.CoreV1Api,
    api_client: client.ApiClient,
    namespace: str,
    kubectl: Callable[..., Any],
) -> None:
    batch = client.BatchV1Api(api_client)
    created = batch.create_namespaced_job(namespace, job("ok", {}))
    assert created.spec.completions == 1 and created.spec.parallelism == 1
    assert created.spec.backoff_limit == 6
    uid = created.metadata.uid
    assert created.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    assert created.spec.template.metadata.labels["job-name"] == "ok"

    done = wait_for(batch.list_namespaced_job, namespace, name="ok", check=ended)
    found = conditions(done)
    assert set(found) == {"SuccessCriteriaMet", "Complete"}
    complete = found["Complete"]
    assert (complete.status, complete.reason) == ("True", "CompletionsReached")
    assert complete.message == "Reached expected number of succeeded pods"
    assert complete.last_probe_time and complete.last_transition_time
    assert done.status.succeeded == 1 and not done.status.failed and not done.status.active
    assert done.status.start_time <= done.status.completion_time
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=ok").items
    assert [p.status.phase for p in pods] == ["Succeeded"]
    assert pods[0].metadata.owner_references[0].kind == "Job"
    log = core.read_namespaced_pod_log(pods[0].metadata.name, namespace)
    assert "migrate done" in log
    # kubectl finds the Job's pod through its selector, and lists the Job.
    assert "migrate done" in kubectl("logs", "job/ok", "-n", namespace).stdout
    assert "ok" in kubectl("get", "jobs", "-n", namespace).stdout

    # Background propagation deletes the Job's pods with it.
    batch.delete_namespaced_job(
        "ok", namespace, body=client.V1DeleteOptions(propagation_policy="Background")
    )
    wait_deleted(core.list_namespaced_pod, namespace, name=pods[0].metadata.name)


def test_a_failing_pod_is_retried_up_to_the_backoff_limit_then_the_job_fails(
    core: client.CoreV1Api, api_client: client.ApiClient, namespace: str
) -> None:
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(namespace, job("bad", {"DEMO_MIGRATE_FAIL": "1"}, backoffLimit=1))
    done = wait_for(batch.list_namespaced_job, namespace, name="bad", check=ended, timeout=60)
    found = conditions(done)
    assert set(found) == {"FailureTarget", "Failed"}
    failed = found["Failed"]
    assert (failed.status, failed.reason) == ("True", "BackoffLimitExceeded")
    assert failed.message == "Job has reached the specified backoff limit"
    # One pod and one retry: backoffLimit 1 allows one failure, the second ends the Job.
    assert done.status.failed == 2 and not done.status.succeeded
    assert done.status.completion_time is None
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=bad").items
    assert sorted(p.status.phase for p in pods) == ["Failed", "Failed"]

    # Foreground propagation: the pods go first, then the Job.
    batch.delete_namespaced_job(
        "bad", namespace, body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    wait_deleted(batch.list_namespaced_job, namespace, name="bad")
    assert not core.list_namespaced_pod(namespace, label_selector="job-name=bad").items


def test_a_job_past_its_deadline_has_its_pod_killed_and_fails(
    core: client.CoreV1Api, api_client: client.ApiClient, namespace: str
) -> None:
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(
        namespace,
        job("slow", {"DEMO_MIGRATE_SLEEP": "60"}, activeDeadlineSeconds=2, backoffLimit=0),
    )
    done = wait_for(batch.list_namespaced_job, namespace, name="slow", check=ended, timeout=45)
    failed = conditions(done)["Failed"]
    assert (failed.reason, failed.message) == (
        "DeadlineExceeded",
        "Job was active longer than specified deadline",
    )
    assert done.status.failed == 1 and not done.status.active
    # The pod past the deadline is killed: gone, or deleted and on its way out (its phase
    # is the kubelet's to write, which may come a moment later on a loaded machine).
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=slow").items
    assert all(p.metadata.deletion_timestamp for p in pods), [
        (p.metadata.name, p.status.phase) for p in pods
    ]
    assert done.status.terminating == 0


def test_a_job_needs_restart_policy_never_or_on_failure(
    api_client: client.ApiClient, namespace: str
) -> None:
    batch = client.BatchV1Api(api_client)
    with pytest.raises(client.ApiException) as caught:
        batch.create_namespaced_job(namespace, job("always", {}, restart_policy="Always"))
    assert caught.value.status == 422
    message = json.loads(caught.value.body)["message"]
    assert 'spec.template.spec.restartPolicy: Unsupported value: "Always"' in message


def test_deleting_a_job_without_a_propagation_policy_orphans_its_pods(
    core: client.CoreV1Api, api_client: client.ApiClient, namespace: str
) -> None:
    # batch/v1 keeps the old default (the job strategy's DefaultGarbageCollectionPolicy).
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_job(namespace, job("kept", {}))
    wait_for(batch.list_namespaced_job, namespace, name="kept", check=ended)
    batch.delete_namespaced_job("kept", namespace)
    wait_deleted(batch.list_namespaced_job, namespace, name="kept")
    (pod,) = core.list_namespaced_pod(namespace, label_selector="job-name=kept").items
    assert not pod.metadata.owner_references
    assert pod.status.phase == "Succeeded"
