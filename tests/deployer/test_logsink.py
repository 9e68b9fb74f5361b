"""Log lines and status changes reach the Channels group through a real redis, after commit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from deployer import logsink
from deployer.models import App, Deployment
from tests.servers import Server

pytestmark = pytest.mark.both_databases


@pytest.fixture
def redis_layer(redis: Server, settings: Any) -> None:
    """CHANNEL_LAYERS pointed at the session's redis."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [str(redis.extra["url"])], "prefix": "greenlight-test"},
        }
    }


async def _receive(group: str, count: int, appended: asyncio.Event) -> list[dict[str, Any]]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    appended.set()
    try:
        return [await asyncio.wait_for(layer.receive(channel), 10) for _ in range(count)]
    finally:
        await layer.group_discard(group, channel)


def test_it_publishes_stored_lines_and_status_to_the_deployment_group_after_commit(
    transactional_db: None, redis_layer: None, app: App
) -> None:
    deployment = Deployment.objects.create(app=app, image=app.image)
    group = logsink.group_name(deployment.pk)
    joined = asyncio.Event()
    loop = asyncio.new_event_loop()
    receiving = loop.create_task(_receive(group, 3, joined))
    loop.run_until_complete(joined.wait())

    with transaction.atomic():
        logsink.append(deployment, "first", step="prepare")
        logsink.append(deployment, "second", level="warning")
        logsink.status_changed(deployment)
    assert logsink.flush(10)

    messages = loop.run_until_complete(receiving)
    loop.close()
    lines = [m["line"] for m in messages if m["type"] == "deployment.log"]
    assert [(line["seq"], line["message"], line["level"]) for line in lines] == [
        (1, "first", "info"),
        (2, "second", "warning"),
    ]
    status = next(m for m in messages if m["type"] == "deployment.status")
    assert status["status"] == "queued" and status["deployment"] == deployment.pk


def test_a_run_log_stores_each_line_without_reading_the_highest_seq_first(
    db: None, app: App
) -> None:
    deployment = Deployment.objects.create(app=app, image=app.image)
    log = logsink.deployment_log(deployment)
    log.log("first")  # reads the highest seq once

    with CaptureQueriesContext(connection) as queries:
        log.log("second")

    statements = [query["sql"].upper() for query in queries.captured_queries]
    assert [sql for sql in statements if "INSERT" in sql], statements
    assert not [sql for sql in statements if "MAX(" in sql], statements
    assert list(deployment.logs.values_list("seq", "message")) == [(1, "first"), (2, "second")]


def test_a_run_log_goes_on_after_a_line_another_writer_stored(db: None, app: App) -> None:
    deployment = Deployment.objects.create(app=app, image=app.image)
    log = logsink.deployment_log(deployment)
    log.log("first")
    logsink.append(deployment, "from elsewhere")  # e.g. the web process, on an abort

    log.log("third")

    assert list(deployment.logs.values_list("seq", "message")) == [
        (1, "first"),
        (2, "from elsewhere"),
        (3, "third"),
    ]
