"""Simulated nodes: each Node object gets a kubelet, a pod address range and a Ready status."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
import logging
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from .controllers.events import EventRecorder
from .errors import AlreadyExists, NotFound
from .kubelet import Kubelet, KubeletContext
from .kubelet_status import now
from .store import Event, Store

log = logging.getLogger(__name__)

# Labels the local node-group provider (scaling) reads and writes.
NODE_GROUP_LABEL = "localcluster.io/node-group"
INSTANCE_ID_LABEL = "localcluster.io/instance-id"
DEFAULT_NODE_GROUP = "default"
# Optional annotations on a Node created through the API to size it.
CAPACITY_ANNOTATION = "localcluster.io/capacity-"
DEFAULT_CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "100Gi"}
NODE_ADDRESS_PREFIX = "127.100.0"
KUBELET_VERSION = "v1.32.0"

# Pod ranges are 127.<block>.<node index>.0/24; a block is held by one running cluster at a
# time through a lock file, so clusters started side by side never share pod addresses.
BLOCK_RANGE = range(128, 251)
LOCK_DIR = Path(tempfile.gettempdir()) / "localcluster-pod-blocks"


class PodBlock:
    """An exclusive claim on one 127.<block>.0.0/16 pod address block."""

    def __init__(self, block: int, fd: int) -> None:
        self.block = block
        self._fd = fd

    @classmethod
    def claim(cls, state_dir: Path | None) -> PodBlock:
        """Claim the block this cluster used before if free, else the first free one."""
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        remembered = state_dir / "pod-block.json" if state_dir else None
        order = list(BLOCK_RANGE)
        if remembered is not None and remembered.exists():
            with contextlib.suppress(ValueError, KeyError, OSError):
                previous = int(json.loads(remembered.read_text())["block"])
                order.remove(previous)
                order.insert(0, previous)
        else:
            # Spread fresh clusters over the range so concurrent test runs rarely probe twice.
            start = secrets.randbelow(len(order))
            order = order[start:] + order[:start]
        for block in order:
            try:
                fd = os.open(LOCK_DIR / f"127.{block}.lock", os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:
                continue  # another user's lock file: that block is not ours to take
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            if remembered is not None:
                remembered.parent.mkdir(parents=True, exist_ok=True)
                remembered.write_text(json.dumps({"block": block}))
            return cls(block, fd)
        raise RuntimeError("every 127.x pod address block is taken by a running localcluster")

    def release(self) -> None:
        """Give the block back."""
        with contextlib.suppress(OSError):
            os.close(self._fd)


def node_template(name: str, group: str = DEFAULT_NODE_GROUP) -> dict[str, Any]:
    """A Node object as ``--nodes`` creates it (the runtime fills in the rest)."""
    return {"metadata": {"name": name, "labels": {NODE_GROUP_LABEL: group}}, "spec": {}}


class NodeManager:
    """Brings a simulated node up for every Node object and takes it down when it is deleted."""

    def __init__(
        self, store: Store, ctx: KubeletContext, recorder: EventRecorder, block: PodBlock
    ) -> None:
        self.store = store
        self.ctx = ctx
        self.recorder = recorder
        self.block = block
        self.kubelets: dict[str, Kubelet] = {}
        self._index: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, count: int) -> None:
        """Bring up every Node in the store; on a fresh cluster (no nodes yet) create ``count``.

        After a restart the stored nodes are the truth: nodes deleted or added through the API
        stay deleted or added, and each keeps its pod range, so pods keep their addresses.
        """
        existing = self.store.select("nodes")
        for entry in existing:
            self._claim_index(entry.obj)
        if not existing:
            for i in range(1, count + 1):
                with contextlib.suppress(AlreadyExists):
                    await self.store.create("nodes", None, node_template(f"local-node-{i}"))
        for entry in self.store.select("nodes"):
            self._claim_index(entry.obj)
            await self._bring_up(entry.obj["metadata"]["name"])

    def on_event(self, event: Event) -> None:
        """Store listener hook: nodes come and go; pod changes go to their node's kubelet."""
        if event.resource == "pods":
            node = (event.obj.get("spec") or {}).get("nodeName")
            kubelet = self.kubelets.get(node) if node else None
            if kubelet is not None:
                kubelet.on_pod_event(event)
            return
        if event.resource != "nodes":
            return
        name = event.obj["metadata"]["name"]
        if event.type == "DELETED":
            kubelet = self.kubelets.pop(name, None)
            self._index.pop(name, None)
            if kubelet is not None:
                self._spawn(self._take_down(name, kubelet))
        elif name not in self.kubelets and event.type == "ADDED":
            self._claim_index(event.obj)
            self._spawn(self._bring_up(name))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _claim_index(self, node: dict[str, Any]) -> None:
        name = node["metadata"]["name"]
        if name in self._index:
            return
        used = set(self._index.values())
        cidr = (node.get("spec") or {}).get("podCIDR") or ""
        parts = cidr.split(".")
        if len(parts) == 4 and parts[1] == str(self.block.block) and parts[2].isdigit():
            index = int(parts[2])
            if index not in used and 1 <= index <= 254:
                self._index[name] = index
                return
        index = next(i for i in range(1, 255) if i not in used)
        self._index[name] = index

    async def _bring_up(self, name: str) -> None:
        """Register the node, start its kubelet and report it Ready; a node deleted meanwhile is left alone."""
        if name in self.kubelets:
            return
        index = self._index[name]
        address = f"{NODE_ADDRESS_PREFIX}.{index}"
        prefix = f"127.{self.block.block}.{index}"
        try:
            node = await self.store.mutate(
                "nodes", None, name, functools.partial(_register, name=name, prefix=prefix)
            )
        except NotFound:
            return
        kubelet = Kubelet(self.ctx, name, address, prefix)
        self.kubelets[name] = kubelet
        ready = functools.partial(
            _report_ready, name=name, address=address, capacity=_capacity(node)
        )
        try:
            node = await self.store.mutate("nodes", None, name, ready, subresource="status")
        except NotFound:
            self.kubelets.pop(name, None)
            return
        self.recorder.record(node, "Normal", "Starting", "Starting kubelet.", "kubelet", name)
        self.recorder.record(
            node, "Normal", "NodeReady", f"Node {name} status is now: NodeReady", "kubelet", name
        )
        await kubelet.start()

    async def _take_down(self, name: str, kubelet: Kubelet) -> None:
        log.info("node %s deleted: stopping its pods", name)
        await kubelet.stop(grace=2.0)

    async def stop(self) -> None:
        """Stop every kubelet (and so every pod process)."""
        for task in list(self._tasks):
            task.cancel()
        kubelets = list(self.kubelets.values())
        self.kubelets.clear()
        await asyncio.gather(*(k.stop() for k in kubelets), return_exceptions=True)


