"""Evicting a pod that is not Ready under a PodDisruptionBudget.

Source: pkg/registry/core/pod/storage/eviction.go. A pod that is not Ready does not count
towards the budget's healthy pods, so evicting it spends no disruption: with the default
unhealthyPodEvictionPolicy (IfHealthyBudget) it goes while the budget has its desired
healthy pods without it (currentHealthy >= desiredHealthy > 0), with AlwaysAllow always.
A Ready pod still needs a disruption the budget allows (429 otherwise).
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from .conftest import runtime_present
from .runtime_support import deployment, is_ready, watch_until

pytestmark = pytest.mark.skipif(
    not runtime_present(), reason="the localcluster runtime is not in this checkout"
)

LABEL = {"budgeted": "yes"}


def budgeted(name: str, replicas: int, ready: bool) -> dict[str, Any]:
    """A hello Deployment whose pods carry LABEL; ``ready=False``: a probe that always fails."""
    body = deployment(name, replicas=replicas)
    body["spec"]["template"]["metadata"]["labels"].update(LABEL)
    if not ready:
        probe = body["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        probe["httpGet"]["path"] = "/no-such-page"
    return body


def evict(core: client.CoreV1Api, namespace: str, name: str) -> int:
    """POST the pod's eviction; the HTTP status (201, or the error's)."""
    body = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
    }
    try:
        core.create_namespaced_pod_eviction(name, namespace, body)
    except client.ApiException as exc:
        return int(exc.status)
    return 201


def test_a_pod_that_is_not_ready_is_evicted_without_spending_a_disruption(
    core: client.CoreV1Api, apps: client.AppsV1Api, policy: client.PolicyV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, budgeted("healthy", 2, ready=True))
    apps.create_namespaced_deployment(namespace, budgeted("sick", 1, ready=False))
    policy.create_namespaced_pod_disruption_budget(
        namespace,
        {
            "metadata": {"name": "budget"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": LABEL}},
        },
    )

    def pods(**kwargs: Any) -> Any:
        return core.list_namespaced_pod(namespace, label_selector="budgeted=yes", **kwargs)

    def budgets(**kwargs: Any) -> Any:
        return policy.list_namespaced_pod_disruption_budget(namespace, **kwargs)

    def running(app: str, ready: bool) -> Any:
        def check(found: dict[str, Any]) -> bool:
            return any(
                p["metadata"]["labels"]["app"] == app
                and (p.get("status") or {}).get("phase") == "Running"
                and not p["metadata"].get("deletionTimestamp")
                and is_ready(p) == ready
                for p in found.values()
            )

        return check

    found = watch_until(
        pods,
        lambda ps: (
            running("sick", False)(ps)
            and sum(is_ready(p) for p in ps.values() if p["metadata"]["labels"]["app"] == "healthy")
            == 2
        ),
    )
    status = watch_until(
        budgets,
        lambda b: (
            (b.get("budget", {}).get("status") or {}).get("expectedPods") == 3
            and b["budget"]["status"].get("currentHealthy") == 2
        ),
    )["budget"]["status"]
    assert (status["desiredHealthy"], status["disruptionsAllowed"]) == (2, 0)
    sick = next(n for n, p in found.items() if p["metadata"]["labels"]["app"] == "sick")
    healthy = next(n for n, p in found.items() if p["metadata"]["labels"]["app"] == "healthy")

    # A Ready pod needs a disruption the budget does not allow; the sick one needs none.
    assert evict(core, namespace, healthy) == 429
    assert evict(core, namespace, sick) == 201
    gone = core.list_namespaced_pod(namespace, field_selector=f"metadata.name={sick}").items
    assert not gone or gone[0].metadata.deletion_timestamp is not None
    budget = policy.read_namespaced_pod_disruption_budget("budget", namespace)
    assert sick not in (budget.status.disrupted_pods or {})
    assert budget.status.disruptions_allowed == 0

    # Without its desired healthy pods the budget keeps a sick pod (IfHealthyBudget) ...
    policy.patch_namespaced_pod_disruption_budget(
        "budget", namespace, {"spec": {"minAvailable": 3}}
    )
    found = watch_until(pods, running("sick", False))
    sick = next(
        n
        for n, p in found.items()
        if p["metadata"]["labels"]["app"] == "sick" and not p["metadata"].get("deletionTimestamp")
    )
    watch_until(
        budgets,
        lambda b: (
            (b.get("budget", {}).get("status") or {}).get("desiredHealthy") == 3
            and b["budget"]["status"].get("observedGeneration")
            == b["budget"]["metadata"].get("generation")
        ),
    )
    assert evict(core, namespace, sick) == 429
    # ... unless its policy is AlwaysAllow.
    policy.patch_namespaced_pod_disruption_budget(
        "budget", namespace, {"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}}
    )
    assert evict(core, namespace, sick) == 201
    assert evict(core, namespace, healthy) == 429
