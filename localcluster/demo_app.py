"""Demo container images for localcluster: a tiny stdlib HTTP app run as a pod's process.

Run as a script (never imported by the runtime) so that an idle pod costs only a bare
interpreter: ``python -I -S demo_app.py hello|broken|crash|slow [--tag TAG]``.
Environment: ``PORT`` (default 8080), ``MESSAGE``, ``HEALTHY=false``, ``APP_VERSION``
(default: the image tag), ``STARTUP_SECONDS`` (demo/slow), ``LOCALCLUSTER_POD_IP``
(the address to bind; the kubelet sets it to the pod's own loopback IP).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    """Answers ``/`` with the version and message and ``/health`` with the health document."""

    server_version = "demo-hello/1"
    protocol_version = "HTTP/1.1"
    app: dict[str, object] = {}

    def do_GET(self) -> None:  # noqa: N802 - name imposed by BaseHTTPRequestHandler
        """Serve the two demo endpoints; anything else is 404."""
        path = self.path.split("?", 1)[0]
        if path in ("/health", "/healthz", "/ready", "/readyz", "/livez"):
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

    def _send(self, status: int, body: dict[str, object]) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

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

    def _stop(signum: int, frame: object) -> None:
        # The handler runs on the main thread inside serve_forever's select, so leaving by an
        # exception is immediate, whereas shutdown() would wait for the next poll.
        print(f"received signal {signum}, shutting down", flush=True)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(
        f"demo app version {app['version']} listening on http://{host}:{port}/ "
        f"healthy={app['healthy']}",
        flush=True,
    )
    try:
        server.serve_forever(poll_interval=3600)
    finally:
        server.server_close()
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
