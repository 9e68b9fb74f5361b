"""Kubernetes Events about a version's pods, collected beside the deployer's pod watch."""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

from kubernetes import client

from deployer import k8s
from deployer.bounds import EVENT_MESSAGE_CHARS, cut_text
from deployer.errors import Forbidden

logger = logging.getLogger(__name__)


# Distinct (pod, reason, message) events a feed remembers to drop repeats.
MAX_SEEN_EVENTS = 2048


class PodEventFeed:
    """Kubernetes Events about pods named ``<prefix>...``, collected by a watch thread.

    Events explain what pod status does not (scheduling failures, image pulls, back-offs).
    They are a nicety: pod status stays the authority, so a failing feed only logs.
    """

    def __init__(self, core: client.CoreV1Api, namespace: str, prefix: str) -> None:
        self.core = core
        self.namespace = namespace
        self.prefix = prefix
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._seen: set[tuple[str, str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="pod-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (within a watch window)."""
        self._stop.set()

    def drain(self) -> list[tuple[str, str]]:
        """(type, text) of the events collected since the last call."""
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _take(self, event: dict[str, Any]) -> None:
        involved = event.get("involvedObject") or {}
        name = str(involved.get("name") or "")
        if not name.startswith(self.prefix):
            return
        reason = cut_text(str(event.get("reason") or ""), 128)
        message = cut_text(str(event.get("message") or ""), EVENT_MESSAGE_CHARS)
        if (name, reason, message) in self._seen:
            return
        if len(self._seen) >= MAX_SEEN_EVENTS:
            self._seen.clear()  # a repeat may be logged again; memory stays bounded
        self._seen.add((name, reason, message))
        self._queue.put((str(event.get("type") or "Normal"), f"{reason} on {name}: {message}"))

    def _run(self) -> None:
        selector = "involvedObject.kind=Pod"
        try:
            response = k8s.call(
                self.core.list_namespaced_event,
                self.namespace,
                field_selector=selector,
                _preload_content=False,
                _request_timeout=10,
            )
            listed = json.loads(response.data)
            for item in listed.get("items") or []:
                self._take(item)
            resource_version = (listed.get("metadata") or {}).get("resourceVersion")
            while not self._stop.is_set():
                for event in k8s.stream(
                    self.core.list_namespaced_event,
                    self.namespace,
                    field_selector=selector,
                    resource_version=resource_version,
                    timeout_seconds=1,
                    deserialize=False,
                    _request_timeout=10,
                ):
                    obj = event.get("object") or {}
                    resource_version = (obj.get("metadata") or {}).get(
                        "resourceVersion"
                    ) or resource_version
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        self._take(obj)
                    if self._stop.is_set():
                        return
        except Forbidden as exc:  # a missing permission is said, not only at debug level
            logger.warning("cannot read the events of pods %s*: %s", self.prefix, exc)
        except Exception:
            logger.debug("pod event feed for %s* ended", self.prefix, exc_info=True)
