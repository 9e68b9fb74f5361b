"""A pod's log viewer: the page, and the socket relaying a real localcluster pod's followed log."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from kubernetes import client, watch

from dashboard import podlogs
from dashboard.asgi import application
from deployer import k8s
from deployer.cluster import MANAGED_BY, MANAGER
from deployer.livelog import CLOSE_FORBIDDEN, CLOSE_NOT_FOUND
from deployer.models import App

pytestmark = [pytest.mark.django_db(transaction=True)]

TICKER = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"


@pytest.fixture
def cluster(settings: Any, kubeconfig: Path) -> Iterator[client.CoreV1Api]:
    """The session's localcluster as the dashboard's cluster."""
    settings.KUBECONFIG = kubeconfig
    k8s.reset()
    yield k8s.core_v1()
    k8s.reset()


def make_pod(
    core: client.CoreV1Api, namespace: str, app: str, script: str = TICKER, **labels: str
) -> str:
    """A running pod labelled as one of ``app``'s (unless ``labels`` say otherwise); its name."""
    name = f"{app}-v1-{uuid.uuid4().hex[:6]}"
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {
                "name": name,
                "labels": {"app": app, "version": "1", MANAGED_BY: MANAGER, **labels},
            },
            "spec": {
                "restartPolicy": "Never",
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {"name": "app", "image": "demo/hello:1", "command": ["sh", "-c", script]}
                ],
            },
        },
    )
    running(core, namespace, name)
    return name


