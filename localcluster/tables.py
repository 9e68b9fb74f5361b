"""Server-side printing: meta.k8s.io/v1 Table answers for ``Accept: ...;as=Table``.

kubectl get asks for Tables and prints their columns; the columns and cell
formats follow pkg/printers/internalversion/printers.go and the ages
k8s.io/apimachinery/pkg/util/duration.HumanDuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .resources import Resource

Obj = Mapping[str, Any]
Column = tuple[str, str, int]  # name, type, priority

NAME: Column = ("Name", "string", 0)
AGE: Column = ("Age", "string", 0)


def wants_table(accept: str) -> bool:
    """Whether the Accept header asks for a meta.k8s.io Table (v1 or v1beta1)."""
    return "as=table" in accept.replace(" ", "").lower()


def human_duration(seconds: float) -> str:
    """HumanDuration from k8s.io/apimachinery/pkg/util/duration."""
    if seconds < -1:
        return "<invalid>"
    s = int(max(seconds, 0))
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = hours // 24
        return f"{days // 365}y{days % 365}d" if days % 365 else f"{days // 365}y"
    return f"{hours // 24 // 365}y"


def age(obj: Obj) -> str:
    """The Age cell: time since creationTimestamp."""
    ts = (obj.get("metadata") or {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    try:
        created = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    return human_duration((datetime.now(UTC) - created).total_seconds())


def _name(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _pod(obj: Obj) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len(spec.get("containers") or [])
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for c in statuses:
        state = c.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated"):
            term = state["terminated"]
            reason = term.get("reason") or (
                f"Signal:{term['signal']}"
                if term.get("signal")
                else f"ExitCode:{term.get('exitCode', 0)}"
            )
    if (obj.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Terminating"
    gates = spec.get("readinessGates") or []
    return [
        _name(obj),
        f"{ready}/{total}",
        reason,
        str(restarts),
        age(obj),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        f"{len(gates)}/{len(gates)}" if gates else "<none>",
    ]


def _images(obj: Obj) -> tuple[str, str, str]:
    spec = obj.get("spec") or {}
    tmpl = (spec.get("template") or {}).get("spec") or {}
    containers = tmpl.get("containers") or []
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    return (
        ",".join(str(c.get("name", "")) for c in containers),
        ",".join(str(c.get("image", "")) for c in containers),
        ",".join(f"{k}={v}" for k, v in sel.items()) or "<none>",
    )


def _deployment(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images, sel = _images(obj)
    return [
        _name(obj),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        int(status.get("updatedReplicas", 0)),
        int(status.get("availableReplicas", 0)),
        age(obj),
        names,
        images,
        sel,
    ]


def _replicaset(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images, sel = _images(obj)
    return [
        _name(obj),
        int(spec.get("replicas", 0)),
        int(status.get("replicas", 0)),
        int(status.get("readyReplicas", 0)),
        age(obj),
        names,
        images,
        sel,
    ]


def _daemonset(obj: Obj) -> list[Any]:
    status = obj.get("status") or {}
    names, images, sel = _images(obj)
    node_sel = ((obj.get("spec") or {}).get("template") or {}).get("spec", {}).get(
        "nodeSelector"
    ) or {}
    return [
        _name(obj),
        int(status.get("desiredNumberScheduled", 0)),
        int(status.get("currentNumberScheduled", 0)),
        int(status.get("numberReady", 0)),
        int(status.get("updatedNumberScheduled", 0)),
        int(status.get("numberAvailable", 0)),
        ",".join(f"{k}={v}" for k, v in node_sel.items()) or "<none>",
        age(obj),
        names,
        images,
        sel,
    ]


def _node(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ready = "Unknown"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = "Ready" if cond.get("status") == "True" else "NotReady"
    if spec.get("unschedulable"):
        ready += ",SchedulingDisabled"
    labels = (obj.get("metadata") or {}).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    addrs = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    info = status.get("nodeInfo") or {}
    return [
        _name(obj),
        ready,
        ",".join(roles) or "<none>",
        age(obj),
        info.get("kubeletVersion", ""),
        addrs.get("InternalIP") or "<none>",
        addrs.get("ExternalIP") or "<none>",
        info.get("osImage", "<unknown>"),
        info.get("kernelVersion", "<unknown>"),
        info.get("containerRuntimeVersion", "<unknown>"),
    ]


def _service(obj: Obj) -> list[Any]:
    spec = obj.get("spec") or {}
    ports = []
    for p in spec.get("ports") or []:
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        ports.append(f"{text}/{p.get('protocol', 'TCP')}")
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = ",".join(i.get("ip") or i.get("hostname", "") for i in ingress) or (
        "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"
    )
    sel = spec.get("selector") or {}
    return [
        _name(obj),
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        external,
        ",".join(ports) or "<none>",
        age(obj),
        ",".join(f"{k}={v}" for k, v in sel.items()) or "<none>",
    ]


def _endpoints(obj: Obj) -> list[Any]:
    eps = []
    for subset in obj.get("subsets") or []:
        for addr in subset.get("addresses") or []:
            for port in subset.get("ports") or [{}]:
                eps.append(
                    f"{addr.get('ip')}:{port.get('port')}"
                    if port.get("port")
                    else str(addr.get("ip"))
                )
    shown = ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "")
    return [_name(obj), shown or "<none>", age(obj)]


def _slice(obj: Obj) -> list[Any]:
    ports = ",".join(str(p.get("port")) for p in obj.get("ports") or []) or "<unset>"
    addrs = [a for e in obj.get("endpoints") or [] for a in e.get("addresses") or []]
    shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [_name(obj), obj.get("addressType", ""), ports, shown or "<unset>", age(obj)]


def _pdb(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    return [
        _name(obj),
        str(spec["minAvailable"]) if "minAvailable" in spec else "N/A",
        str(spec["maxUnavailable"]) if "maxUnavailable" in spec else "N/A",
        int(status.get("disruptionsAllowed", 0)),
        age(obj),
    ]


def _event(obj: Obj) -> list[Any]:
    inv = obj.get("involvedObject") or {}
    last = (
        obj.get("lastTimestamp")
        or obj.get("eventTime")
        or (obj.get("metadata") or {}).get("creationTimestamp")
    )
    seen = age({"metadata": {"creationTimestamp": last[:19] + "Z" if last else None}})
    return [
        seen,
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}",
        obj.get("message", ""),
    ]


TABLES: dict[str, tuple[list[Column], Callable[[Obj], list[Any]]]] = {
    "pods": (
        [
            NAME,
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            AGE,
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        _pod,
    ),
    "deployments.apps": (
        [
            NAME,
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        _deployment,
    ),
    "replicasets.apps": (
        [
            NAME,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        _replicaset,
    ),
    "daemonsets.apps": (
        [
            NAME,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            AGE,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        _daemonset,
    ),
    "nodes": (
        [
            NAME,
            ("Status", "string", 0),
            ("Roles", "string", 0),
            AGE,
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        _node,
    ),
    "services": (
        [
            NAME,
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            AGE,
            ("Selector", "string", 1),
        ],
        _service,
    ),
    "endpoints": ([NAME, ("Endpoints", "string", 0), AGE], _endpoints),
    "endpointslices.discovery.k8s.io": (
        [
            NAME,
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            AGE,
        ],
        _slice,
    ),
    "poddisruptionbudgets.policy": (
        [
            NAME,
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            AGE,
        ],
        _pdb,
    ),
    "namespaces": (
        [NAME, ("Status", "string", 0), AGE],
        lambda o: [_name(o), (o.get("status") or {}).get("phase", ""), age(o)],
    ),
    "configmaps": (
        [NAME, ("Data", "integer", 0), AGE],
        lambda o: [_name(o), len(o.get("data") or {}) + len(o.get("binaryData") or {}), age(o)],
    ),
    "secrets": (
        [NAME, ("Type", "string", 0), ("Data", "integer", 0), AGE],
        lambda o: [_name(o), o.get("type", ""), len(o.get("data") or {}), age(o)],
    ),
    "serviceaccounts": (
        [NAME, ("Secrets", "integer", 0), AGE],
        lambda o: [_name(o), len(o.get("secrets") or []), age(o)],
    ),
    "events": (
        [
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
        ],
        _event,
    ),
}


def _row(
    obj: Obj, printer: Callable[[Obj], list[Any]], columns: list[Column], include: str
) -> dict[str, Any]:
    try:
        cells = printer(obj)
    except (AttributeError, TypeError, ValueError, KeyError):
        # Odd but stored objects (written in-process) still print, like the real printers do.
        cells = [_name(obj)] + ["<unknown>"] * (len(columns) - 1)
    row: dict[str, Any] = {"cells": cells}
    if include == "Object":
        row["object"] = obj
    elif include != "None":
        meta = obj.get("metadata") or {}
        row["object"] = {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
        }
    return row


def table(
    res: Resource,
    objs: list[Obj],
    list_meta: Mapping[str, Any],
    headers: bool = True,
    include: str = "Metadata",
) -> dict[str, Any]:
    """Render objects as a meta.k8s.io/v1 Table; ``include`` is the includeObject policy."""
    columns, printer = TABLES.get(
        res.key,
        (
            [NAME, ("Created At", "date", 0)],
            lambda o: [_name(o), (o.get("metadata") or {}).get("creationTimestamp", "")],
        ),
    )
    out: dict[str, Any] = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": dict(list_meta),
    }
    if headers:
        out["columnDefinitions"] = [
            {
                "name": name,
                "type": typ,
                "format": "name" if name == "Name" else "",
                "description": "",
                "priority": prio,
            }
            for name, typ, prio in columns
        ]
    out["rows"] = [_row(o, printer, columns, include) for o in objs]
    return out
