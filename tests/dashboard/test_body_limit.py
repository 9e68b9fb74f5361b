"""Oversized request bodies are refused with 413 before a view (or Django) reads them."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import HttpCommunicator

from dashboard.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

HEADERS = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]


async def test_it_refuses_a_declared_oversized_body(settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = b'{"tag": "' + b"x" * 2000 + b'"}'
    communicator = HttpCommunicator(
        application,
        "POST",
        "/api/hooks/generic/1/",
        body=body,
        headers=[*HEADERS, (b"content-length", str(len(body)).encode())],
    )
    response = await communicator.get_response()
    assert response["status"] == 413
    assert b"too large" in response["body"]


async def test_it_refuses_an_undeclared_oversized_body_as_it_arrives(settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    communicator = HttpCommunicator(
        application, "POST", "/api/hooks/generic/1/", body=b"x" * 5000, headers=HEADERS
    )
    response = await communicator.get_response()
    assert response["status"] == 413


async def test_it_lets_a_small_body_through(settings: Any) -> None:
    body = b'{"tag": "2"}'
    communicator = HttpCommunicator(
        application,
        "POST",
        "/api/hooks/generic/424242/",
        body=body,
        headers=[*HEADERS, (b"content-length", str(len(body)).encode())],
    )
    response = await communicator.get_response()
    assert response["status"] == 404


def test_it_refuses_oversized_form_posts_too(admin_client: Any, app: Any) -> None:
    response = admin_client.post(f"/apps/{app.pk}/deploy/", {"image": "x" * (2 * 1024 * 1024)})
    assert response.status_code == 413