def running(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    """The pod once it runs (or ran), watched; AssertionError after 30 seconds."""
    stream = watch.Watch().stream(
        core.list_namespaced_pod,
        namespace,
        field_selector=f"metadata.name={name}",
        timeout_seconds=30,
    )
    for event in stream:
        pod = event["object"]
        if pod.status.phase in ("Running", "Succeeded") and pod.status.pod_ip:
            return pod
    raise AssertionError(f"pod {name} did not start")


def printed(core: client.CoreV1Api, namespace: str, name: str, text: str) -> None:
    """Wait until the pod's log holds ``text``."""
    deadline = time.monotonic() + 20
    while text not in core.read_namespaced_pod_log(name, namespace):
        assert time.monotonic() < deadline, f"{name} never printed {text!r}"
        time.sleep(0.1)


@database_sync_to_async
def _session_cookie(user: Any) -> str:
    browser = Client()
    browser.force_login(user)
    return browser.cookies["sessionid"].value


async def socket(path: str, user: Any) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    headers.append((b"cookie", f"sessionid={await _session_cookie(user)}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def receive_until(
    communicator: WebsocketCommunicator,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 20,
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Messages until one satisfies ``done`` (included), or all of them satisfy ``until``."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        message = await communicator.receive_json_from(
            timeout=max(0.1, deadline - time.monotonic())
        )
        got.append(message)
        if done(message) or (until is not None and until(got)):
            return got


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [line["message"] for m in messages if m["type"] == "lines" for line in m["lines"]]


async def test_it_relays_a_followed_pod_log_and_stops_when_the_pod_is_deleted(
    cluster: client.CoreV1Api, app: App, viewer: Any
) -> None:
    script = f"for i in 1 2 3 4 5; do echo early $i; done; sleep 2; {TICKER}"
    name = await asyncio.to_thread(make_pod, cluster, app.namespace, app.name, script=script)
    await asyncio.to_thread(printed, cluster, app.namespace, name, "early 5")
    communicator = await socket(f"/ws/apps/{app.pk}/pods/{name}/logs/?tail=2", viewer)
    connected, _ = await communicator.connect()
    assert connected
    got = await receive_until(communicator, lambda m: False, until=lambda g: len(texts(g)) >= 4)
    # tail=2: the last two lines printed so far, then new lines as the pod prints them.
    assert texts(got)[:4] == ["early 4", "early 5", "tick 1", "tick 2"]
    await asyncio.to_thread(
        cluster.delete_namespaced_pod, name, app.namespace, grace_period_seconds=0
    )
    end = await receive_until(communicator, lambda m: m["type"] == "status")
    assert end[-1]["status"] == "gone" and end[-1]["message"] == "The pod is gone."
    assert (await communicator.receive_output(timeout=5))["type"] == "websocket.close"


async def test_closing_the_page_closes_the_kubernetes_stream(
    cluster: client.CoreV1Api, app: App, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    streams: list[Any] = []
    original = podlogs._Stream.__init__

    def remember(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        streams.append(self)

    monkeypatch.setattr(podlogs._Stream, "__init__", remember)
    name = await asyncio.to_thread(make_pod, cluster, app.namespace, app.name)
    communicator = await socket(f"/ws/apps/{app.pk}/pods/{name}/logs/?timestamps=1", admin)
    assert (await communicator.connect())[0]
    lines = texts(await receive_until(communicator, lambda m: len(texts([m])) > 0))
    # timestamps=true: the kubelet's RFC3339Nano prefix, nine fractional digits.
    stamp, text = lines[0].split(" ", 1)
    assert len(stamp) == 30 and stamp.endswith("Z") and text.startswith("tick ")
    await communicator.disconnect()
    await asyncio.to_thread(streams[0].done.wait, 5)
    assert streams[0].done.is_set(), "the Kubernetes stream is still open"
    await asyncio.to_thread(
        cluster.delete_namespaced_pod, name, app.namespace, grace_period_seconds=0
    )


async def test_previous_without_a_terminated_container_says_what_the_api_said(
    cluster: client.CoreV1Api, app: App, admin: Any
) -> None:
    name = await asyncio.to_thread(make_pod, cluster, app.namespace, app.name)
    communicator = await socket(f"/ws/apps/{app.pk}/pods/{name}/logs/?previous=1", admin)
    assert (await communicator.connect())[0]
    end = await receive_until(communicator, lambda m: m["type"] == "status")
    assert end[-1] == {
        "type": "status",
        "status": "error",
        "message": f'previous terminated container "app" in pod "{name}" not found',
    }
    await asyncio.to_thread(
        cluster.delete_namespaced_pod, name, app.namespace, grace_period_seconds=0
    )


async def test_it_refuses_pods_of_other_apps_and_users_who_may_not_see_the_app(
    cluster: client.CoreV1Api, app: App, admin: Any, stranger: Any
) -> None:
    foreign = await asyncio.to_thread(make_pod, cluster, app.namespace, "other", script="sleep 30")
    communicator = await socket(f"/ws/apps/{app.pk}/pods/{foreign}/logs/", admin)
    assert await communicator.connect() == (False, CLOSE_NOT_FOUND)
    missing = await socket(f"/ws/apps/{app.pk}/pods/{app.name}-v1-nosuch/logs/", admin)
    assert await missing.connect() == (False, CLOSE_NOT_FOUND)
    own = await asyncio.to_thread(make_pod, cluster, app.namespace, app.name, script="sleep 30")
    refused = await socket(f"/ws/apps/{app.pk}/pods/{own}/logs/", stranger)
    assert await refused.connect() == (False, CLOSE_FORBIDDEN)
    for name in (foreign, own):
        await asyncio.to_thread(
            cluster.delete_namespaced_pod, name, app.namespace, grace_period_seconds=0
        )


def test_the_page_serves_the_apps_pods_only(
    cluster: client.CoreV1Api, app: App, viewer: Any, stranger: Any
) -> None:
    own = make_pod(cluster, app.namespace, app.name, script="sleep 30")
    foreign = make_pod(cluster, app.namespace, "other", script="sleep 30")
    browser = Client()
    browser.force_login(viewer)
    page = browser.get(f"/apps/{app.pk}/pods/{own}/logs/", {"tail": "50", "timestamps": "1"})
    assert page.status_code == 200
    body = page.content.decode()
    assert f'data-ws-path="/ws/apps/{app.pk}/pods/{own}/logs/"' in body
    assert 'name="tail" min="0" max="5000" value="50"' in body
    assert browser.get(f"/apps/{app.pk}/pods/{foreign}/logs/").status_code == 404
    # A user who may not see the app gets what the app page answers them.
    browser.force_login(stranger)
    refused = browser.get(f"/apps/{app.pk}/pods/{own}/logs/").status_code
    assert refused in (403, 404) and refused == browser.get(f"/apps/{app.pk}/").status_code
    for name in (foreign, own):
        cluster.delete_namespaced_pod(name, app.namespace, grace_period_seconds=0)


async def test_lines_beyond_the_buffer_are_dropped_and_counted_and_streams_are_capped(
    cluster: client.CoreV1Api, app: App, admin: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(podlogs, "BUFFER_LINES", 50)
    monkeypatch.setattr(podlogs, "RELAY_LINES", 10)
    script = "seq 1 2000; sleep 30"
    name = await asyncio.to_thread(make_pod, cluster, app.namespace, app.name, script=script)
    await asyncio.to_thread(printed, cluster, app.namespace, name, "\n2000\n")
    communicator = await socket(f"/ws/apps/{app.pk}/pods/{name}/logs/?tail=300", admin)
    assert (await communicator.connect())[0]
    got = await receive_until(
        communicator,
        lambda m: False,
        until=lambda g: bool(texts(g)) and texts(g)[-1] == "2000",
    )
    dropped = sum(m["count"] for m in got if m["type"] == "dropped")
    lines = [int(t) for t in texts(got)]
    # The 300 lines asked for arrive at once; at most 50 wait, the rest are counted.
    assert dropped >= 100 and dropped + len(lines) == 300
    assert lines == list(range(2001 - len(lines), 2001))
    assert max(len(m["lines"]) for m in got if m["type"] == "lines") <= 10
    await communicator.disconnect()
    monkeypatch.setattr(podlogs, "MAX_STREAMS", 0)
    refused = await socket(f"/ws/apps/{app.pk}/pods/{name}/logs/", admin)
    assert (await refused.connect())[0]
    status = await refused.receive_json_from(timeout=5)
    assert status["status"] == "error" and status["message"].startswith("Too many pod logs")
    await asyncio.to_thread(
        cluster.delete_namespaced_pod, name, app.namespace, grace_period_seconds=0
    )
