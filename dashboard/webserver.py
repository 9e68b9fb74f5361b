"""``python -m dashboard.webserver``: daphne, with webhook secrets redacted from its access log.

It takes daphne's command line unchanged. Daphne writes ``"POST <path>"`` for every
request, and the Docker Hub hook's path holds the app's webhook secret.
"""

from __future__ import annotations

import sys
from typing import Any

from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface
from daphne.server import Server

from dashboard.redaction import redact


class RedactingAccessLog(AccessLogGenerator):
    """Daphne's NCSA-style access log with webhook secrets replaced by ``<redacted>``."""

    def write_entry(self, host: Any, date: Any, request: str, *args: Any, **kwargs: Any) -> None:
        """Write the entry with its request line redacted."""
        super().write_entry(host, date, redact(request), *args, **kwargs)


class RedactingServer(Server):
    """A daphne server whose access log (when it has one) redacts secrets."""

    def __init__(self, *args: Any, action_logger: Any = None, **kwargs: Any) -> None:
        if isinstance(action_logger, AccessLogGenerator):
            action_logger = RedactingAccessLog(action_logger.stream)
        super().__init__(*args, action_logger=action_logger, **kwargs)


class WebServerCommand(CommandLineInterface):
    """Daphne's command line, serving through RedactingServer."""

    server_class = RedactingServer


def main(argv: list[str]) -> None:
    """Run daphne with ``argv`` (e.g. ``-b 127.0.0.1 -p 8000 dashboard.asgi:application``)."""
    WebServerCommand().run(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
