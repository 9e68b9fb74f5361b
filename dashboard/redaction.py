"""Webhook secrets never reach a log: the Docker Hub hook carries its secret in the URL path.

:func:`redact` rewrites ``/api/hooks/dockerhub/<secret>/`` to ``/api/hooks/dockerhub/<redacted>/``;
the web server's access log (dashboard.webserver) and every Django log handler
(:class:`RedactSecrets` in settings.LOGGING) pass their lines through it.
"""

from __future__ import annotations

import logging
import re

REDACTED = "<redacted>"
# The secret is one path segment; a percent-encoded or malformed one is still a segment.
_SECRET_IN_PATH = re.compile(r"(/api/hooks/dockerhub/)[^/?#\s\"']+")


def redact(text: str) -> str:
    """``text`` with every webhook secret in a hook path replaced by ``<redacted>``."""
    return _SECRET_IN_PATH.sub(rf"\g<1>{REDACTED}", text)


class RedactSecrets(logging.Filter):
    """A handler filter that redacts webhook secrets from each record's message."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the formatted message when it holds a secret; never drops a record."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True
