"""The resource types localcluster serves, keyed as ``"pods"`` or ``"deployments.apps"``.

A resource key is ``<plural>`` for the core group and ``<plural>.<group>`` for
others, the same spelling kubectl accepts. Store methods take either the key or
the ``Resource`` object; ``lookup()`` turns one into the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class Resource:
    """One REST resource type: where it lives in the API and how it behaves."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # Objects whose spec changes bump metadata.generation (apps, policy).
    has_generation: bool = False
    # kube-apiserver answers DELETE with the object rather than a Status for these
    # (ReturnDeletedObject in pkg/registry/**/storage/storage.go).
    returns_deleted_object: bool = False
    # PUT may create (AllowCreateOnUpdate in the resource's strategy).
    create_on_update: bool = False
    # Field selectors beyond metadata.name/metadata.namespace (the resource's GetAttrs).
    fields: tuple[str, ...] = ()
    verbs: tuple[str, ...] = field(default=ALL_VERBS)

    @property
    def key(self) -> str:
        """The store key: ``pods`` or ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def api_version(self) -> str:
        """The apiVersion objects of this resource carry (``v1``, ``apps/v1``)."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        """The lower-case singular name used in discovery."""
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        """The kind of a list of these objects."""
        return f"{self.kind}List"

    @property
    def has_status(self) -> bool:
        """Whether a status subresource exists (main PUT then preserves status)."""
        return "status" in self.subresources


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)

RESOURCES: tuple[Resource, ...] = (
    Resource(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        ("ns",),
        ("status", "finalize"),
        returns_deleted_object=True,
        fields=("status.phase",),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
    ),
    Resource(
        "",
        "v1",
        "pods",
        "Pod",
        True,
        ("po",),
        ("status", "log", "eviction", "binding"),
        ("all",),
        returns_deleted_object=True,
        fields=_POD_FIELDS,
    ),
    Resource(
        "",
        "v1",
        "services",
        "Service",
        True,
        ("svc",),
        ("status",),
        ("all",),
        returns_deleted_object=True,
        verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
    ),
    Resource("", "v1", "endpoints", "Endpoints", True, ("ep",), create_on_update=True),
    Resource(
        "", "v1", "nodes", "Node", False, ("no",), ("status",), fields=("spec.unschedulable",)
    ),
    Resource(
        "", "v1", "events", "Event", True, ("ev",), create_on_update=True, fields=_EVENT_FIELDS
    ),
    Resource("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Resource("", "v1", "secrets", "Secret", True, (), fields=("type",)),
    Resource(
        "", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), returns_deleted_object=True
    ),
    Resource(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        True,
        ("deploy",),
        ("status", "scale"),
        ("all",),
        has_generation=True,
    ),
    Resource(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        True,
        ("rs",),
        ("status", "scale"),
        ("all",),
        has_generation=True,
        fields=("status.replicas",),
    ),
    Resource(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        True,
        ("ds",),
        ("status",),
        ("all",),
        has_generation=True,
    ),
    Resource(
        "batch",
        "v1",
        "jobs",
        "Job",
        True,
        (),
        ("status",),
        ("all",),
        has_generation=True,
    ),
    Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", True),
    Resource(
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        True,
        ("pdb",),
        ("status",),
        has_generation=True,
    ),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    # Asked, answered and never stored (pkg/registry/authorization/selfsubjectaccessreview).
    Resource(
        "authorization.k8s.io",
        "v1",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        verbs=("create",),
    ),
)

# Kinds a POST asks a question of rather than stores (create-only reviews).
REVIEWS = frozenset({"selfsubjectaccessreviews.authorization.k8s.io"})

BY_KEY: dict[str, Resource] = {r.key: r for r in RESOURCES}
BY_PATH: dict[tuple[str, str, str], Resource] = {
    (r.group, r.version, r.plural): r for r in RESOURCES
}
BY_KIND: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in RESOURCES}
GROUPS: dict[str, list[str]] = {}
for _r in RESOURCES:
    if _r.group and _r.version not in GROUPS.setdefault(_r.group, []):
        GROUPS[_r.group].append(_r.version)


# A resource by its key ("pods", "deployments.apps") or as the Resource itself.
ResourceRef = str | Resource


def lookup(resource: ResourceRef) -> Resource:
    """Return the Resource for a key such as ``pods`` or ``deployments.apps``; KeyError if unknown."""
    if isinstance(resource, Resource):
        return resource
    return BY_KEY[resource]
