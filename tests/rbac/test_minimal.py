"""deploy/base/rbac.yaml is minimal: take away any one verb of any rule and something
Greenlight does fails, with an error (or a logged warning) naming that verb and resource.

Each (apiGroup, resource, verb) rbac.yaml grants has a probe: a call Greenlight's own code
makes (deployer.cluster.KubeCluster, scaling.kube.KubeNodes, the pod event feed) as
Greenlight's service account. The probe first passes with rbac.yaml bound as it is, then
fails once that one verb is removed. A verb no probe needs fails the test: remove it from
the file, or name the code that needs it here. One deploy, end to end, shows the same
message as its failure reason.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from deployer import k8s, services
from deployer.cluster import KubeCluster
from deployer.errors import KubeError, NotFound
from deployer.hooks import HookJobs, build_job, job_name
from deployer.models import App, Deployment
from deployer.podevents import PodEventFeed
from deployer.pods import PodInfo
from deployer.traffic import ServiceTraffic
from scaling.kube import LOCAL_GROUP_LABEL, KubeNodes
from tests.deployer.test_integration import finished, make_app
from tests.servers import Stack as DeployStack

from .conftest import RBAC_FILE, EnforcingCluster, rbac_objects

pytestmark = pytest.mark.timeout(240)

NS = "default"
ABSENT = "rbac-probe-absent"


@dataclass
class Probe:
    """Greenlight doing one thing: ``run`` must pass with rbac.yaml, fail without the verb.

    ``prepare`` and ``cleanup`` run with rbac.yaml whole, around it.
    """

    run: Callable[[Env], None]
    prepare: Callable[[Env], None] = lambda env: None
    cleanup: Callable[[Env], None] = lambda env: None


@dataclass
class Env:
    """What probes work on: an app's descriptor, a version number and a node."""

    descriptor: dict[str, Any]
    version: int
    node: str
    created_node: str = ""

    @property
    def app(self) -> str:
        return str(self.descriptor["name"])


