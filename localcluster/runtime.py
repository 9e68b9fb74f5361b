"""The localcluster runtime: nodes, scheduler, controllers and kubelets wired onto the store.

``python -m localcluster`` calls ``await start(store, args)`` once the store is loaded and
``await runtime.stop()`` on SIGTERM/SIGINT, before the store is closed. Everything runs on
the server's event loop and reacts to the store's change listener, so a write through the
API reaches the controllers without a round trip through HTTP.

Conventions a user of the cluster sees:

* Nodes: ``--nodes N`` creates ``local-node-1..N`` on a fresh state dir; afterwards the stored
  Node objects are the truth (a Node created through the API is brought up, a deleted one
  taken down). Labels ``localcluster.io/node-group`` (default ``default``) and
  ``localcluster.io/instance-id``; address ``127.100.0.<i>``; allocatable cpu 4, memory 8Gi,
  pods 110, overridable per node with ``localcluster.io/capacity-<resource>`` annotations.
* Pods: each gets ``127.<block>.<node>.<n>`` (the node's podCIDR); ``<block>`` is claimed per
  running cluster so clusters side by side never collide. A container must bind its pod's
  address, which the kubelet passes as ``LOCALCLUSTER_POD_IP`` (the demo images do).
* Services: a ClusterIP in ``127.<block>.0.0/24`` and NodePorts on every node's address, both
  forwarded to the ready endpoints by the kube-proxy (``localcluster.kubeproxy``).
* Images: ``images.Catalog`` (built-in ``demo/*`` and the ``--images`` file); a container's
  ``command``/``args`` override the catalog's entrypoint/arguments as in a real runtime.
* Processes: one session per container; they die with localcluster (PR_SET_PDEATHSIG and the
  reaper watchdog), and a restart starts the stored pods again (restartCount + 1).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from .controllers.base import Controller
from .controllers.deployment import DeploymentController
from .controllers.disruption import DisruptionController
from .controllers.endpoints import EndpointsController, EndpointSliceController
from .controllers.events import EventExpiry, EventRecorder
from .controllers.job import JobController
from .controllers.nodelifecycle import NodeLifecycleController
from .controllers.replicaset import ReplicaSetController
from .images import Catalog
from .kubelet import KubeletContext
from .kubelet_process import Reaper
from .kubeproxy import KubeProxy
from .nodes import NodeManager, PodBlock
from .scheduler import Scheduler
from .store import Event, Store

log = logging.getLogger(__name__)


class Runtime:
    """Owns every moving part of the cluster besides the API: start, dispatch, stop."""

    def __init__(self, store: Store, args: argparse.Namespace) -> None:
        self.store = store
        self.args = args
        state_dir = getattr(args, "state_dir", None)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir:
            self.root = Path(state_dir) / "runtime"
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="localcluster-")
            self.root = Path(self._tmp.name)
        self.root.mkdir(parents=True, exist_ok=True)
        images = getattr(args, "images", None)
        try:
            self.catalog = Catalog.load(images)
        except Exception as exc:  # a user's file: OSError, ValueError or a YAML error
            raise SystemExit(
                f"localcluster: cannot use the image catalog --images {images}: {exc}"
            ) from exc
        self.recorder = EventRecorder(store)
        self.event_expiry = EventExpiry(store)
        self.reaper = Reaper()
        self.block: PodBlock | None = None
        self.nodes: NodeManager | None = None
        self.controllers: list[Controller] = []
        self._listening = False

    async def start(self) -> None:
        """Start the reaper, controllers, scheduler and one kubelet per node."""
        self.block = PodBlock.claim(
            Path(self.args.state_dir) if getattr(self.args, "state_dir", None) else None
        )
        _watch_children_with_pidfds()
        self.reaper.start()
        ctx = KubeletContext(
            store=self.store,
            catalog=self.catalog,
            recorder=self.recorder,
            reaper=self.reaper,
            root=self.root,
            api_host=getattr(self.args, "host", "127.0.0.1"),
            api_port=int(getattr(self.args, "port", 0) or 0),
        )
        self.nodes = NodeManager(self.store, ctx, self.recorder, self.block)
        self.controllers = [
            NodeLifecycleController(self.store, self.recorder),
            Scheduler(self.store, self.recorder),
            ReplicaSetController(self.store, self.recorder),
            DeploymentController(self.store, self.recorder),
            JobController(self.store, self.recorder),
            EndpointsController(self.store, self.recorder),
            EndpointSliceController(self.store, self.recorder),
            DisruptionController(self.store, self.recorder),
            KubeProxy(self.store, self.recorder, self.block.block),
        ]
        self._forget_deleted_pods()
        self.store.listeners.append(self._dispatch)
        self._listening = True
        await self.nodes.start(int(getattr(self.args, "nodes", 1) or 0))
        for controller in self.controllers:
            controller.start()
        self.event_expiry.start()
        log.info(
            "runtime started: %d nodes, pod addresses 127.%d.<node>.<n>",
            len(self.nodes.kubelets),
            self.block.block,
        )

    def _forget_deleted_pods(self) -> None:
        # Working directories of pods deleted while localcluster was down.
        pods = self.root / "pods"
        if not pods.is_dir():
            return
        live = {e.obj["metadata"]["uid"] for e in self.store.select("pods")}
        for directory in pods.iterdir():
            if directory.name not in live:
                shutil.rmtree(directory, ignore_errors=True)

    def _dispatch(self, event: Event) -> None:
        # Runs inside the store's commit: only queue work here, never write. A bug here must
        # not fail the API request that made the change, hence the catch-all.
        if event.resource == "events":
            return
        assert self.nodes is not None
        for consumer in (self.nodes, *self.controllers):
            try:
                consumer.on_event(event)
            except Exception:
                log.exception("runtime: %s failed on %s %s", consumer, event.type, event.resource)

    async def stop(self) -> None:
        """Stop controllers, then every pod process; leave the objects for the next start."""
        if self._listening:
            self.store.listeners.remove(self._dispatch)
            self._listening = False
        for controller in self.controllers:
            await controller.stop()
        await self.event_expiry.stop()
        if self.nodes is not None:
            await self.nodes.stop()
        self.reaper.stop()
        if self.block is not None:
            self.block.release()
            self.block = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _watch_children_with_pidfds() -> None:
    """Learn of container exits from pidfds on the event loop, not from a thread per child.

    Python 3.11's default child watcher starts a thread that blocks in waitpid for every
    process, which at tens of pods a second costs the loop more than the spawn itself; 3.12
    and later use pidfds on their own.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return  # a kernel without pidfds (before 5.3): keep the default watcher
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


async def start(store: Store, args: argparse.Namespace | Any) -> Runtime:
    """Start the runtime for ``store`` (args: host, port, nodes, state_dir, images); return it."""
    runtime = Runtime(store, args)
    await runtime.start()
    return runtime
