"""Demo container images for localcluster: a tiny stdlib HTTP app run as a pod's process.

Run as a script (never imported by the runtime) so that an idle pod costs only a bare
interpreter: ``python -I -S demo_app.py hello|broken|crash|slow [--tag TAG]``.
Environment: ``PORT`` (default 8080), ``MESSAGE``, ``HEALTHY=false``, ``APP_VERSION``
(default: the image tag), ``STARTUP_SECONDS`` (demo/slow), ``LOCALCLUSTER_POD_IP``
(the address to bind; the kubelet sets it to the pod's own loopback IP).

On SIGTERM (or SIGINT) the app closes its listening socket at once, so new connections are
refused, answers the requests already in flight (for up to DRAIN_SECONDS), then exits 0.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

# How long a stopping app waits for requests in flight: the kubelet's default grace period.
DRAIN_SECONDS = 30.0
# The longest /sleep answers take, so a test cannot hold a pod forever.
MAX_SLEEP_SECONDS = 30.0
# Paths that answer the app's health (kubelet probes, load balancer checks).
HEALTH_PATHS = ("/health", "/healthz", "/ready", "/readyz", "/livez")


class InFlight:
    """The number of requests being answered, and whether the app is stopping."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()
        self.stopping = False

    def enter(self) -> None:
        """A request has started."""
        with self._changed:
            self._count += 1

    def leave(self) -> None:
        """A request has been answered (or abandoned)."""
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    @property
    def count(self) -> int:
        """Requests in flight now."""
        return self._count

    def wait_idle(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for no request in flight; return how many are left."""
        with self._changed:
            self._changed.wait_for(lambda: self._count == 0, timeout)
            return self._count


class _Handler(BaseHTTPRequestHandler):
    """Serves ``/`` (version, message), ``/health`` and ``/sleep?seconds=S`` (a slow answer)."""

    server_version = "demo-hello/1"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm, a kept-alive
    # connection waits for the peer's delayed ACK (~40 ms) before sending the body.
    disable_nagle_algorithm = True
    app: dict[str, object] = {}
    in_flight = InFlight()
    _counted = False

    def handle_one_request(self) -> None:
        """Answer one request; it counts as in flight from its request line to its last byte."""
        try:
            super().handle_one_request()
        finally:
            if self._counted:
                self._counted = False
                self.in_flight.leave()

    def parse_request(self) -> bool:
        """Count the request as in flight as soon as its request line has arrived."""
        self.in_flight.enter()
        self._counted = True
        return super().parse_request()

    def do_GET(self) -> None:  # noqa: N802 - name imposed by BaseHTTPRequestHandler
        """Serve the demo endpoints; anything else is 404."""
        path, _, query = self.path.partition("?")
        if path == "/sleep":
            self._sleep(query)
        elif path in HEALTH_PATHS:
            healthy = bool(self.app["healthy"])
            body = {
                "version": self.app["version"],
                "message": self.app["message"],
                "healthy": healthy,
            }
            self._send(200 if healthy else 503, body)
        elif path == "/":
            body = {
                "version": self.app["version"],
                "message": self.app["message"],
                "pod": os.environ.get("POD_NAME", socket.gethostname()),
            }
            self._send(200, body)
        else:
            self._send(404, {"error": "not found", "path": path})

    def do_HEAD(self) -> None:  # noqa: N802
        """Answer HEAD like GET without a body."""
        self.do_GET()

    def _sleep(self, query: str) -> None:
        try:
            seconds = float(parse_qs(query).get("seconds", ["1"])[0])
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= MAX_SLEEP_SECONDS:
            self._send(400, {"error": f"seconds must be between 0 and {MAX_SLEEP_SECONDS:g}"})
            return
        # Written before the wait, so that a test knows when the request is in flight.
        sys.stdout.write(f"sleeping {seconds:g}s\n")
        sys.stdout.flush()
        time.sleep(seconds)
        self._send(200, {"version": self.app["version"], "slept": seconds})

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.in_flight.stopping:
            # The client must not send its next request down a connection about to close.
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log the request, unless it is a health check that passed.

        Probes and load balancers ask every second or more; their answers would bury the
        log a user reads (and cost the kubelet a line each). A failing one is logged.
        """
        status = int(code) if str(code).isdigit() else 0
        if self.path.partition("?")[0] in HEALTH_PATHS and 200 <= status < 300:
            return
        super().log_request(code, size)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Write an access line to stdout, which the kubelet captures as the container log."""
        sys.stdout.write(f"{self.address_string()} {format % args}\n")
        sys.stdout.flush()


def _serve(app: dict[str, object], startup_seconds: float) -> int:
    host = os.environ.get("LOCALCLUSTER_POD_IP") or "127.0.0.1"
    port = int(os.environ.get("PORT") or 8080)
    if startup_seconds > 0:
        print(f"starting up, listening in {startup_seconds:g}s", flush=True)
        time.sleep(startup_seconds)
    _Handler.app = app
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    # Connections are accepted on this thread, between signals: a signal handler that raised
    # could drop one just accepted. The handler only records the signal; the wakeup socket
    # ends the select() that an idle app sits in, with no timeout and no polling.
    server.timeout = 0  # handle_request() never waits: the selector saw a connection
    wake, wakeup = socket.socketpair()
    wakeup.setblocking(False)
    signal.set_wakeup_fd(wakeup.fileno(), warn_on_full_buffer=False)
    received: list[int] = []

    def _stop(signum: int, frame: object) -> None:
        received.append(signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(
        f"demo app version {app['version']} listening on http://{host}:{port}/ "
        f"healthy={app['healthy']}",
        flush=True,
    )
    with selectors.DefaultSelector() as selector:
        selector.register(server, selectors.EVENT_READ)
        selector.register(wake, selectors.EVENT_READ)
        while not received:
            for key, _ in selector.select():
                if key.fileobj is server:
                    server.handle_request()
                else:
                    wake.recv(64)
    in_flight = _Handler.in_flight
    in_flight.stopping = True
    server.server_close()  # new connections are refused from here on
    # Printed once the listener is closed: whoever reads it may count on refused connections.
    print(
        f"received signal {received[0]}, shutting down; requests in flight: {in_flight.count}",
        flush=True,
    )
    left = in_flight.wait_idle(DRAIN_SECONDS)
    if left:
        print(f"{left} requests still in flight after {DRAIN_SECONDS:g}s, exiting", flush=True)
    return 0


def main(argv: list[str]) -> int:
    """Run the demo image named by ``argv[0]``; return the process exit code."""
    kind = argv[0] if argv else "hello"
    tag = argv[argv.index("--tag") + 1] if "--tag" in argv else "latest"
    version = os.environ.get("APP_VERSION") or tag
    message = os.environ.get("MESSAGE") or f"Hello from demo/{kind}"
    healthy = os.environ.get("HEALTHY", "true").strip().lower() not in ("false", "0", "no")
    if kind == "crash":
        print(f"demo/crash version {version}: failing at start on purpose", flush=True)
        print("fatal: this image always exits with status 1", file=sys.stderr, flush=True)
        return 1
    if kind == "broken":
        healthy = False
    startup = float(os.environ.get("STARTUP_SECONDS") or (10 if kind == "slow" else 0))
    app: dict[str, object] = {"version": version, "message": message, "healthy": healthy}
    return _serve(app, startup)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