class Warnings(logging.Handler):
    """Collects warnings of the deployer's loggers, which say what the API refused."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _fresh(env: Env) -> None:
    KubeCluster().delete_version(NS, env.app, env.version)


def _existing(env: Env) -> None:
    KubeCluster().create_version(env.descriptor, env.version)


def _event_feed(env: Env) -> None:
    feed = PodEventFeed(k8s.core_v1(), NS, f"{env.app}-")
    thread = threading.Thread(target=feed._run, daemon=True)
    thread.start()
    time.sleep(1.5)  # the list, then a watch window
    feed.stop()
    thread.join(5)


def _create_node(env: Env) -> None:
    env.created_node = f"rbac-probe-{secrets.token_hex(3)}"
    KubeNodes().create_node(env.created_node, {LOCAL_GROUP_LABEL: "rbac-probe"})


def _delete_created_node(env: Env) -> None:
    if env.created_node:
        KubeNodes().delete_node(env.created_node)


def _watch_node(env: Env) -> None:
    nodes = KubeNodes()
    _, version = nodes.pods_on_node(env.node)
    list(nodes.watch_pods_on_node(env.node, version, 1))


def _evict_absent(env: Env) -> None:
    with contextlib.suppress(NotFound):  # allowed, and there is no such pod
        KubeNodes().evict(PodInfo(name=ABSENT, namespace=NS), None)


def _stable(env: Env) -> ServiceTraffic:
    return ServiceTraffic({**env.descriptor, "traffic": "service"})


def _endpoints_listed(env: Env) -> None:
    _stable(env).wait_endpoints(lambda ready: True, 1.0, lambda: False)


def _endpoints_watched(env: Env) -> None:
    with contextlib.suppress(TimeoutError):  # allowed: nothing changes within the second
        _stable(env).wait_endpoints(lambda ready: False, 1.0, lambda: False)


def _hook_body(env: Env) -> dict[str, Any]:
    descriptor = {**env.descriptor, "pre_switch_hook": {"command": "migrate", "timeout": 30}}
    return build_job(descriptor, env.version, 0, "", [])


def _hook_created(env: Env) -> None:
    HookJobs().create(NS, _hook_body(env))


def _hook_gone(env: Env) -> None:
    HookJobs().delete(NS, job_name(env.app, env.version))


# (apiGroup, resource, verb) -> the Greenlight call that needs it.
PROBES: dict[tuple[str, str, str], Probe] = {
    # deployer/cluster.py, in each app namespace
    ("apps", "deployments", "get"): Probe(
        lambda env: KubeCluster().version_exists(NS, env.app, env.version)
    ),
    ("apps", "deployments", "list"): Probe(lambda env: KubeCluster().versions(NS, env.app)),
    ("apps", "deployments", "create"): Probe(_existing, _fresh, _fresh),
    ("apps", "deployments", "update"): Probe(_existing, _existing, _fresh),
    ("apps", "deployments", "delete"): Probe(_fresh, _existing, _fresh),
    ("apps", "deployments/scale", "patch"): Probe(
        lambda env: KubeCluster().scale(NS, env.app, env.version, 1), _existing, _fresh
    ),
    ("", "services", "create"): Probe(_existing, _fresh, _fresh),
    ("", "services", "delete"): Probe(_fresh, _existing, _fresh),
    # deployer/traffic.py (traffic mode service), in each app namespace
    ("", "services", "get"): Probe(lambda env: _stable(env).read()),
    ("", "services", "patch"): Probe(
        lambda env: _stable(env).point(None),
        lambda env: _stable(env).ensure(None),
        lambda env: _stable(env).delete(),
    ),
    ("discovery.k8s.io", "endpointslices", "list"): Probe(_endpoints_listed),
    ("discovery.k8s.io", "endpointslices", "watch"): Probe(_endpoints_watched),
    ("policy", "poddisruptionbudgets", "create"): Probe(_existing, _fresh, _fresh),
    ("policy", "poddisruptionbudgets", "update"): Probe(_existing, _existing, _fresh),
    ("policy", "poddisruptionbudgets", "delete"): Probe(_fresh, _existing, _fresh),
    ("", "pods", "patch"): Probe(lambda env: KubeCluster().set_deletion_cost(NS, {ABSENT: None})),
    ("", "pods/log", "get"): Probe(lambda env: KubeCluster().pod_log_tail(NS, ABSENT)),
    ("", "events", "list"): Probe(_event_feed),
    ("", "events", "watch"): Probe(_event_feed),
    # deployer/hooks.py, the pre-switch hook's Job
    ("batch", "jobs", "create"): Probe(_hook_created, _hook_gone, _hook_gone),
    ("batch", "jobs", "get"): Probe(
        lambda env: HookJobs().get(NS, job_name(env.app, env.version)), _hook_created, _hook_gone
    ),
    ("batch", "jobs", "list"): Probe(lambda env: HookJobs().earlier(NS, env.app)),
    ("batch", "jobs", "delete"): Probe(lambda env: HookJobs().delete(NS, ABSENT)),
    # scaling/kube.py and deployer/endpointsync.py, cluster-wide
    ("", "nodes", "list"): Probe(lambda env: KubeNodes().list_nodes()),
    ("", "nodes", "patch"): Probe(lambda env: KubeNodes().set_unschedulable(env.node, False)),
    ("", "nodes", "delete"): Probe(lambda env: KubeNodes().delete_node(ABSENT)),
    ("", "nodes", "create"): Probe(_create_node, cleanup=_delete_created_node),
    ("", "pods", "list"): Probe(lambda env: KubeNodes().pods_by_node()),
    ("", "pods", "watch"): Probe(_watch_node),
    ("", "pods/eviction", "create"): Probe(_evict_absent),
    ("policy", "poddisruptionbudgets", "list"): Probe(lambda env: KubeNodes().list_budgets()),
}


def granted() -> list[tuple[str, int, str, str, str]]:
    """(role, rule index, apiGroup, resource, verb) for every verb rbac.yaml grants."""
    out = []
    for obj in rbac_objects():
        if obj["kind"] not in ("Role", "ClusterRole"):
            continue
        for index, rule in enumerate(obj.get("rules") or []):
            assert not rule.get("nonResourceURLs"), "Greenlight reads no non-resource URL"
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.append((obj["metadata"]["name"], index, group, resource, verb))
    return out


def without(role: str, index: int, verb: str) -> list[dict[str, Any]]:
    """rbac.yaml's objects with ``verb`` taken out of one rule (the rule gone if it was its last)."""
    objects = copy.deepcopy(rbac_objects())
    for obj in objects:
        if obj["kind"] in ("Role", "ClusterRole") and obj["metadata"]["name"] == role:
            rule = obj["rules"][index]
            rule["verbs"] = [v for v in rule["verbs"] if v != verb]
            if not rule["verbs"]:
                del obj["rules"][index]
    return objects


