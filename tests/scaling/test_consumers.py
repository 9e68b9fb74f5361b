"""The scaling run log socket: stored lines first, then live lines, each once; anonymous refused."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from deployer import logsink as deployer_logsink
from scaling import logsink
from scaling.models import ScalingRun, ScalingRunLog
from scaling.routing import websocket_urlpatterns

pytestmark = [pytest.mark.both_databases, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def in_memory_layer(settings: Any) -> None:
    """Tests use an in-memory layer unless they configure the real redis one."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def _communicator(run_id: int, user: Any, after: int = 0) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(
        URLRouter(websocket_urlpatterns), f"/ws/scaling/runs/{run_id}/?after={after}"
    )
    communicator.scope["user"] = user
    return communicator


@sync_to_async
def _run_with_lines(count: int) -> ScalingRun:
    run = ScalingRun.objects.create(kind=ScalingRun.Kind.CORDON, params={"node": "n1"})
    for seq in range(1, count + 1):
        ScalingRunLog.objects.create(run=run, seq=seq, message=f"line {seq}")
    return run


async def test_it_replays_stored_lines_then_follows_the_group(admin_user: Any) -> None:
    run = await _run_with_lines(3)
    communicator = _communicator(run.pk, admin_user, after=1)
    connected, _ = await communicator.connect()
    assert connected
    replay = await communicator.receive_json_from()
    assert [line["message"] for line in replay["lines"]] == ["line 2", "line 3"]
    status = await communicator.receive_json_from()
    assert status == {"type": "status", "status": "queued", "failure_reason": "", "result": []}
    layer = get_channel_layer()
    old = {"seq": 3, "time": "", "level": "info", "step": "", "message": "line 3"}
    new = {**old, "seq": 4, "message": "line 4"}
    await layer.group_send(logsink.group_name(run.pk), {"type": "scaling.log", "line": old})
    await layer.group_send(logsink.group_name(run.pk), {"type": "scaling.log", "line": new})
    live = await communicator.receive_json_from()
    assert live == {"type": "log", "line": new}  # line 3 was not sent twice
    await communicator.disconnect()


async def test_it_refuses_anonymous_sockets() -> None:
    run = await _run_with_lines(1)
    connected, code = await _communicator(run.pk, AnonymousUser()).connect()
    assert not connected and code == 4401


def test_log_lines_are_published_only_after_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        deployer_logsink, "publish", lambda group, message: sent.append((group, message))
    )
    run = ScalingRun.objects.create(kind=ScalingRun.Kind.CORDON, params={"node": "n1"})
    from django.db import transaction

    with transaction.atomic():
        logsink.append(run.pk, "hello")
        assert sent == []
    assert sent == [(f"scaling-run-{run.pk}", {"type": "scaling.log", "line": sent[0][1]["line"]})]
    assert sent[0][1]["line"]["seq"] == 1 and sent[0][1]["line"]["message"] == "hello"


async def test_a_line_written_by_a_run_reaches_the_socket_through_redis(
    admin_user: Any, redis: Any, settings: Any
) -> None:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis.extra["url"]], "prefix": "scaling-test"},
        }
    }
    run = await _run_with_lines(0)
    communicator = _communicator(run.pk, admin_user)
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_json_from())["type"] == "status"
    # As the worker does: store the line; it is published after the commit.
    await sync_to_async(logsink.append)(run.pk, "cordoned n1")
    live = await communicator.receive_json_from(timeout=5)
    assert live["type"] == "log" and live["line"]["message"] == "cordoned n1"
    assert live["line"]["seq"] == 1
    await communicator.disconnect()
