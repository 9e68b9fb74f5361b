"""Defaulting and validation per kind, after pkg/apis/*/v1/defaults.go and pkg/apis/*/validation.

Only what Greenlight, kubectl and the client rely on is modelled; messages and
field paths match kube-apiserver's so errors read the same as on a cluster.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import re
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import field_invalid, field_not_supported, field_required, invalid
from .resources import Resource
from .selectors import labels_match, selector_from_label_selector

if TYPE_CHECKING:
    from .store import Store

Obj = dict[str, Any]
Causes = list[dict[str, str]]

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
# Services answer on loopback (localcluster.kubeproxy); node ports as kube-apiserver's default.
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
NODE_PORTS = range(30000, 32768)

SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
    "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)


# ---------------------------------------------------------------------------- defaults


def _default_container(c: Obj) -> None:
    image = c.get("image") or ""
    tagless = ":" not in image.rsplit("/", 1)[-1] and "@" not in image
    c.setdefault(
        "imagePullPolicy", "Always" if tagless or image.endswith(":latest") else "IfNotPresent"
    )
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
    for e in c.get("env") or []:
        if isinstance(e, dict) and isinstance(e.get("valueFrom"), dict):
            fr = e["valueFrom"].get("fieldRef")
            if isinstance(fr, dict):
                fr.setdefault("apiVersion", "v1")
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        p = c.get(probe)
        if isinstance(p, dict):
            p.setdefault("timeoutSeconds", 1)
            p.setdefault("periodSeconds", 10)
            p.setdefault("successThreshold", 1)
            p.setdefault("failureThreshold", 3)
            if isinstance(p.get("httpGet"), dict):
                p["httpGet"].setdefault("path", "/")
                p["httpGet"].setdefault("scheme", "HTTP")


def default_pod_spec(spec: Obj) -> None:
    """Apply the core/v1 PodSpec defaults (pkg/apis/core/v1/defaults.go)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if isinstance(c, dict):
            _default_container(c)


def _default_new_pod_spec(spec: Obj) -> None:
    """The defaults a pod gets only when it is created (service account, priority, admission)."""
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    spec.setdefault("priority", 0)
    tolerations = spec.setdefault("tolerations", [])
    # DefaultTolerationSeconds admission plugin.
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if isinstance(tolerations, list) and not any(
            isinstance(t, dict) and t.get("key") == key for t in tolerations
        ):
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            )


def _default_pod(obj: Obj, store: Store, old: Obj | None) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        default_pod_spec(spec)
        if old is None:
            _default_new_pod_spec(spec)
    if old is None:
        status = obj.setdefault("status", {})
        if isinstance(status, dict):
            status.setdefault("phase", "Pending")
            status.setdefault("qosClass", _qos(spec))


def _default_rolling_update(spec: Obj, field: str, max_unavailable: Any, max_surge: Any) -> None:
    """Default ``spec[field]`` (a strategy) to RollingUpdate with the given limits."""
    strategy = spec.setdefault(field, {})
    if isinstance(strategy, dict):
        strategy.setdefault("type", "RollingUpdate")
        if strategy["type"] == "RollingUpdate":
            rolling = strategy.setdefault("rollingUpdate", {})
            if isinstance(rolling, dict):
                rolling.setdefault("maxUnavailable", max_unavailable)
                rolling.setdefault("maxSurge", max_surge)


def _default_template(spec: Obj) -> None:
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        default_pod_spec(template["spec"])


@dataclasses.dataclass(frozen=True)
class _WorkloadDefaults:
    """A workload's defaults: spec fields, its rolling-update strategy, a new object's status."""

    spec: Mapping[str, Any]
    # (field, maxUnavailable, maxSurge) of the strategy, for kinds that roll.
    strategy: tuple[str, Any, Any] | None = None
    status: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __call__(self, obj: Obj, store: Store, old: Obj | None) -> None:
        spec = obj.get("spec")
        if isinstance(spec, dict):
            for key, value in self.spec.items():
                spec.setdefault(key, value)
            if self.strategy is not None:
                name, max_unavailable, max_surge = self.strategy
                _default_rolling_update(spec, name, max_unavailable, max_surge)
            _default_template(spec)
        if old is None:
            obj.setdefault("status", dict(self.status))


