"""The live log socket, through the real ASGI stack (origin check, session auth, routing)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

from dashboard.asgi import application
from deployer import logsink
from deployer.models import Deployment

pytestmark = [pytest.mark.both_databases, pytest.mark.django_db(transaction=True)]


@database_sync_to_async
def _session_cookie(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


async def socket(path: str, user: Any = None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if user is not None:
        headers.append((b"cookie", f"sessionid={await _session_cookie(user)}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.fixture
def captured(monkeypatch: Any) -> list[tuple[str, dict[str, Any]]]:
    """What logsink would publish, for the test to deliver on its own event loop."""
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(logsink, "publish", lambda group, message: sent.append((group, message)))
    return sent


async def deliver(sent: list[tuple[str, dict[str, Any]]]) -> None:
    layer = get_channel_layer()
    for group, message in sent:
        await layer.group_send(group, dict(message))
    sent.clear()


async def test_it_rejects_anonymous_sockets(app: Any, make_deployment: Callable[..., Any]) -> None:
    deployment = await database_sync_to_async(make_deployment)(app)
    communicator = await socket(f"/ws/deployments/{deployment.pk}/")
    connected, _ = await communicator.connect()
    assert not connected


async def test_it_rejects_users_who_may_not_see_the_deployment(
    stranger: Any, app: Any, make_deployment: Callable[..., Any]
) -> None:
    deployment = await database_sync_to_async(make_deployment)(app)
    connected, _ = await (await socket(f"/ws/deployments/{deployment.pk}/", stranger)).connect()
    assert not connected


async def test_it_rejects_a_missing_deployment(admin: Any) -> None:
    connected, _ = await (await socket("/ws/deployments/424242/", admin)).connect()
    assert not connected


async def test_it_rejects_foreign_origins(admin: Any, app: Any, make_deployment: Any) -> None:
    deployment = await database_sync_to_async(make_deployment)(app)
    communicator = WebsocketCommunicator(
        application, f"/ws/deployments/{deployment.pk}/", headers=[(b"origin", b"http://evil.test")]
    )
    connected, _ = await communicator.connect()
    assert not connected


async def test_it_replays_lines_after_the_seq_then_follows_live(
    viewer: Any, app: Any, make_deployment: Callable[..., Any], captured: list[Any]
) -> None:
    deployment = await database_sync_to_async(make_deployment)(
        app, lines=4, status=Deployment.Status.RUNNING, finished_at=None
    )
    communicator = await socket(f"/ws/deployments/{deployment.pk}/?after=2", viewer)
    connected, _ = await communicator.connect()
    assert connected
    replay = await communicator.receive_json_from()
    assert replay["type"] == "lines"
    assert [line["seq"] for line in replay["lines"]] == [3, 4]
    status = await communicator.receive_json_from()
    assert status["type"] == "status" and status["status"] == "running"

    await database_sync_to_async(logsink.append)(deployment, "pods ready", step="pods")
    await deliver(captured)
    live = await communicator.receive_json_from()
    assert live == {"type": "log", "line": live["line"]}
    assert live["line"]["seq"] == 5 and live["line"]["message"] == "pods ready"

    def finish() -> None:
        deployment.succeed()
        logsink.status_changed(deployment)

    await database_sync_to_async(finish)()
    await deliver(captured)
    final = await communicator.receive_json_from()
    assert final["type"] == "status" and final["status"] == "succeeded"
    await communicator.disconnect()


async def test_it_sends_each_line_once_when_replay_and_group_overlap(
    admin: Any, app: Any, make_deployment: Callable[..., Any]
) -> None:
    deployment = await database_sync_to_async(make_deployment)(app, lines=3)
    communicator = await socket(f"/ws/deployments/{deployment.pk}/", admin)
    assert (await communicator.connect())[0]
    replay = await communicator.receive_json_from()
    assert [line["seq"] for line in replay["lines"]] == [1, 2, 3]
    await communicator.receive_json_from()  # status
    layer = get_channel_layer()
    group = logsink.group_name(deployment.pk)
    line3 = {"seq": 3, "time": "", "level": "info", "step": "", "message": "line 3"}
    line4 = {**line3, "seq": 4, "message": "line 4"}
    await layer.group_send(group, {"type": "deployment.log", "line": line3})
    await layer.group_send(group, {"type": "deployment.log", "line": line4})
    message = await communicator.receive_json_from()
    assert message["line"]["seq"] == 4
    assert await communicator.receive_nothing()
    await communicator.disconnect()


async def test_a_status_older_than_the_final_one_is_not_forwarded(
    admin: Any, app: Any, make_deployment: Callable[..., Any], captured: list[Any]
) -> None:
    # The worker published "running" before it finished, but the message is still on
    # its way when a browser connects and reads "succeeded" from the database.
    deployment = await database_sync_to_async(make_deployment)(
        app, status=Deployment.Status.RUNNING, finished_at=None
    )
    stale = logsink.status_payload(deployment)
    await database_sync_to_async(deployment.succeed)()
    communicator = await socket(f"/ws/deployments/{deployment.pk}/", admin)
    assert (await communicator.connect())[0]
    message = await communicator.receive_json_from()
    while message["type"] != "status":
        message = await communicator.receive_json_from()
    assert message["status"] == "succeeded"
    await get_channel_layer().group_send(logsink.group_name(deployment.pk), dict(stale))
    assert await communicator.receive_nothing()
    await communicator.disconnect()


async def test_it_replays_long_logs_in_batches(
    admin: Any, app: Any, make_deployment: Callable[..., Any]
) -> None:
    deployment = await database_sync_to_async(make_deployment)(app, lines=1200)
    communicator = await socket(f"/ws/deployments/{deployment.pk}/?after=oops", admin)
    assert (await communicator.connect())[0]
    seqs: list[int] = []
    while True:
        message = await communicator.receive_json_from()
        if message["type"] == "status":
            break
        seqs.extend(line["seq"] for line in message["lines"])
    assert seqs == list(range(1, 1201))
    await communicator.disconnect()
