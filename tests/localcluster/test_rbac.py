"""localcluster --authorization-mode=RBAC decides as kube-apiserver's RBAC authorizer does.

Sources: staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go (a request's
verb, namespace, resource, subresource and name), pkg/apis/rbac/v1/evaluation_helpers.go
(how a rule matches), plugin/pkg/auth/authorizer/rbac/rbac.go (bindings, the reasons),
.../endpoints/handlers/responsewriters/errors.go and apimachinery's NewForbidden (the 403),
and kubectl auth can-i (a SelfSubjectAccessReview). Checked with the official client and
kubectl, on an API-only localcluster of this module's own.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from localcluster.auth import User
from localcluster.rbac import Attributes, request_attributes, rule_allows
from tests.servers import LocalCluster, start_localcluster, tls_context

from .conftest import KUBECTL, validate

RBAC = "rbac.authorization.k8s.io"
TOKENS = {
    "alice": ("alice-token", "alice", "", "devs"),
    "bob": ("bob-token", "bob", "", "ops"),
    "root": ("root-token", "root", "", "system:masters"),
    "sa": ("sa-token", "system:serviceaccount:team:robot", "", "system:serviceaccounts"),
}
ALICE = User("alice", "1", ("devs",))


def attrs(method: str, path: str, **query: str) -> Attributes:
    return request_attributes(ALICE, method, path, query)


# ---------------------------------------------------------------- request attributes


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/namespaces/a/pods", {}, ("list", "a", "", "pods", "", "")),
        ("GET", "/api/v1/namespaces/a/pods", {"watch": "true"}, ("watch", "a", "", "pods", "", "")),
        ("GET", "/api/v1/pods", {"watch": "1"}, ("watch", "", "", "pods", "", "")),
        ("GET", "/api/v1/watch/namespaces/a/pods/p", {}, ("watch", "a", "", "pods", "", "p")),
        ("GET", "/api/v1/namespaces/a/pods/p", {}, ("get", "a", "", "pods", "", "p")),
        ("HEAD", "/api/v1/namespaces/a/pods/p", {}, ("get", "a", "", "pods", "", "p")),
        ("GET", "/api/v1/namespaces/a/pods/p/log", {}, ("get", "a", "", "pods", "log", "p")),
        (
            "POST",
            "/api/v1/namespaces/a/pods/p/eviction",
            {},
            ("create", "a", "", "pods", "eviction", "p"),
        ),
        ("POST", "/api/v1/namespaces/a/pods", {}, ("create", "a", "", "pods", "", "")),
        (
            "PUT",
            "/apis/apps/v1/namespaces/a/deployments/d",
            {},
            ("update", "a", "apps", "deployments", "", "d"),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/a/deployments/d/scale",
            {},
            ("patch", "a", "apps", "deployments", "scale", "d"),
        ),
        (
            "DELETE",
            "/apis/apps/v1/namespaces/a/deployments/d",
            {},
            ("delete", "a", "apps", "deployments", "", "d"),
        ),
        (
            "DELETE",
            "/apis/apps/v1/namespaces/a/deployments",
            {},
            ("deletecollection", "a", "apps", "deployments", "", ""),
        ),
        ("GET", "/api/v1/namespaces/a", {}, ("get", "a", "", "namespaces", "", "a")),
        (
            "PUT",
            "/api/v1/namespaces/a/finalize",
            {},
            ("update", "a", "", "namespaces", "finalize", "a"),
        ),
        ("GET", "/api/v1/namespaces", {}, ("list", "", "", "namespaces", "", "")),
        ("PATCH", "/api/v1/nodes/n1", {}, ("patch", "", "", "nodes", "", "n1")),
        (
            "GET",
            "/api/v1/namespaces/a/pods",
            {"fieldSelector": "metadata.name=p"},
            ("list", "a", "", "pods", "", "p"),
        ),
    ],
)
def test_a_request_becomes_the_attributes_kube_apiserver_derives(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    a = attrs(method, path, **query)
    assert a.resource_request
    assert (a.verb, a.namespace, a.group, a.resource, a.subresource, a.name) == expected


@pytest.mark.parametrize(
    ("method", "path", "verb"),
    [
        ("GET", "/api", "get"),
        ("GET", "/api/v1", "get"),
        ("GET", "/apis/apps/v1", "get"),
        ("GET", "/openapi/v3/apis/apps/v1", "get"),
        ("POST", "/version", "post"),
        ("GET", "/", "get"),
    ],
)
def test_paths_outside_the_resource_tree_are_non_resource_requests(
    method: str, path: str, verb: str
) -> None:
    a = attrs(method, path)
    assert not a.resource_request
    assert (a.verb, a.path) == (verb, path)


def resource(
    verb: str, resource: str, sub: str = "", name: str = "", group: str = ""
) -> Attributes:
    return Attributes(ALICE, verb, True, "", "a", group, "v1", resource, sub, name)


@pytest.mark.parametrize(
    ("rule", "request_", "allowed"),
    [
        (
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
            resource("get", "pods"),
            True,
        ),
        (
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
            resource("list", "pods"),
            False,
        ),
        (
            {"verbs": ["*"], "apiGroups": [""], "resources": ["pods"]},
            resource("watch", "pods"),
            True,
        ),
        (
            {"verbs": ["get"], "apiGroups": ["apps"], "resources": ["pods"]},
            resource("get", "pods"),
            False,
        ),
        (
            {"verbs": ["get"], "apiGroups": ["*"], "resources": ["pods"]},
            resource("get", "pods"),
            True,
        ),
        (
            {"verbs": ["get"], "apiGroups": [""], "resources": ["*"]},
            resource("get", "pods", "log"),
            True,
        ),
        # A resource grants no subresource, and a subresource not its resource.
        (
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
            resource("get", "pods", "log"),
            False,
        ),
        (
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]},
            resource("get", "pods"),
            False,
        ),
        (
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]},
            resource("get", "pods", "log"),
            True,
        ),
        (
            {"verbs": ["patch"], "apiGroups": ["apps"], "resources": ["*/scale"]},
            resource("patch", "deployments", "scale", group="apps"),
            True,
        ),
        (
            {"verbs": ["patch"], "apiGroups": ["apps"], "resources": ["*/scale"]},
            resource("patch", "deployments", "status", group="apps"),
            False,
        ),
        (
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["p"]},
            resource("get", "pods", name="p"),
            True,
        ),
        (
            {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["p"]},
            resource("get", "pods", name="q"),
            False,
        ),
        (
            {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["p"]},
            resource("list", "pods"),
            False,
        ),
        # nonResourceURLs never match a resource request, and resources never a path.
        ({"verbs": ["get"], "nonResourceURLs": ["*"]}, resource("get", "pods"), False),
        (
            {"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]},
            Attributes(ALICE, "get", False, "/healthz"),
            False,
        ),
        (
            {"verbs": ["get"], "nonResourceURLs": ["/metrics"]},
            Attributes(ALICE, "get", False, "/metrics"),
            True,
        ),
        (
            {"verbs": ["get"], "nonResourceURLs": ["/logs/*"]},
            Attributes(ALICE, "get", False, "/logs/a/b"),
            True,
        ),
        (
            {"verbs": ["get"], "nonResourceURLs": ["/logs/*"]},
            Attributes(ALICE, "get", False, "/logsx"),
            False,
        ),
        (
            {"verbs": ["get"], "nonResourceURLs": ["/metrics"]},
            Attributes(ALICE, "post", False, "/metrics"),
            False,
        ),
    ],
)
def test_a_rule_matches_as_kube_apiservers_rule_allows(
    rule: dict[str, Any], request_: Attributes, allowed: bool
) -> None:
    assert rule_allows(request_, rule) is allowed


# ---------------------------------------------------------------- against a cluster


@pytest.fixture(scope="module")
def enforcing(
    cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalCluster]:
    """An API-only localcluster of this module's own, enforcing RBAC for the TOKENS users."""
    if cluster.process is None:
        pytest.skip("checks the flags of a localcluster of its own")
    workdir = tmp_path_factory.mktemp("rbac")
    tokens = workdir / "tokens.csv"
    tokens.write_text(
        "".join(
            f'{t},{name},{uid or name},"{groups}"\n' for t, name, uid, groups in TOKENS.values()
        )
    )
    lc = start_localcluster(
        workdir,
        nodes=1,
        runtime=False,
        extra_args=["--authorization-mode", "RBAC", "--token-auth-file", str(tokens)],
    )
    try:
        yield lc
    finally:
        lc.stop()


