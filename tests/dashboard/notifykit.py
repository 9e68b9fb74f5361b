"""Real receivers for notification tests: an HTTP server and an SMTP server on loopback."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from tests.servers import free_port


@dataclass
class Received:
    """One request the receiver answered: path, headers, raw body, and the status it gave."""

    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers ``answers`` in turn, then 200."""

    port: int = 0
    answers: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def url(self, path: str = "/hook") -> str:
        """The URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, count: int, timeout: float) -> list[Received]:
        """Block until ``count`` requests arrived (or ``timeout``); the requests so far."""
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (the http.server API)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with receiver.arrived:
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.received.append(
                    Received(self.path, dict(self.headers.items()), body, status)
                )
                receiver.arrived.notify_all()
            answer = b"ok" if status < 300 else b"try again later"
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            """Quiet: the test reads what arrived."""

    return Handler


@contextlib.contextmanager
def http_receiver() -> Iterator[Receiver]:
    """A :class:`Receiver` serving in a thread on a free loopback port until the block ends."""
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="notify-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Mailbox:
    """What the SMTP server received: (envelope sender, recipients, parsed message) per mail."""

    port: int
    mails: list[tuple[str, list[str], Message]] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        """aiosmtpd's hook: keep the mail."""
        self.mails.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
        )
        return "250 Message accepted for delivery"


@contextlib.contextmanager
def smtp_server() -> Iterator[Mailbox]:
    """An aiosmtpd SMTP server on a free loopback port until the block ends."""
    mailbox = Mailbox(port=free_port())
    controller = Controller(mailbox, hostname="127.0.0.1", port=mailbox.port)
    controller.start()
    try:
        yield mailbox
    finally:
        controller.stop()