def rule_index(role: str, group: str, resource: str) -> int:
    """The index of ``role``'s rule on ``resource`` of ``group``."""
    for obj in rbac_objects():
        if obj["kind"] in ("Role", "ClusterRole") and obj["metadata"]["name"] == role:
            for index, rule in enumerate(obj["rules"]):
                if group in rule["apiGroups"] and resource in rule["resources"]:
                    return index
    raise AssertionError(f"{role} has no rule on {resource}")


@pytest.fixture
def env(enforcing: EnforcingCluster, settings: Any, db: None) -> Iterator[Env]:
    """Greenlight's settings (its token) and an app to work on."""
    settings.KUBE_IN_CLUSTER = False
    settings.KUBE_CONTEXT = None
    settings.KUBECONFIG = enforcing.greenlight
    k8s.reset()
    app = App.objects.create(
        name=f"probe{secrets.token_hex(2)}",
        image="demo/hello:1",
        replicas=1,
        frontend="probe.localhost",
    )
    node = sorted(n.name for n in KubeNodes().list_nodes())[0]
    yield Env(descriptor=app.snapshot(), version=1, node=node)
    enforcing.bind(rbac_objects())
    k8s.reset()


@pytest.mark.parametrize(
    ("role", "index", "group", "resource", "verb"),
    granted(),
    ids=[f"{r}-{g or 'core'}-{res}-{v}" for r, _, g, res, v in granted()],
)
def test_each_verb_rbac_yaml_grants_is_needed(
    enforcing: EnforcingCluster,
    env: Env,
    role: str,
    index: int,
    group: str,
    resource: str,
    verb: str,
) -> None:
    probe = PROBES.get((group, resource, verb))
    assert probe is not None, (
        f"{RBAC_FILE.name} grants {verb} on {resource} ({group or 'core'}) in {role}, "
        "which no call of Greenlight's needs: remove it, or add the call that needs it here"
    )
    warnings = Warnings()
    loggers = [logging.getLogger(name) for name in ("deployer.cluster", "deployer.podevents")]
    for logger in loggers:
        logger.addHandler(warnings)
    try:
        probe.prepare(env)
        probe.run(env)  # allowed with the file as it is
        assert warnings.lines == [], warnings.lines
        enforcing.bind(without(role, index, verb))
        failure = ""
        try:
            probe.run(env)
        except KubeError as exc:
            failure = str(exc)
        failure = failure or " ".join(warnings.lines)
    finally:
        for logger in loggers:
            logger.removeHandler(warnings)
        enforcing.bind(rbac_objects())
        probe.cleanup(env)
    assert f'cannot {verb} resource "{resource}" in API group "{group}"' in failure, (
        f"without {verb} on {resource}, Greenlight's call did not fail naming it: {failure!r}"
    )


def test_a_deploy_without_one_permission_fails_naming_it(
    enforcing: EnforcingCluster, live: DeployStack
) -> None:
    enforcing.bind(
        without("greenlight-deployer", rule_index("greenlight-deployer", "", "services"), "create")
    )
    try:
        app: App = make_app(name="norbac", frontend="norbac.localhost")
        deployment = finished(live, services.request_deploy(app))
    finally:
        enforcing.bind(rbac_objects())
    assert deployment.status == Deployment.Status.FAILED
    assert deployment.failure_reason == (
        'Forbidden: services is forbidden: User "system:serviceaccount:greenlight:greenlight" '
        'cannot create resource "services" in API group "" in the namespace "default"'
    )
    assert KubeCluster().versions("default", "norbac") == []  # rolled back