def _default_cluster_ip(spec: Obj, store: Store, old: Obj | None) -> None:
    """Keep the address an update leaves out, allocate one for a new service."""
    if old is not None and "clusterIP" not in spec:
        spec["clusterIP"] = old.get("spec", {}).get("clusterIP")
        if "clusterIPs" in old.get("spec", {}):
            spec["clusterIPs"] = old["spec"]["clusterIPs"]
    if not spec.get("clusterIP"):
        spec["clusterIP"] = store.allocate_cluster_ip()
    elif old is None and not _loopback_or_none(spec["clusterIP"]):
        # The kube-proxy answers on loopback only: any other address would never answer.
        raise invalid(
            "Service",
            "",
            "",
            [
                field_invalid(
                    "spec.clusterIP",
                    spec["clusterIP"],
                    f"provided IP is not in the valid range. The range of valid IPs is "
                    f"{store.cluster_ip_base}.0/24 (any 127.0.0.0/8 address is accepted)",
                )
            ],
        )
    spec.setdefault("clusterIPs", [spec["clusterIP"]])
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")


def _loopback_or_none(value: Any) -> bool:
    if value == "None":
        return True
    try:
        return ipaddress.ip_address(str(value)) in LOOPBACK
    except ValueError:
        return False


def _default_node_ports(spec: Obj, store: Store, old: Obj | None) -> None:
    """Keep the node ports an update leaves out; allocate a free one in 30000-32767."""
    previous = {
        (p.get("name", ""), p.get("port")): p.get("nodePort")
        for p in ((old or {}).get("spec") or {}).get("ports") or []
        if isinstance(p, dict)
    }
    used = {
        p.get("nodePort")
        for entry in store.objects["services"].values()
        if entry.obj is not old
        for p in (entry.obj.get("spec") or {}).get("ports") or []
    }
    for p in spec.get("ports") or []:
        if not isinstance(p, dict) or p.get("nodePort"):
            continue
        kept = previous.get((p.get("name", ""), p.get("port")))
        if kept:
            p["nodePort"] = kept
            continue
        free = [n for n in NODE_PORTS if n not in used]
        if free:
            p["nodePort"] = secrets.choice(free)
            used.add(p["nodePort"])


def _default_service(obj: Obj, store: Store, old: Obj | None) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName":
            _default_cluster_ip(spec, store, old)
        if spec["type"] in ("NodePort", "LoadBalancer"):
            _default_node_ports(spec, store, old)
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "port" in p:
                    p.setdefault("targetPort", p["port"])
    if old is None:
        obj.setdefault("status", {"loadBalancer": {}})


def _default_namespace(obj: Obj, store: Store, old: Obj | None) -> None:
    name = obj["metadata"].get("name", "")
    obj["metadata"].setdefault("labels", {})
    if isinstance(obj["metadata"]["labels"], dict):
        obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name
    if old is None:
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}


