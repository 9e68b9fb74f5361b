"""Authorization as kube-apiserver does it: AlwaysAllow, or RBAC over the stored roles.

``--authorization-mode=AlwaysAllow`` (the default) lets every authenticated
caller do anything. ``--authorization-mode=RBAC`` decides each request the way
kube-apiserver's authorizer chain does with ``--authorization-mode=RBAC``:

- members of ``system:masters`` may do anything
  (staging/src/k8s.io/apiserver/pkg/authorization/authorizerfactory, ``NewPrivilegedGroups``);
- anyone else may do what a rule of a Role or ClusterRole bound to them allows
  (plugin/pkg/auth/authorizer/rbac/rbac.go and
  pkg/apis/rbac/v1/evaluation_helpers.go): ClusterRoleBindings grant their
  ClusterRole everywhere, RoleBindings grant their Role or ClusterRole in their
  own namespace. Verbs, apiGroups, resources (``*``, ``pods/log``, ``*/scale``),
  resourceNames and nonResourceURLs (``/apis/*``) match as there; aggregation
  rules are not evaluated.
- every authenticated user is in ``system:authenticated``, which the bootstrap
  policy's ``system:basic-user``, ``system:discovery`` and
  ``system:public-info-viewer`` ClusterRoles are bound to: they may ask
  SelfSubjectAccessReviews, read discovery and /openapi, /version and the
  health paths. These three are built in, not stored.

Each HTTP request becomes request attributes as
staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go computes
them; a denial is the 403 of .../endpoints/handlers/responsewriters/errors.go.
A SelfSubjectAccessReview (what ``kubectl auth can-i`` creates) is answered
from the same decision and never stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from .auth import User
from .errors import (
    BadRequest,
    Forbidden,
    field_invalid,
    field_not_supported,
    field_required,
    invalid,
)
from .resources import Resource
from .store import Store

MODES = ("AlwaysAllow", "RBAC")
RBAC_GROUP = "rbac.authorization.k8s.io"
MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}

Rule = Mapping[str, Any]

# The bootstrap policy's rules for system:authenticated
# (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go), as (ClusterRole, rules).
BUILT_IN: tuple[tuple[str, tuple[Rule, ...]], ...] = (
    (
        "system:basic-user",
        (
            {
                "verbs": ["create"],
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
            },
        ),
    ),
    (
        "system:discovery",
        (
            {
                "verbs": ["get"],
                "nonResourceURLs": [
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            },
        ),
    ),
    (
        "system:public-info-viewer",
        (
            {
                "verbs": ["get"],
                "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
            },
        ),
    ),
)


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do (authorizer.AttributesRecord)."""

    user: User
    verb: str
    resource_request: bool
    path: str = ""
    namespace: str = ""
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""


def request_attributes(user: User, method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """The attributes kube-apiserver's RequestInfoFactory derives from a request."""
    parts = [p for p in path.strip("/").split("/") if p]
    plain = Attributes(user, method.lower(), False, path=path)
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return plain
    rest = parts[1:]
    group = ""
    if parts[0] == "apis":
        if len(rest) < 3:
            return plain
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    if rest[0] == "watch":
        verb, rest = "watch", rest[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "").lower() in ("1", "true") else "list"
        # A list or watch of one name (fieldSelector=metadata.name=x) is about that name.
        for term in (query.get("fieldSelector") or "").split(","):
            key, sep, value = term.partition("=")
            if sep and key.strip() == "metadata.name" and not value.startswith("="):
                name = value.strip()
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(
        user, verb, True, path, namespace, group, version, resource, subresource, name
    )


# ------------------------------------------------------------------ validation

Causes = list[dict[str, str]]


class _GoValue:
    """A value printed as Go's %#v prints it (unquoted), in a FieldValueInvalid cause."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def _rule_causes(rule: Mapping[str, Any], namespaced: bool, path: str) -> Causes:
    causes: Causes = []
    if not rule.get("verbs"):
        causes.append(field_required(f"{path}.verbs", "verbs must contain at least one value"))
    urls = rule.get("nonResourceURLs")
    if urls:
        shown = _GoValue("[]string{" + ", ".join(f'"{u}"' for u in urls) + "}")
        if namespaced:
            causes.append(
                field_invalid(
                    f"{path}.nonResourceURLs",
                    shown,
                    "namespaced rules cannot apply to non-resource URLs",
                )
            )
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            causes.append(
                field_invalid(
                    f"{path}.nonResourceURLs",
                    shown,
                    "rules cannot apply to both regular resources and non-resource URLs",
                )
            )
        return causes
    if not rule.get("apiGroups"):
        causes.append(
            field_required(f"{path}.apiGroups", "resource rules must supply at least one api group")
        )
    if not rule.get("resources"):
        causes.append(
            field_required(f"{path}.resources", "resource rules must supply at least one resource")
        )
    return causes


def _subject_causes(subject: dict[str, Any], namespaced: bool, path: str) -> Causes:
    causes: Causes = []
    kind = subject.get("kind", "")
    if kind in ("User", "Group") and not subject.get("apiGroup"):
        subject["apiGroup"] = RBAC_GROUP  # SetDefaults_Subject
    if not subject.get("name"):
        causes.append(field_required(f"{path}.name"))
    if kind == "ServiceAccount":
        if subject.get("apiGroup"):
            causes.append(field_not_supported(f"{path}.apiGroup", subject["apiGroup"], [""]))
        if not namespaced and not subject.get("namespace"):
            causes.append(field_required(f"{path}.namespace"))
    elif kind in ("User", "Group"):
        if subject["apiGroup"] != RBAC_GROUP:
            causes.append(
                field_not_supported(f"{path}.apiGroup", subject["apiGroup"], [RBAC_GROUP])
            )
    else:
        causes.append(
            field_not_supported(f"{path}.kind", kind, ["ServiceAccount", "User", "Group"])
        )
    return causes


def validate(res: Resource, obj: dict[str, Any], old: Mapping[str, Any] | None) -> None:
    """Default and check a Role, ClusterRole or binding as pkg/apis/rbac/validation does; 422 if bad.

    ``old`` is the stored object an update replaces (a binding's roleRef cannot change).
    """
    causes: Causes = []
    if res.kind in ("Role", "ClusterRole"):
        for index, rule in enumerate(obj.get("rules") or []):
            causes += _rule_causes(rule, res.kind == "Role", f"rules[{index}]")
    elif res.kind in ("RoleBinding", "ClusterRoleBinding"):
        ref = obj.setdefault("roleRef", {})
        if not ref.get("apiGroup"):
            ref["apiGroup"] = RBAC_GROUP  # SetDefaults_RoleBinding
        if ref["apiGroup"] != RBAC_GROUP:
            causes.append(field_not_supported("roleRef.apiGroup", ref["apiGroup"], [RBAC_GROUP]))
        kinds = ["Role", "ClusterRole"] if res.kind == "RoleBinding" else ["ClusterRole"]
        if ref.get("kind") not in kinds:
            causes.append(field_not_supported("roleRef.kind", ref.get("kind", ""), kinds))
        if not ref.get("name"):
            causes.append(field_required("roleRef.name"))
        for index, subject in enumerate(obj.get("subjects") or []):
            causes += _subject_causes(subject, res.namespaced, f"subjects[{index}]")
        if old is not None and not causes and old.get("roleRef") != ref:
            shown = _GoValue(
                f'rbac.RoleRef{{APIGroup:"{ref.get("apiGroup", "")}", '
                f'Kind:"{ref.get("kind", "")}", Name:"{ref.get("name", "")}"}}'
            )
            causes.append(field_invalid("roleRef", shown, "cannot change roleRef"))
    else:
        return
    if causes:
        raise invalid(res.kind, res.group, (obj.get("metadata") or {}).get("name") or "", causes)


# ------------------------------------------------------------------ rule matching


def _has(values: Any, wanted: str) -> bool:
    return isinstance(values, list) and ("*" in values or wanted in values)


def _resource_matches(rule: Rule, resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for r in rule.get("resources") or []:
        if r == "*" or r == combined:
            return True
        if subresource and r == f"*/{subresource}":
            return True
    return False


def _url_matches(rule: Rule, path: str) -> bool:
    for url in rule.get("nonResourceURLs") or []:
        if url == "*" or url == path:
            return True
        if url.endswith("*") and path.startswith(url.rstrip("*")):
            return True
    return False


def rule_allows(attrs: Attributes, rule: Rule) -> bool:
    """Whether one PolicyRule allows the request (RuleAllows in evaluation_helpers.go)."""
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        return _url_matches(rule, attrs.path)
    names = rule.get("resourceNames") or []
    return (
        _has(rule.get("apiGroups"), attrs.group)
        and _resource_matches(rule, attrs.resource, attrs.subresource)
        and (not names or attrs.name in names)
    )


def _applies_to(user: User, subject: Mapping[str, Any], namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return user.name == name
    if kind == "Group":
        return name in user.groups or name == AUTHENTICATED
    if kind == "ServiceAccount":
        sa_namespace = subject.get("namespace") or namespace
        return bool(sa_namespace) and user.name == f"system:serviceaccount:{sa_namespace}:{name}"
    return False


def _describe_subject(subject: Mapping[str, Any], namespace: str) -> str:
    name = subject.get("name", "")
    if subject.get("kind") == "ServiceAccount":
        name = f"{name}/{subject.get('namespace') or namespace}"
    return f'{subject.get("kind", "")} "{name}"'


class RBAC:
    """Decides requests from the Roles, ClusterRoles and bindings in ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _role_rules(self, kind: str, name: str, namespace: str) -> list[Rule] | str:
        """A role's rules, or the error naming the role that does not exist."""
        if kind == "ClusterRole":
            obj = self.store.peek(f"clusterroles.{RBAC_GROUP}", None, name)
            if obj is None:
                return f'clusterrole.{RBAC_GROUP} "{name}" not found'
        elif kind == "Role":
            obj = self.store.peek(f"roles.{RBAC_GROUP}", namespace, name)
            if obj is None:
                return f'role.{RBAC_GROUP} "{name}" not found'
        else:
            return f"unsupported role reference kind: {kind!r}"
        return [r for r in obj.get("rules") or [] if isinstance(r, Mapping)]

    def _grants(self, attrs: Attributes) -> Iterator[tuple[str, list[Rule] | str]]:
        """(who grants, rules or an error) for every binding naming the user, cluster ones first."""
        user = attrs.user
        for role, rules in BUILT_IN:
            yield (
                f'ClusterRoleBinding "{role}" of ClusterRole "{role}" to Group "{AUTHENTICATED}"',
                list(rules),
            )
        for entry in self.store.select(f"clusterrolebindings.{RBAC_GROUP}"):
            binding = entry.obj
            ref = binding.get("roleRef") or {}
            for subject in binding.get("subjects") or []:
                if isinstance(subject, Mapping) and _applies_to(user, subject, ""):
                    source = (
                        f'ClusterRoleBinding "{binding["metadata"]["name"]}" of '
                        f'{ref.get("kind")} "{ref.get("name")}" to {_describe_subject(subject, "")}'
                    )
                    if ref.get("kind") != "ClusterRole":
                        yield source, f"unsupported role reference kind: {ref.get('kind')!r}"
                    else:
                        yield source, self._role_rules("ClusterRole", ref.get("name", ""), "")
                    break
        if not attrs.namespace:
            return
        for entry in self.store.select(f"rolebindings.{RBAC_GROUP}", attrs.namespace):
            binding = entry.obj
            ns = attrs.namespace
            ref = binding.get("roleRef") or {}
            for subject in binding.get("subjects") or []:
                if isinstance(subject, Mapping) and _applies_to(user, subject, ns):
                    source = (
                        f'RoleBinding "{binding["metadata"]["name"]}/{ns}" of '
                        f'{ref.get("kind")} "{ref.get("name")}" to {_describe_subject(subject, ns)}'
                    )
                    yield source, self._role_rules(ref.get("kind", ""), ref.get("name", ""), ns)
                    break

    def decide(self, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason), the reason as kube-apiserver's RBAC authorizer words it."""
        if MASTERS in attrs.user.groups:
            return True, ""
        errors: list[str] = []
        for source, rules in self._grants(attrs):
            if isinstance(rules, str):
                errors.append(rules)
                continue
            if any(rule_allows(attrs, rule) for rule in rules):
                return True, f"RBAC: allowed by {source}"
        if not errors:
            return False, ""
        shown = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
        return False, f"RBAC: {shown}"


class AlwaysAllow:
    """Every authenticated caller may do anything."""

    def decide(self, attrs: Attributes) -> tuple[bool, str]:
        """Always (True, "")."""
        return True, ""


def forbidden(attrs: Attributes, reason: str = "") -> Forbidden:
    """kube-apiserver's 403 for a request its authorizer did not allow."""
    user = attrs.user.name
    if not attrs.resource_request:
        text = f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    else:
        resource = f"{attrs.resource}/{attrs.subresource}" if attrs.subresource else attrs.resource
        where = (
            f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
        )
        text = f'User "{user}" cannot {attrs.verb} resource "{resource}" in API group "{attrs.group}" {where}'
    # Nothing in the message may read as HTML (responsewriters' sanitizer).
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if reason:
        text = f"{text}: {reason}"
    if not attrs.resource_request or not attrs.resource:
        return Forbidden(f"forbidden: {text}")
    qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else attrs.resource
    named = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    return Forbidden(
        f"{named} is forbidden: {text}",
        name=attrs.name or None,
        group=attrs.group,
        kind=attrs.resource,
    )


def _impersonation(
    user: User, group: str, resource: str, name: str, namespace: str = "", sub: str = ""
) -> Attributes:
    return Attributes(user, "impersonate", True, "", namespace, group, "", resource, sub, name)


class Headers(Protocol):
    """Request headers, as aiohttp's CIMultiDictProxy offers them."""

    def get(self, key: str, default: None = None) -> str | None: ...

    def getall(self, key: str, default: list[str]) -> list[str]: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


class Authorization:
    """The server's authorization step and its SelfSubjectAccessReview endpoint."""

    def __init__(self, mode: str, store: Store) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown authorization mode {mode!r}: use one of {', '.join(MODES)}")
        self.mode = mode
        self.authorizer: RBAC | AlwaysAllow = RBAC(store) if mode == "RBAC" else AlwaysAllow()

    def admit(
        self, user: User, method: str, path: str, query: Mapping[str, str], headers: Headers
    ) -> User:
        """The identity the request acts as (``user``, or whom it may impersonate); 403 unless
        that identity may make this request."""
        acting = self.impersonate(user, headers)
        if self.mode == "AlwaysAllow":
            return acting
        attrs = request_attributes(acting, method, path, query)
        allowed, reason = self.authorizer.decide(attrs)
        if not allowed:
            raise forbidden(attrs, reason)
        return acting

    def impersonate(self, user: User, headers: Headers) -> User:
        """``user``, or the identity of the Impersonate-* headers if ``user`` may impersonate it.

        As staging/src/k8s.io/apiserver/pkg/endpoints/filters/impersonation.go: each name
        needs the ``impersonate`` verb on ``users`` (``serviceaccounts`` in their
        namespace for a service account's name), ``groups``, ``uids`` or ``userextras``;
        a service account without groups asked for gets its own; everyone is in
        system:authenticated.
        """
        name = headers.get("Impersonate-User")
        groups = list(headers.getall("Impersonate-Group", []))
        uid = headers.get("Impersonate-Uid")
        extras = [(k, v) for k, v in headers.items() if k.lower().startswith("impersonate-extra-")]
        if name is None:
            if groups or uid or extras:
                raise BadRequest(
                    "impersonating groups, a uid or extra fields requires impersonating a user "
                    "(Impersonate-User)"
                )
            return user
        asked: list[Attributes] = []
        sa_namespace, _, sa_name = name.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
        is_sa = name.startswith(SERVICE_ACCOUNT_PREFIX) and bool(sa_namespace and sa_name)
        if is_sa:
            asked.append(_impersonation(user, "", "serviceaccounts", sa_name, sa_namespace))
        else:
            asked.append(_impersonation(user, "", "users", name))
        asked += [_impersonation(user, "", "groups", g) for g in groups]
        if uid is not None:
            asked.append(_impersonation(user, "authentication.k8s.io", "uids", uid))
        for key, value in extras:
            extra = key[len("impersonate-extra-") :].lower()
            asked.append(
                _impersonation(user, "authentication.k8s.io", "userextras", value, sub=extra)
            )
        for attrs in asked:
            allowed, reason = self.authorizer.decide(attrs)
            if not allowed:
                raise forbidden(attrs, reason)
        if is_sa and not groups:
            groups = ["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}"]
        if AUTHENTICATED not in groups:
            groups.append(AUTHENTICATED)
        return User(name, uid or "", tuple(groups))

    def review(self, user: User, review: dict[str, Any]) -> dict[str, Any]:
        """Answer a SelfSubjectAccessReview for ``user``: the review with its status."""
        spec = review.get("spec") or {}
        res_attrs = spec.get("resourceAttributes")
        url_attrs = spec.get("nonResourceAttributes")
        if res_attrs is not None and url_attrs is not None:
            raise invalid(
                "SelfSubjectAccessReview",
                "authorization.k8s.io",
                "",
                [
                    field_invalid(
                        "spec.nonResourceAttributes",
                        url_attrs,
                        "cannot be specified in combination with resourceAttributes",
                    )
                ],
            )
        if res_attrs is None and url_attrs is None:
            raise invalid(
                "SelfSubjectAccessReview",
                "authorization.k8s.io",
                "",
                [
                    field_invalid(
                        "spec.resourceAttributes",
                        None,
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )
                ],
            )
        if res_attrs is not None:
            attrs = Attributes(
                user,
                res_attrs.get("verb", ""),
                True,
                namespace=res_attrs.get("namespace", ""),
                group=res_attrs.get("group", ""),
                version=res_attrs.get("version", ""),
                resource=res_attrs.get("resource", ""),
                subresource=res_attrs.get("subresource", ""),
                name=res_attrs.get("name", ""),
            )
        else:
            attrs = Attributes(
                user, url_attrs.get("verb", ""), False, path=url_attrs.get("path", "")
            )
        allowed, reason = self.authorizer.decide(attrs)
        status: dict[str, Any] = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        meta = dict(review.get("metadata") or {})
        meta.setdefault("creationTimestamp", None)
        return {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": meta,
            "spec": spec,
            "status": status,
        }