def api_as(lc: LocalCluster, who: str | None) -> client.ApiClient:
    """An ApiClient for ``lc`` as a TOKENS user (None: the kubeconfig's admin)."""
    cfg = client.Configuration()
    config.load_kube_config(str(lc.kubeconfig), client_configuration=cfg)
    if who is not None:
        cfg.api_key = {"BearerToken": f"Bearer {TOKENS[who][0]}"}
        cfg.refresh_api_key_hook = None
    return client.ApiClient(cfg)


@pytest.fixture(scope="module")
def admin(enforcing: LocalCluster) -> Iterator[client.ApiClient]:
    api = api_as(enforcing, None)
    core = client.CoreV1Api(api)
    for ns in ("a", "b", "team"):
        core.create_namespace({"metadata": {"name": ns}})
        for pod in ("p", "q"):
            core.create_namespaced_pod(
                ns,
                {
                    "metadata": {"name": pod},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            )
    yield api
    api.close()


@pytest.fixture
def grant(admin: client.ApiClient) -> Iterator[Callable[..., None]]:
    """Create RBAC objects as the admin; each is deleted after the test."""
    rbac = client.RbacAuthorizationV1Api(admin)
    made: list[tuple[str, str | None, str]] = []

    def make(kind: str, body: dict[str, Any]) -> None:
        ns = body["metadata"].get("namespace")
        if kind == "Role":
            rbac.create_namespaced_role(ns, body)
        elif kind == "RoleBinding":
            rbac.create_namespaced_role_binding(ns, body)
        elif kind == "ClusterRole":
            rbac.create_cluster_role(body)
        else:
            rbac.create_cluster_role_binding(body)
        made.append((kind, ns, body["metadata"]["name"]))

    yield make
    for kind, ns, name in reversed(made):
        if kind == "Role":
            rbac.delete_namespaced_role(name, ns)
        elif kind == "RoleBinding":
            rbac.delete_namespaced_role_binding(name, ns)
        elif kind == "ClusterRole":
            rbac.delete_cluster_role(name)
        else:
            rbac.delete_cluster_role_binding(name)


def role(name: str, rules: list[dict[str, Any]], ns: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {"metadata": meta, "rules": rules}


def binding(
    name: str, role_kind: str, role_name: str, subjects: list[dict[str, Any]], ns: str | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if ns:
        meta["namespace"] = ns
    return {
        "metadata": meta,
        "roleRef": {"apiGroup": RBAC, "kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


def user(name: str) -> dict[str, str]:
    return {"kind": "User", "name": name, "apiGroup": RBAC}


def forbidden(call: Callable[[], Any]) -> dict[str, Any]:
    """The Status body of the 403 ``call`` must raise."""
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status == 403, info.value.body
    body = yaml.safe_load(info.value.body)
    validate(body)
    return body


POD_RULES = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]


def test_a_user_with_no_binding_gets_kube_apiservers_403(
    admin: client.ApiClient, enforcing: LocalCluster
) -> None:
    core = client.CoreV1Api(api_as(enforcing, "alice"))
    assert forbidden(lambda: core.read_namespaced_pod("p", "a")) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "p" is forbidden: User "alice" cannot get resource "pods" in API group "" in the namespace "a"',
        "reason": "Forbidden",
        "details": {"name": "p", "kind": "pods"},
        "code": 403,
    }
    listed = forbidden(
        lambda: client.AppsV1Api(core.api_client).list_deployment_for_all_namespaces()
    )
    assert listed["message"] == (
        'deployments.apps is forbidden: User "alice" cannot list resource "deployments" in API group "apps" at the cluster scope'
    )
    assert listed["details"] == {"group": "apps", "kind": "deployments"}
    # Nothing about the object leaks: a missing one is forbidden alike.
    assert "forbidden" in forbidden(lambda: core.read_namespaced_pod("absent", "a"))["message"]


def test_a_role_binding_grants_its_role_in_its_namespace_only(
    admin: client.ApiClient, enforcing: LocalCluster, grant: Callable[..., None]
) -> None:
    grant("Role", role("reader", POD_RULES, "a"))
    grant("RoleBinding", binding("alice-reads", "Role", "reader", [user("alice")], "a"))
    core = client.CoreV1Api(api_as(enforcing, "alice"))
    assert {p.metadata.name for p in core.list_namespaced_pod("a").items} == {"p", "q"}
    assert core.read_namespaced_pod("p", "a").metadata.name == "p"
    assert forbidden(lambda: core.list_namespaced_pod("b"))["message"].endswith(
        'cannot list resource "pods" in API group "" in the namespace "b"'
    )
    assert forbidden(lambda: core.list_pod_for_all_namespaces())["message"].endswith(
        "at the cluster scope"
    )
    watched = forbidden(lambda: core.list_namespaced_pod("a", watch=True, _preload_content=False))
    assert 'cannot watch resource "pods"' in watched["message"]
    assert (
        'cannot delete resource "pods"'
        in forbidden(lambda: core.delete_namespaced_pod("p", "a"))["message"]
    )
    bob = client.CoreV1Api(api_as(enforcing, "bob"))
    forbidden(lambda: bob.list_namespaced_pod("a"))


def test_a_cluster_role_binds_everywhere_or_in_one_namespace(
    admin: client.ApiClient, enforcing: LocalCluster, grant: Callable[..., None]
) -> None:
    grant("ClusterRole", role("pod-reader", POD_RULES))
    grant(
        "RoleBinding",
        binding(
            "devs-read-b",
            "ClusterRole",
            "pod-reader",
            [{"kind": "Group", "name": "devs", "apiGroup": RBAC}],
            "b",
        ),
    )
    core = client.CoreV1Api(api_as(enforcing, "alice"))
    assert len(core.list_namespaced_pod("b").items) == 2
    forbidden(lambda: core.list_namespaced_pod("a"))
    forbidden(lambda: core.list_pod_for_all_namespaces())
    grant(
        "ClusterRoleBinding",
        binding(
            "devs-read-all",
            "ClusterRole",
            "pod-reader",
            [{"kind": "Group", "name": "devs", "apiGroup": RBAC}],
        ),
    )
    assert len(core.list_pod_for_all_namespaces().items) >= 6
    assert len(core.list_namespaced_pod("a").items) == 2


def test_subresources_resource_names_and_service_accounts(
    admin: client.ApiClient, enforcing: LocalCluster, grant: Callable[..., None]
) -> None:
    grant(
        "Role",
        role(
            "robot",
            [
                {"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]},
                {
                    "apiGroups": [""],
                    "resources": ["pods"],
                    "verbs": ["get"],
                    "resourceNames": ["p"],
                },
                {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]},
            ],
            "team",
        ),
    )
    # A ServiceAccount subject without a namespace is the binding's namespace's.
    grant(
        "RoleBinding",
        binding("robot", "Role", "robot", [{"kind": "ServiceAccount", "name": "robot"}], "team"),
    )
    core = client.CoreV1Api(api_as(enforcing, "sa"))
    assert core.read_namespaced_pod("p", "team").metadata.name == "p"
    named = forbidden(lambda: core.read_namespaced_pod("q", "team"))
    assert named["message"].startswith(
        'pods "q" is forbidden: User "system:serviceaccount:team:robot" cannot get'
    )
    forbidden(lambda: core.list_namespaced_pod("team"))
    log = forbidden(lambda: core.read_namespaced_pod_log("p", "team"))
    assert (
        'cannot get resource "pods/log" in API group "" in the namespace "team"' in log["message"]
    )
    assert log["details"] == {"name": "p", "kind": "pods"}
    eviction = {"metadata": {"name": "q", "namespace": "team"}}
    core.create_namespaced_pod_eviction("q", "team", eviction)  # allowed: no budget stops it
    apps = client.AppsV1Api(core.api_client)
    with pytest.raises(ApiException) as info:
        apps.read_namespaced_deployment_scale("absent", "team")
    assert info.value.status == 404
    scale = forbidden(
        lambda: apps.patch_namespaced_deployment_scale("absent", "team", {"spec": {"replicas": 1}})
    )
    assert 'cannot patch resource "deployments/scale" in API group "apps"' in scale["message"]


def test_system_masters_may_do_anything_and_a_missing_role_is_named(
    admin: client.ApiClient, enforcing: LocalCluster, grant: Callable[..., None]
) -> None:
    root = client.CoreV1Api(api_as(enforcing, "root"))
    root.create_namespaced_config_map("b", {"metadata": {"name": "by-root"}})
    root.delete_namespaced_config_map("by-root", "b")
    assert root.list_node() is not None
    grant("RoleBinding", binding("dangling", "Role", "nope", [user("bob")], "a"))
    bob = client.CoreV1Api(api_as(enforcing, "bob"))
    assert forbidden(lambda: bob.list_namespaced_pod("a"))["message"].endswith(
        'in the namespace "a": RBAC: role.rbac.authorization.k8s.io "nope" not found'
    )


def test_authenticated_users_read_discovery_but_no_other_path(
    admin: client.ApiClient, enforcing: LocalCluster
) -> None:
    pool = urllib3.PoolManager(ssl_context=tls_context(enforcing.kubeconfig))

    def get(path: str) -> Any:
        return pool.request(
            "GET",
            f"https://127.0.0.1:{enforcing.port}{path}",
            headers={"Authorization": f"Bearer {TOKENS['bob'][0]}"},
            retries=False,
        )

    for path in (
        "/api",
        "/api/v1",
        "/apis",
        "/apis/apps/v1",
        "/version",
        "/openapi/v3",
        "/healthz",
    ):
        assert get(path).status == 200, path
    root = get("/")
    assert root.status == 403
    body = root.json()
    validate(body)
    assert body["message"] == 'forbidden: User "bob" cannot get path "/"'
    assert body["details"] == {}


def test_a_self_subject_access_review_answers_for_the_caller(
    admin: client.ApiClient, enforcing: LocalCluster, grant: Callable[..., None]
) -> None:
    grant("Role", role("reader", POD_RULES, "a"))
    grant("RoleBinding", binding("alice-reads", "Role", "reader", [user("alice")], "a"))
    authz = client.AuthorizationV1Api(api_as(enforcing, "alice"))

    def ask(**attributes: str) -> Any:
        review = {"spec": {"resourceAttributes": attributes}}
        return authz.create_self_subject_access_review(review).status

    yes = ask(namespace="a", verb="list", resource="pods")
    assert yes.allowed is True
    assert (
        yes.reason
        == 'RBAC: allowed by RoleBinding "alice-reads/a" of Role "reader" to User "alice"'
    )
    assert ask(namespace="b", verb="list", resource="pods").allowed is False
    assert ask(namespace="a", verb="get", resource="pods", subresource="log").allowed is False
    url = authz.create_self_subject_access_review(
        {"spec": {"nonResourceAttributes": {"path": "/apis/apps", "verb": "get"}}}
    )
    assert url.status.allowed is True
    with pytest.raises(ApiException) as info:
        authz.create_self_subject_access_review({"spec": {}})
    assert info.value.status == 422
    assert (
        "exactly one of nonResourceAttributes or resourceAttributes must be specified"
        in info.value.body
    )
    # Asked, never stored.
    assert client.RbacAuthorizationV1Api(admin).list_cluster_role().items == []


def test_kubectl_auth_can_i_and_a_forbidden_get(
    admin: client.ApiClient, enforcing: LocalCluster, grant: Callable[..., None], tmp_path: Path
) -> None:
    grant(
        "Role",
        role(
            "reader",
            POD_RULES + [{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}],
            "a",
        ),
    )
    grant("RoleBinding", binding("alice-reads", "Role", "reader", [user("alice")], "a"))

    def kubectl(*args: str, token: str | None = "alice-token") -> subprocess.CompletedProcess[str]:
        command = [KUBECTL, "--kubeconfig", str(enforcing.kubeconfig), "--cache-dir", str(tmp_path)]
        if token:
            command += ["--token", token]
        env = {**os.environ, "HOME": str(tmp_path)}
        return subprocess.run(
            command + list(args), capture_output=True, text=True, timeout=60, env=env
        )

    for args, answer in [
        (("get", "pods", "-n", "a"), "yes"),
        (("list", "pods", "-n", "a"), "yes"),
        (("get", "pods/log", "-n", "a"), "yes"),
        (("get", "pods", "--subresource", "log", "-n", "a"), "yes"),
        (("delete", "pods", "-n", "a"), "no"),
        (("get", "pods", "-n", "b"), "no"),
        (("get", "pods", "-A"), "no"),
        (("create", "deployments.apps", "-n", "a"), "no"),
    ]:
        done = kubectl("auth", "can-i", *args)
        assert (done.stdout.strip(), done.returncode) == (answer, 0 if answer == "yes" else 1), (
            args,
            done.stderr,
        )
    assert kubectl("auth", "can-i", "delete", "nodes", token=None).stdout.strip() == "yes"
    assert kubectl("get", "pods", "-n", "a", "-o", "name").stdout.split() == ["pod/p", "pod/q"]
    denied = kubectl("get", "pods", "-n", "b")
    assert denied.returncode == 1
    assert (
        'Error from server (Forbidden): pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "b"'
        in denied.stderr
    )


def invalid_message(call: Callable[[], Any]) -> str:
    """The message of the 422 ``call`` must raise."""
    with pytest.raises(ApiException) as info:
        call()
    assert info.value.status == 422, info.value.body
    body = yaml.safe_load(info.value.body)
    validate(body)
    return str(body["message"])


def test_roles_and_bindings_are_checked_defaulted_and_a_role_ref_kept(
    admin: client.ApiClient, grant: Callable[..., None]
) -> None:
    rbac = client.RbacAuthorizationV1Api(admin)
    assert invalid_message(
        lambda: rbac.create_namespaced_role(
            "a",
            role("bad", [{"verbs": ["get"], "nonResourceURLs": ["/x"]}, {"verbs": ["get"]}], "a"),
        )
    ) == (
        'Role.rbac.authorization.k8s.io "bad" is invalid: ['
        'rules[0].nonResourceURLs: Invalid value: []string{"/x"}: namespaced rules cannot apply to non-resource URLs, '
        "rules[1].apiGroups: Required value: resource rules must supply at least one api group, "
        "rules[1].resources: Required value: resource rules must supply at least one resource]"
    )
    subjects = [
        {"kind": "ServiceAccount", "name": "robot"},
        {"kind": "Robot", "name": "r2"},
    ]
    assert invalid_message(
        lambda: rbac.create_cluster_role_binding(binding("bad", "Role", "x", subjects))
    ) == (
        'ClusterRoleBinding.rbac.authorization.k8s.io "bad" is invalid: ['
        'roleRef.kind: Unsupported value: "Role": supported values: "ClusterRole", '
        "subjects[0].namespace: Required value, "
        'subjects[1].kind: Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group"]'
    )
    assert rbac.list_cluster_role_binding().items == []  # nothing stored
    grant(
        "RoleBinding", binding("kept", "Role", "reader", [{"kind": "User", "name": "alice"}], "a")
    )
    stored = rbac.read_namespaced_role_binding("kept", "a")
    assert stored.subjects[0].api_group == RBAC  # defaulted, as SetDefaults_Subject does
    assert invalid_message(
        lambda: rbac.patch_namespaced_role_binding("kept", "a", {"roleRef": {"name": "other"}})
    ) == (
        'RoleBinding.rbac.authorization.k8s.io "kept" is invalid: roleRef: Invalid value: '
        'rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"Role", Name:"other"}: cannot change roleRef'
    )
    rbac.patch_namespaced_role_binding("kept", "a", {"subjects": [user("bob")]})


def test_impersonation_needs_the_impersonate_verb_and_acts_as_that_identity(
    admin: client.ApiClient, enforcing: LocalCluster, grant: Callable[..., None], tmp_path: Path
) -> None:
    grant("Role", role("reader", POD_RULES, "a"))
    grant("RoleBinding", binding("alice-reads", "Role", "reader", [user("alice")], "a"))
    grant(
        "RoleBinding",
        binding(
            "robot-reads",
            "Role",
            "reader",
            [{"kind": "ServiceAccount", "name": "robot", "namespace": "team"}],
            "a",
        ),
    )

    def kubectl(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [KUBECTL, "--kubeconfig", str(enforcing.kubeconfig), "--cache-dir", str(tmp_path)]
        if token:
            command += ["--token", token]
        env = {**os.environ, "HOME": str(tmp_path)}
        return subprocess.run(
            command + list(args), capture_output=True, text=True, timeout=60, env=env
        )

    # The admin (system:masters) may impersonate anyone: can-i then answers for them.
    for who, answer in [
        ("alice", "yes"),
        ("bob", "no"),
        ("system:serviceaccount:team:robot", "yes"),
        ("system:serviceaccount:team:other", "no"),
    ]:
        done = kubectl("auth", "can-i", "list", "pods", "-n", "a", "--as", who)
        assert done.stdout.strip() == answer, (who, done.stderr)
    assert (
        kubectl(
            "auth",
            "can-i",
            "list",
            "pods",
            "-n",
            "a",
            "--as",
            "bob",
            "--as-group",
            "system:masters",
        ).stdout.strip()
        == "yes"
    )
    as_alice = kubectl("get", "pods", "-n", "b", "--as", "alice")
    assert 'User "alice" cannot list resource "pods"' in as_alice.stderr

    # Anyone else needs the impersonate verb on the users, groups or service accounts named.
    denied = kubectl("get", "pods", "-n", "a", "--as", "root", token="alice-token")
    assert (
        'users "root" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope'
        in denied.stderr
    )
    grant(
        "ClusterRole",
        role(
            "impersonator",
            [
                {
                    "apiGroups": [""],
                    "resources": ["users"],
                    "verbs": ["impersonate"],
                    "resourceNames": ["bob"],
                }
            ],
        ),
    )
    grant(
        "ClusterRoleBinding",
        binding("alice-impersonates", "ClusterRole", "impersonator", [user("alice")]),
    )
    as_bob = kubectl("get", "pods", "-n", "a", "--as", "bob", token="alice-token")
    assert 'User "bob" cannot list resource "pods"' in as_bob.stderr
    group = kubectl(
        "get", "pods", "-n", "a", "--as", "bob", "--as-group", "system:masters", token="alice-token"
    )
    assert (
        'groups "system:masters" is forbidden: User "alice" cannot impersonate resource "groups"'
        in group.stderr
    )
    sa = kubectl(
        "get", "pods", "-n", "a", "--as", "system:serviceaccount:team:robot", token="alice-token"
    )
    assert (
        'serviceaccounts "robot" is forbidden: User "alice" cannot impersonate resource "serviceaccounts" in API group "" in the namespace "team"'
        in sa.stderr
    )

    pool = urllib3.PoolManager(ssl_context=tls_context(enforcing.kubeconfig))
    alone = pool.request(
        "GET",
        f"https://127.0.0.1:{enforcing.port}/api/v1/namespaces/a/pods",
        headers={"Authorization": "Bearer root-token", "Impersonate-Group": "devs"},
        retries=False,
    )
    assert alone.status == 400
    assert "requires impersonating a user" in alone.json()["message"]