def _default_pod_disruption_budget(obj: Obj, store: Store, old: Obj | None) -> None:
    if old is None:
        obj.setdefault(
            "status",
            {"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0},
        )


def _default_secret(obj: Obj, store: Store, old: Obj | None) -> None:
    obj.setdefault("type", "Opaque")


def _default_node(obj: Obj, store: Store, old: Obj | None) -> None:
    if old is not None:
        return
    spec = obj.get("spec")
    if isinstance(spec, dict) or spec is None:
        obj.setdefault("spec", {})
    obj.setdefault("status", {})


# Each defaulter fills in ``obj`` in place; ``old`` is the stored object on an update, else None.
JOB_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
JOB_NAME = "batch.kubernetes.io/job-name"


def _default_job(obj: Obj, store: Store, old: Obj | None) -> None:
    """batch/v1 Job defaults (pkg/apis/batch/v1/defaults.go) and, on create, the generated
    selector and pod labels of the job strategy (pkg/registry/batch/job/strategy.go)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    spec.setdefault("parallelism", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault(
        "podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
    )
    _default_template(spec)
    if old is None:
        meta = obj.get("metadata") or {}
        template = spec.get("template")
        if not spec.get("manualSelector") and isinstance(template, dict):
            uid, name = meta.get("uid", ""), meta.get("name", "")
            tmeta = template.setdefault("metadata", {})
            if isinstance(tmeta, dict):
                labels = tmeta.setdefault("labels", {})
                if isinstance(labels, dict):
                    for key in (JOB_CONTROLLER_UID, "controller-uid"):
                        labels.setdefault(key, uid)
                    for key in (JOB_NAME, "job-name"):
                        labels.setdefault(key, name)
            spec.setdefault("selector", {"matchLabels": {JOB_CONTROLLER_UID: uid}})
        obj.setdefault("status", {})


def _validate_job(obj: Obj, old: Obj | None, causes: Causes) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        causes.append(field_required("spec"))
        return
    for name in ("backoffLimit", "parallelism", "completions"):
        value = spec.get(name)
        if isinstance(value, int) and value < 0:
            causes.append(
                field_invalid(f"spec.{name}", value, "must be greater than or equal to 0")
            )
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline <= 0:
        causes.append(
            field_invalid("spec.activeDeadlineSeconds", deadline, "must be greater than 0")
        )
    tmpl = spec.get("template")
    if not isinstance(tmpl, dict):
        causes.append(field_required("spec.template"))
        return
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    reqs = selector_from_label_selector(spec.get("selector"))
    if spec.get("selector") is None:
        causes.append(field_required("spec.selector"))
    elif reqs and not labels_match(reqs, labels):
        causes.append(
            field_invalid(
                "spec.template.metadata.labels",
                labels,
                "`selector` does not match template `labels`",
            )
        )
    _validate_pod_spec(tmpl.get("spec"), "spec.template.spec", causes)
    policy = (tmpl.get("spec") or {}).get("restartPolicy")
    if policy not in ("OnFailure", "Never"):
        causes.append(
            field_not_supported("spec.template.spec.restartPolicy", policy, ["OnFailure", "Never"])
        )
    if old is not None:
        for name in ("template", "selector", "completions", "completionMode"):
            if (old.get("spec") or {}).get(name) != spec.get(name):
                causes.append(field_invalid(f"spec.{name}", spec.get(name), "field is immutable"))


_DEFAULTERS: dict[str, Callable[[Obj, Store, Obj | None], None]] = {
    "Job": _default_job,
    "Pod": _default_pod,
    "Deployment": _WorkloadDefaults(
        {"replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600},
        strategy=("strategy", "25%", "25%"),
    ),
    "ReplicaSet": _WorkloadDefaults({"replicas": 1}),
    "DaemonSet": _WorkloadDefaults(
        {"revisionHistoryLimit": 10},
        strategy=("updateStrategy", 1, 0),
        status={
            "currentNumberScheduled": 0,
            "desiredNumberScheduled": 0,
            "numberMisscheduled": 0,
            "numberReady": 0,
        },
    ),
    "Service": _default_service,
    "Namespace": _default_namespace,
    "PodDisruptionBudget": _default_pod_disruption_budget,
    "Secret": _default_secret,
    "Node": _default_node,
}


def default(res: Resource, obj: Obj, store: Store, old: Obj | None = None) -> None:
    """Fill in the defaults kube-apiserver would for ``res`` (in place)."""
    defaulter = _DEFAULTERS.get(res.kind)
    if defaulter is not None:
        defaulter(obj, store, old)


def _qos(spec: Any) -> str:
    if not isinstance(spec, dict):
        return "BestEffort"
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    reqs = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in reqs):
        return "BestEffort"
    guaranteed = all(
        (r.get("limits") or {}).get(k)
        and (r.get("requests") or r.get("limits") or {}).get(k) == r["limits"][k]
        for r in reqs
        for k in ("cpu", "memory")
    )
    return "Guaranteed" if guaranteed else "Burstable"


# ---------------------------------------------------------------------------- validation


def _validate_meta(res: Resource, meta: Obj, causes: Causes) -> None:
    name = meta.get("name")
    if not name:
        causes.append(field_required("metadata.name", "name or generateName is required"))
        return
    if res.kind == "Namespace":
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            causes.append(field_invalid("metadata.name", name, LABEL_MSG))
    elif res.kind == "Service":
        if len(name) > 63 or not DNS1035_LABEL.match(name):
            causes.append(field_invalid("metadata.name", name, DNS1035_MSG))
    elif res.kind == "Event":
        pass  # events are named "<object>.<hex>", checked loosely by the real server too
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        causes.append(field_invalid("metadata.name", name, SUBDOMAIN_MSG))
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            causes.append(field_invalid("metadata.labels", value, LABEL_VALUE_MSG))
        if not QUALIFIED_NAME.match(key.split("/")[-1]) or len(key.split("/")[-1]) > 63:
            causes.append(
                field_invalid(
                    "metadata.labels",
                    key,
                    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                )
            )


def _validate_pod_spec(spec: Any, path: str, causes: Causes) -> None:
    if not isinstance(spec, dict):
        causes.append(field_required(path))
        return
    containers = spec.get("containers") or []
    if not containers:
        causes.append(field_required(f"{path}.containers"))
    seen: set[str] = set()
    for i, c in enumerate(containers):
        cpath = f"{path}.containers[{i}]"
        name = c.get("name") or ""
        if not name:
            causes.append(field_required(f"{cpath}.name"))
        elif len(name) > 63 or not DNS1123_LABEL.match(name):
            causes.append(field_invalid(f"{cpath}.name", name, LABEL_MSG))
        elif name in seen:
            causes.append(
                {
                    "reason": "FieldValueDuplicate",
                    "message": f'Duplicate value: "{name}"',
                    "field": f"{cpath}.name",
                }
            )
        seen.add(name)
        if not c.get("image"):
            causes.append(field_required(f"{cpath}.image"))
        for j, p in enumerate(c.get("ports") or []):
            port = p.get("containerPort")
            if not isinstance(port, int) or not 0 < port < 65536:
                causes.append(
                    field_invalid(
                        f"{cpath}.ports[{j}].containerPort",
                        port,
                        "must be between 1 and 65535, inclusive",
                    )
                )
    rp = spec.get("restartPolicy")
    if rp is not None and rp not in ("Always", "OnFailure", "Never"):
        causes.append(
            field_not_supported(f"{path}.restartPolicy", rp, ["Always", "OnFailure", "Never"])
        )


def _validate_workload(res: Resource, obj: Obj, old: Obj | None, causes: Causes) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        causes.append(field_required("spec"))
        return
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        causes.append(
            field_invalid("spec.replicas", replicas, "must be greater than or equal to 0")
        )
    selector = spec.get("selector")
    tmpl = spec.get("template") or {}
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    if selector is None:
        causes.append(field_required("spec.selector"))
    else:
        reqs = selector_from_label_selector(selector)
        if not reqs:
            causes.append(
                field_invalid("spec.selector", "", "empty selector is invalid for deployment")
                if res.kind == "Deployment"
                else field_required("spec.selector")
            )
        elif not labels_match(reqs, labels):
            causes.append(
                field_invalid(
                    "spec.template.metadata.labels",
                    labels,
                    "`selector` does not match template `labels`",
                )
            )
        if old is not None and old.get("spec", {}).get("selector") != selector:
            causes.append(field_invalid("spec.selector", selector, "field is immutable"))
    _validate_pod_spec(tmpl.get("spec"), "spec.template.spec", causes)
    if res.kind == "Deployment":
        st = spec.get("strategy") or {}
        if st.get("type") not in ("RollingUpdate", "Recreate"):
            causes.append(
                field_not_supported(
                    "spec.strategy.type", st.get("type"), ["Recreate", "RollingUpdate"]
                )
            )
        if tmpl.get("spec", {}).get("restartPolicy", "Always") != "Always":
            causes.append(
                field_not_supported(
                    "spec.template.spec.restartPolicy", tmpl["spec"]["restartPolicy"], ["Always"]
                )
            )


def _validate_service(obj: Obj, causes: Causes) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        causes.append(field_required("spec"))
        return
    stype = spec.get("type", "ClusterIP")
    if stype not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(
            field_not_supported(
                "spec.type", stype, ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
            )
        )
    ports = spec.get("ports") or []
    if not ports and stype != "ExternalName" and spec.get("clusterIP") != "None":
        causes.append(field_required("spec.ports"))
    names: set[str] = set()
    for i, p in enumerate(ports):
        port = p.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            causes.append(
                field_invalid(
                    f"spec.ports[{i}].port", port, "must be between 1 and 65535, inclusive"
                )
            )
        if len(ports) > 1 and not p.get("name"):
            causes.append(field_required(f"spec.ports[{i}].name"))
        if p.get("name") in names:
            causes.append(
                {
                    "reason": "FieldValueDuplicate",
                    "message": f'Duplicate value: "{p.get("name")}"',
                    "field": f"spec.ports[{i}].name",
                }
            )
        names.add(p.get("name") or "")


def validate(res: Resource, obj: Obj, old: Obj | None) -> None:
    """Raise Invalid (422) with every field error found, or return."""
    causes: Causes = []
    meta = obj.get("metadata") or {}
    _validate_meta(res, meta, causes)
    kind = res.kind
    if kind == "Pod":
        _validate_pod_spec(obj.get("spec"), "spec", causes)
    elif kind in ("Deployment", "ReplicaSet", "DaemonSet"):
        _validate_workload(res, obj, old, causes)
    elif kind == "Job":
        _validate_job(obj, old, causes)
    elif kind == "Service":
        _validate_service(obj, causes)
    elif kind == "PodDisruptionBudget":
        spec = obj.get("spec") or {}
        if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
            causes.append(
                field_invalid("spec", spec, "minAvailable and maxUnavailable cannot be both set")
            )
    elif kind == "ConfigMap":
        for key in list((obj.get("data") or {}).keys()) + list(
            (obj.get("binaryData") or {}).keys()
        ):
            if not re.match(r"^[-._a-zA-Z0-9]+$", key):
                causes.append(
                    field_invalid(
                        "data",
                        key,
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                    )
                )
    if causes:
        raise invalid(kind, res.group, meta.get("name") or "", causes)


POD_UPDATE_MSG = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def validate_pod_update(old: Obj, new: Obj) -> None:
    """Refuse changes to a pod's spec beyond what ValidatePodUpdate (core/validation) allows."""
    old_spec = old.get("spec") or {}
    new_spec = new.get("spec") or {}
    if old_spec == new_spec:
        return
    mutable = json_copy(new_spec)
    # Compared after defaulting, as the real server validates the defaulted object.
    default_pod_spec(mutable)
    if mutable == old_spec:
        return
    for field in ("containers", "initContainers"):
        olds = old_spec.get(field) or []
        news = mutable.get(field) or []
        if len(olds) == len(news):
            for o, n in zip(olds, news, strict=True):
                if isinstance(n, dict) and isinstance(o, dict) and "image" in o:
                    n["image"] = o["image"]
    for field in ("activeDeadlineSeconds", "terminationGracePeriodSeconds"):
        if field in old_spec:
            mutable[field] = old_spec[field]
        else:
            mutable.pop(field, None)
    old_tol = old_spec.get("tolerations") or []
    new_tol = mutable.get("tolerations") or []
    if new_tol[: len(old_tol)] == old_tol:
        if "tolerations" in old_spec:
            mutable["tolerations"] = old_tol
        else:
            mutable.pop("tolerations", None)
    old_gates = old_spec.get("schedulingGates") or []
    if all(g in old_gates for g in mutable.get("schedulingGates") or []):
        if "schedulingGates" in old_spec:
            mutable["schedulingGates"] = old_gates
        else:
            mutable.pop("schedulingGates", None)
    if mutable != old_spec:
        name = (new.get("metadata") or {}).get("name", "")
        cause = {
            "reason": "FieldValueForbidden",
            "message": f"Forbidden: {POD_UPDATE_MSG}",
            "field": "spec",
        }
        raise invalid("Pod", "", name, [cause])


def json_copy(obj: Any) -> Any:
    """A deep copy of a JSON-shaped value."""
    return copy.deepcopy(obj)