# Labels and annotations a kubelet puts on the Node it registers, unless they are set already.
NODE_LABELS = {
    "kubernetes.io/os": "linux",
    "kubernetes.io/arch": "amd64",
    "beta.kubernetes.io/os": "linux",
    "beta.kubernetes.io/arch": "amd64",
    "node.kubernetes.io/instance-type": "local",
    "topology.kubernetes.io/region": "local",
    "topology.kubernetes.io/zone": "local-a",
    NODE_GROUP_LABEL: DEFAULT_NODE_GROUP,
}
NODE_ANNOTATIONS = {
    "node.alpha.kubernetes.io/ttl": "0",
    "volumes.kubernetes.io/controller-managed-attach-detach": "true",
}
# The conditions of a healthy node: (type, status, reason, message).
READY_CONDITIONS = (
    (
        "MemoryPressure",
        "False",
        "KubeletHasSufficientMemory",
        "kubelet has sufficient memory available",
    ),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


def _register(node: dict[str, Any], *, name: str, prefix: str) -> None:
    """Label the node as its kubelet would and give it the pod range ``<prefix>.0/24``."""
    meta = node["metadata"]
    labels = meta.setdefault("labels", {})
    labels.setdefault("kubernetes.io/hostname", name)
    for key, value in NODE_LABELS.items():
        labels.setdefault(key, value)
    labels.setdefault(INSTANCE_ID_LABEL, "i-" + secrets.token_hex(8) + "0")
    annotations = meta.setdefault("annotations", {})
    for key, value in NODE_ANNOTATIONS.items():
        annotations.setdefault(key, value)
    spec = node.setdefault("spec", {})
    spec["podCIDR"] = f"{prefix}.0/24"
    spec["podCIDRs"] = [spec["podCIDR"]]
    spec.setdefault(
        "providerID", f"localcluster:///{labels[NODE_GROUP_LABEL]}/{labels[INSTANCE_ID_LABEL]}"
    )


def _capacity(node: dict[str, Any]) -> dict[str, str]:
    """DEFAULT_CAPACITY, with what the node's capacity annotations say instead."""
    capacity = dict(DEFAULT_CAPACITY)
    for key, value in (node["metadata"].get("annotations") or {}).items():
        if key.startswith(CAPACITY_ANNOTATION):
            capacity[key[len(CAPACITY_ANNOTATION) :]] = str(value)
    return capacity


def _report_ready(
    node: dict[str, Any], *, name: str, address: str, capacity: dict[str, str]
) -> None:
    """The status a freshly started kubelet posts: capacity, Ready, addresses and node info."""
    stamp = now()
    status = node.setdefault("status", {})
    status["capacity"] = capacity
    status["allocatable"] = dict(capacity)
    status["conditions"] = [_condition(*condition, stamp) for condition in READY_CONDITIONS]
    status["addresses"] = [
        {"type": "InternalIP", "address": address},
        {"type": "Hostname", "address": name},
    ]
    status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": 10250}}
    uid = node["metadata"]["uid"]
    status["nodeInfo"] = {
        "machineID": uid.replace("-", ""),
        "systemUUID": uid,
        "bootID": secrets.token_hex(16),
        "kernelVersion": os.uname().release,
        "osImage": "localcluster",
        "containerRuntimeVersion": "localcluster://0.1.0",
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": KUBELET_VERSION,
        "operatingSystem": "linux",
        "architecture": "amd64",
    }
    status.setdefault("images", [])


def _condition(ctype: str, status: str, reason: str, message: str, stamp: str) -> dict[str, str]:
    return {
        "type": ctype,
        "status": status,
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }
