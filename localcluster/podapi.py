"""Pod subresources: log (with follow), eviction (PodDisruptionBudget aware) and binding.

Behaviour after pkg/registry/core/pod/storage/eviction.go, pkg/registry/core/
pod/rest/log.go and pkg/kubelet/kuberuntime/logs (CRI log format).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

from .errors import (
    BadRequest,
    Forbidden,
    InternalError,
    Invalid,
    TooManyRequests,
    conflict,
    field_invalid,
    not_found,
)
from .query import as_int
from .selectors import labels_match, selector_from_label_selector
from .store import Store, dumps, now_rfc3339

FOLLOW_POLL = 0.05

# ------------------------------------------------------------------------ logs


def _parse_time(text: str) -> datetime | None:
    try:
        if "." in text:
            head, frac = text.rstrip("Z").split(".", 1)
            base = datetime.strptime(head, "%Y-%m-%dT%H:%M:%S")
            digits = frac[:9].ljust(9, "0")
            ts = Stamp(
                base.year,
                base.month,
                base.day,
                base.hour,
                base.minute,
                base.second,
                int(digits[:6]),
                tzinfo=UTC,
            )
            ts.nanos = int(digits)
            return ts
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def parse_line(line: bytes, fallback: datetime) -> tuple[datetime, bytes, bool]:
    """Split a CRI record into (time, text, is_partial); raw lines get ``fallback`` as time."""
    parts = line.split(b" ", 3)
    if len(parts) >= 3 and parts[1] in (b"stdout", b"stderr") and parts[2] in (b"F", b"P"):
        ts = _parse_time(parts[0].decode(errors="replace"))
        if ts is not None:
            text = parts[3] if len(parts) == 4 else b""
            return ts, text.rstrip(b"\n"), parts[2] == b"P"
    return fallback, line.rstrip(b"\n"), False


class Stamp(datetime):
    """A datetime that remembers its nanoseconds (CRI records carry 9 digits)."""

    nanos: int = 0


def _format(ts: datetime, text: bytes, timestamps: bool) -> bytes:
    if not timestamps:
        return text + b"\n"
    # kuberuntime/logs.go timeFormatOut: always nine fractional digits.
    nanos = getattr(ts, "nanos", ts.microsecond * 1000)
    stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{nanos:09d}Z"
    return stamp.encode() + b" " + text + b"\n"


class _Reader:
    """Assembles complete log lines (joining partial CRI records) from a file."""

    def __init__(self, fh: Any, fallback: datetime) -> None:
        self.fh = fh
        self.fallback = fallback
        self.pending = b""
        self.partial: bytes = b""
        self.partial_ts: datetime | None = None

    def read(self) -> list[tuple[datetime, bytes]]:
        """Return the complete lines appended since the last call."""
        data = self.pending + self.fh.read()
        *lines, self.pending = data.split(b"\n")
        out: list[tuple[datetime, bytes]] = []
        for line in lines:
            ts, text, partial = parse_line(line, self.fallback)
            if partial:
                self.partial += text
                self.partial_ts = self.partial_ts or ts
                continue
            if self.partial:
                text = self.partial + text
                ts = self.partial_ts or ts
                self.partial, self.partial_ts = b"", None
            out.append((ts, text))
        return out


def _container_state(pod: Mapping[str, Any], container: str) -> dict[str, Any]:
    status = pod.get("status") or {}
    for cs in (status.get("containerStatuses") or []) + (status.get("initContainerStatuses") or []):
        if cs.get("name") == container:
            return cs
    return {}


def _log_options_invalid(name: str, causes: list[dict[str, str]]) -> Invalid:
    """ValidatePodLogOptions' 422, as LogREST.Get answers it (kind PodLogOptions, every cause)."""
    parts = [f"{c['field']}: {c['message']}" for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return Invalid(
        f'PodLogOptions "{name}" is invalid: {summary}',
        name=name,
        group="",
        kind="PodLogOptions",
        causes=causes,
    )


async def logs(store: Store, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
    """GET pods/log: the container's output, optionally followed, tailed and timestamped."""
    q = request.query
    previous = q.get("previous", "").lower() in ("true", "1")
    follow = q.get("follow", "").lower() in ("true", "1") and not previous
    timestamps = q.get("timestamps", "").lower() in ("true", "1")
    tail = as_int(q, "tailLines")
    limit = as_int(q, "limitBytes")
    since_s = as_int(q, "sinceSeconds")
    # LogREST.Get validates the options before it looks the pod up.
    causes: list[dict[str, str]] = []
    if tail is not None and tail < 0:
        causes.append(field_invalid("tailLines", tail, "must be greater than or equal to 0"))
    if limit is not None and limit < 1:
        causes.append(field_invalid("limitBytes", limit, "must be greater than 0"))
    if since_s is not None and q.get("sinceTime"):
        causes.append(
            {
                "reason": "FieldValueForbidden",
                "message": "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified",
                "field": "",
            }
        )
    elif since_s is not None and since_s < 1:
        causes.append(field_invalid("sinceSeconds", since_s, "must be greater than 0"))
    if causes:
        raise _log_options_invalid(name, causes)
    pod = store.peek("pods", namespace, name)
    if pod is None:
        raise not_found("pods", "", name)
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in spec.get("containers") or []]
    all_names = names + [c.get("name") for c in spec.get("initContainers") or []]
    container = q.get("container")
    if not container:
        if len(names) != 1:
            raise BadRequest(
                f"a container name must be specified for pod {name}, choose one of: [{' '.join(str(n) for n in names)}]"
            )
        container = str(names[0])
    elif container not in all_names:
        raise BadRequest(f"container {container} is not valid for pod {name}")
    since: datetime | None = None
    if since_s is not None:
        since = datetime.now(UTC) - timedelta(seconds=since_s)
    elif q.get("sinceTime"):
        since = _parse_time(q["sinceTime"])
        if since is None:
            raise BadRequest(
                f'parsing time "{q["sinceTime"]}" as "2006-01-02T15:04:05Z07:00": cannot parse'
            )
    path = store.log_path(namespace, name, container, previous=previous)
    if not path.exists():
        if previous:
            raise BadRequest(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        state = _container_state(pod, container).get("state") or {}
        waiting = state.get("waiting") or ({} if state else {"reason": "ContainerCreating"})
        if waiting:
            raise BadRequest(
                f'container "{container}" in pod "{name}" is waiting to start: {waiting.get("reason", "ContainerCreating")}'
            )
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
    if follow:
        resp.enable_chunked_encoding()
    await resp.prepare(request)
    sent = 0

    async def emit(lines: list[tuple[datetime, bytes]]) -> bool:
        nonlocal sent
        out = b"".join(
            _format(ts, text, timestamps) for ts, text in lines if since is None or ts >= since
        )
        if limit is not None and sent + len(out) > limit:
            out = out[: limit - sent]
        if out:
            await resp.write(out)
            sent += len(out)
        return limit is not None and sent >= limit

    if not path.exists():
        await resp.write_eof()
        return resp
    try:
        with path.open("rb") as fh:
            fallback = datetime.fromtimestamp(os.fstat(fh.fileno()).st_mtime, UTC)
            reader = _Reader(fh, fallback)
            lines = reader.read()
            if tail is not None:
                lines = lines[-tail:] if tail else []
            done = await emit(lines)
            if follow and not done:
                await _follow(store, request, namespace, name, container, path, fh, reader, emit)
        await resp.write_eof()
    except (ConnectionResetError, ConnectionError):
        pass
    return resp


async def _follow(
    store: Store,
    request: web.Request,
    namespace: str,
    pod_name: str,
    container: str,
    path: Path,
    fh: Any,
    reader: _Reader,
    emit: Any,
) -> None:
    ino = os.fstat(fh.fileno()).st_ino
    uid = (store.peek("pods", namespace, pod_name) or {}).get("metadata", {}).get("uid")
    while True:
        await asyncio.sleep(FOLLOW_POLL)
        lines = reader.read()
        if lines and await emit(lines):
            return
        if request.transport is None or request.transport.is_closing():
            return
        pod = store.peek("pods", namespace, pod_name)
        if pod is None or pod["metadata"].get("uid") != uid:
            return
        state = _container_state(pod, container).get("state") or {}
        replaced = False
        with contextlib.suppress(OSError):
            replaced = path.stat().st_ino != ino
        if state.get("terminated") or replaced:
            # The run ended: drain what it wrote, then end the stream like the kubelet does.
            rest = reader.read()
            if rest:
                await emit(rest)
            return


# ------------------------------------------------------------------------ eviction


def _matching_pdbs(store: Store, pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    ns = pod["metadata"].get("namespace", "")
    labels = pod["metadata"].get("labels") or {}
    out = []
    for e in store.select("poddisruptionbudgets.policy", ns):
        sel = selector_from_label_selector((e.obj.get("spec") or {}).get("selector"))
        if sel is None or not sel:
            continue
        if labels_match(sel, labels):
            out.append(e.obj)
    return out


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def _unhealthy_evictable(pod: Mapping[str, Any], pdb: Mapping[str, Any]) -> bool:
    """Whether a pod that is not Ready may go without spending one of the budget's disruptions.

    AlwaysAllow lets every such pod go; IfHealthyBudget (the default) only while the budget
    has its desired healthy pods without it (currentHealthy >= desiredHealthy > 0).
    """
    if _pod_ready(pod):
        return False
    if (pdb.get("spec") or {}).get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
        return True
    status = pdb.get("status") or {}
    desired = int(status.get("desiredHealthy") or 0)
    return desired > 0 and int(status.get("currentHealthy") or 0) >= desired


def evict_sync(
    store: Store,
    namespace: str,
    name: str,
    delete_options: Mapping[str, Any] | None = None,
    dry_run: bool = False,
) -> None:
    """Evict a pod: refuse with 429 when its PodDisruptionBudget allows no disruption, else delete it."""
    pod = store.peek("pods", namespace, name)
    if pod is None:
        raise not_found("pods", "", name)
    opts = dict(delete_options or {})
    grace = opts.get("gracePeriodSeconds")
    meta = pod["metadata"]
    pre = opts.get("preconditions") or {}
    if pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise conflict(
            "pods",
            "",
            name,
            f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
        )
    if meta.get("deletionTimestamp"):
        # Already terminating: nothing to budget (eviction.go: canIgnorePDB / terminating).
        if not dry_run:
            store.delete_sync("pods", namespace, name, grace)
        return
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed", "Pending"):
        if not dry_run:
            store.delete_sync("pods", namespace, name, grace)
        return
    pdbs = _matching_pdbs(store, pod)
    if len(pdbs) > 1:
        raise InternalError(
            "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
        )
    if pdbs and _unhealthy_evictable(pod, pdbs[0]):
        # A pod that is not Ready does not count towards the budget's healthy pods: its
        # eviction spends no disruption (eviction.go, unhealthyPodEvictionPolicy).
        pdbs = []
    if pdbs:
        pdb = pdbs[0]
        status = pdb.get("status") or {}
        pdb_name = pdb["metadata"]["name"]
        if "observedGeneration" in status and int(status["observedGeneration"]) < int(
            pdb["metadata"].get("generation", 1)
        ):
            raise TooManyRequests(
                "Cannot evict pod as it would violate the pod's disruption budget.",
                causes=[
                    {
                        "reason": "DisruptionBudget",
                        "message": f"The disruption budget {pdb_name} is still being processed by the server.",
                    }
                ],
            )
        allowed = int(status.get("disruptionsAllowed") or 0)
        if allowed < 0:
            raise Forbidden("pdb disruptions allowed is negative")
        if allowed == 0:
            raise TooManyRequests(
                "Cannot evict pod as it would violate the pod's disruption budget.",
                causes=[
                    {
                        "reason": "DisruptionBudget",
                        "message": f"The disruption budget {pdb_name} needs {status.get('desiredHealthy', 0)} healthy pods and has {status.get('currentHealthy', 0)} currently",
                    }
                ],
            )
        if not dry_run:
            new_status = json.loads(dumps(status))
            new_status["disruptionsAllowed"] = allowed - 1
            new_status.setdefault("disruptedPods", {})[name] = now_rfc3339()
            updated = json.loads(dumps(pdb))
            updated["status"] = new_status
            store.update_sync("poddisruptionbudgets.policy", namespace, pdb_name, updated, "status")
    if not dry_run:
        store.delete_sync("pods", namespace, name, grace)


async def evict(
    store: Store, namespace: str, name: str, body: Any, q: Mapping[str, str]
) -> web.Response:
    """POST pods/eviction (policy/v1 or v1beta1 Eviction): 201 with a Success Status."""
    if not isinstance(body, dict):
        raise BadRequest("couldn't get version/kind; json parse error: expected an Eviction object")
    kind = body.get("kind")
    if kind not in (None, "Eviction") or body.get("apiVersion") not in (
        None,
        "policy/v1",
        "policy/v1beta1",
    ):
        raise BadRequest(
            f'{kind} in version "{body.get("apiVersion")}" cannot be handled as a Eviction'
        )
    meta = body.get("metadata") or {}
    if meta.get("name") and meta["name"] != name:
        raise BadRequest("name in URL does not match name in Eviction object")
    opts = body.get("deleteOptions") or {}
    dry_run = q.get("dryRun") == "All" or "All" in (opts.get("dryRun") or [])
    evict_sync(store, namespace, name, opts, dry_run)
    return web.Response(
        status=201,
        body=dumps(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
        ),
        content_type="application/json",
    )


# ------------------------------------------------------------------------ binding


def bind(store: Store, namespace: str, name: str, body: Any) -> web.Response:
    """POST pods/binding: set spec.nodeName once, as the scheduler does."""
    if not isinstance(body, dict) or not isinstance(body.get("target"), dict):
        raise BadRequest("a Binding with a target is required")
    node = body["target"].get("name")
    pod = store.peek("pods", namespace, name)
    if pod is None:
        raise not_found("pods", "", name)
    if pod.get("spec", {}).get("nodeName"):
        raise conflict(
            "pods", "", name, f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"'
        )
    new = json.loads(dumps(pod))
    new["spec"]["nodeName"] = node
    store.update_sync("pods", namespace, name, new)
    return web.Response(
        status=201,
        body=dumps(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
        ),
        content_type="application/json",
    )
