"""Webhook secrets are redacted from the web server's access log and from Django's log lines."""

from __future__ import annotations

import io
import logging
from datetime import datetime
from typing import Any

from dashboard.redaction import RedactSecrets, redact
from dashboard.webserver import RedactingAccessLog, RedactingServer, WebServerCommand


def test_it_redacts_the_secret_of_a_docker_hub_hook_path() -> None:
    assert redact("POST /api/hooks/dockerhub/abc-123_X/") == "POST /api/hooks/dockerhub/<redacted>/"
    assert redact("/api/hooks/dockerhub/abc?x=1") == "/api/hooks/dockerhub/<redacted>?x=1"
    assert redact("GET /api/hooks/generic/7/") == "GET /api/hooks/generic/7/"


def test_the_access_log_line_of_a_hook_holds_no_secret() -> None:
    stream = io.StringIO()
    log = RedactingAccessLog(stream)
    details = {"client": ["127.0.0.1", 5000], "method": "POST", "status": 404, "size": 44}
    log("http", "complete", {**details, "path": "/api/hooks/dockerhub/s3cret/"})
    line = stream.getvalue()
    assert "s3cret" not in line
    assert '"POST /api/hooks/dockerhub/<redacted>/" 404 44' in line


def test_the_web_command_serves_through_the_redacting_server(monkeypatch: Any) -> None:
    assert WebServerCommand.server_class is RedactingServer
    captured: dict[str, Any] = {}
    monkeypatch.setattr(
        "daphne.server.Server.__init__",
        lambda self, *args, **kwargs: captured.update(kwargs),
    )
    from daphne.access import AccessLogGenerator

    RedactingServer(application=None, endpoints=[], action_logger=AccessLogGenerator(io.StringIO()))
    assert isinstance(captured["action_logger"], RedactingAccessLog)


def test_django_log_lines_with_a_hook_path_are_redacted() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    try:
        logger.warning("Not Found: %s", "/api/hooks/dockerhub/s3cret/")
        logger.warning("at %s nothing secret", datetime(2024, 1, 1).date())
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue().splitlines() == [
        "Not Found: /api/hooks/dockerhub/<redacted>/",
        "at 2024-01-01 nothing secret",
    ]


def test_the_configured_handlers_redact(settings: Any) -> None:
    filters = settings.LOGGING["handlers"]["console"]["filters"]
    assert settings.LOGGING["filters"][filters[0]]["()"] == "dashboard.redaction.RedactSecrets"
    # Django's own handlers are dropped, so every django.* line goes through the console one.
    assert settings.LOGGING["loggers"]["django"]["handlers"] == []
