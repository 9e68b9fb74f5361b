"""Demo container images for localcluster: a tiny HTTP app run as a pod's process.

Run as a script (never imported by the runtime) so that an idle pod costs only a bare
interpreter: ``python -I -S demo_app.py hello|broken|crash|slow|bad-release [--tag TAG]``;
``demo_app.py <image> migrate`` (a container's ``args: ["migrate"]``) runs a pretend
migration instead (``DEMO_MIGRATE_FAIL=1`` fails it, ``DEMO_MIGRATE_SLEEP`` slows it).
demo/bad-release passes every health check (``/health`` answers 200) and answers 500 on
every other path: a release that only its users' traffic shows to be bad.
Environment: ``PORT`` (default 8080), ``MESSAGE``, ``HEALTHY=false``, ``APP_VERSION``
(default: the image tag), ``STARTUP_SECONDS`` (demo/slow), ``LOCALCLUSTER_POD_IP``
(the address to bind; the kubelet sets it to the pod's own loopback IP).

On SIGTERM (or SIGINT) the app closes its listening socket at once, so new connections are
refused, answers the requests already in flight (for up to DRAIN_SECONDS), gives kept-alive
connections up to KEEPALIVE_DRAIN_SECONDS to send one more request (answered with
Connection: close), then exits 0.

Only modules built into the interpreter are imported (``_socket``, ``_signal``, ``_thread``,
``select``): http.server, socket, threading and json would take several times the CPU of
the bare interpreter at every pod's start, and a cluster starts pods by the hundred.
HTTP/1.1 with keep-alive, one thread per connection, GET and HEAD.
"""

from __future__ import annotations

import _signal
import _socket
import _thread
import os
import select
import sys
import time

# How long a stopping app waits for requests in flight: the kubelet's default grace period.
DRAIN_SECONDS = 30.0
# How long a stopping app then lets kept-alive connections send one more request, answered
# with Connection: close, before it exits: closing one while idle races the client's next
# request (which the client must then retry), through a kube-proxy or not.
KEEPALIVE_DRAIN_SECONDS = 0.5
# The longest /sleep answers take, so a test cannot hold a pod forever.
MAX_SLEEP_SECONDS = 30.0
# Paths that answer the app's health (kubelet probes, load balancer checks).
HEALTH_PATHS = ("/health", "/healthz", "/ready", "/readyz", "/livez")
SERVER = f"demo-hello/1 Python/{sys.version.split()[0]}"
# What one request line or header line may hold, and how many header lines a request may have.
MAX_LINE = 65536
MAX_HEADERS = 100
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    414: "Request-URI Too Long",
    500: "Internal Server Error",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    503: "Service Unavailable",
}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class InFlight:
    """The number of requests being answered, and whether the app is stopping."""

    def __init__(self) -> None:
        self._count = 0
        self._lock = _thread.allocate_lock()
        # Held while any request is in flight: waiting for it to be free is waiting for idle.
        self._busy = _thread.allocate_lock()
        self._connections = 0
        # Held while any connection is open, as _busy is for requests.
        self._connected = _thread.allocate_lock()
        self.stopping = False

    def enter(self) -> None:
        """A request has started."""
        with self._lock:
            self._count += 1
            if self._count == 1:
                self._busy.acquire()

    def leave(self) -> None:
        """A request has been answered (or abandoned)."""
        with self._lock:
            self._count -= 1
            if self._count == 0:
                self._busy.release()

    def opened(self) -> None:
        """A connection was accepted."""
        with self._lock:
            self._connections += 1
            if self._connections == 1:
                self._connected.acquire()

    def closed(self) -> None:
        """A connection was closed."""
        with self._lock:
            self._connections -= 1
            if self._connections == 0:
                self._connected.release()

    def wait_closed(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every connection to close; return how many are open."""
        if self._connected.acquire(timeout=timeout):
            self._connected.release()
        return self._connections

    @property
    def count(self) -> int:
        """Requests in flight now."""
        return self._count

    def wait_idle(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for no request in flight; return how many are left."""
        if self._busy.acquire(timeout=timeout):
            self._busy.release()
        return self._count


def to_json(body: dict[str, object]) -> str:
    """Encode a flat dict of str, bool, int and float values as json.dumps does."""
    items = []
    for key, value in body.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = _json_string(str(value))
        items.append(f"{_json_string(key)}: {text}")
    return "{" + ", ".join(items) + "}"


def _json_string(text: str) -> str:
    out = ['"']
    for char in text:
        code = ord(char)
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F:
            out.append(char)
        elif code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def http_date(now: float) -> str:
    """An RFC 7231 date, as the Date header carries it."""
    t = time.gmtime(now)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def log(line: str) -> None:
    """Write a line to stdout, which the kubelet captures as the container log."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class BadRequest(Exception):
    """A request this server cannot read: answered with ``status``, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Connection:
    """One client connection: reads requests, answers them in order, until either side closes."""

    def __init__(self, app: dict[str, object], sock: _socket.socket, client: str) -> None:
        self.app = app
        self.sock = sock
        self.client = client
        self.buffer = b""
        self.in_flight: InFlight = app["in_flight"]  # type: ignore[assignment]

    def serve(self) -> None:
        """Answer requests until the connection ends; never raises."""
        self.in_flight.opened()
        try:
            while self._one():
                pass
        except OSError:
            pass  # the client went away
        finally:
            self.sock.close()
            self.in_flight.closed()

    def _line(self, too_long: int) -> bytes | None:
        """The next line, None at the end of the stream; BadRequest(``too_long``) past MAX_LINE."""
        while b"\n" not in self.buffer:
            if len(self.buffer) > MAX_LINE:
                raise BadRequest(too_long, "line too long")
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"

    def _one(self) -> bool:
        """Read and answer one request; False when the connection is to close."""
        try:
            raw = self._line(414)
        except BadRequest as exc:
            self._send("", "", exc.status, {"error": str(exc)}, close=True)
            return False
        if not raw:
            return False
        self.in_flight.enter()
        try:
            return self._answer(raw)
        finally:
            self.in_flight.leave()

    def _answer(self, raw: bytes) -> bool:
        request_line = raw.decode("iso-8859-1").rstrip("\r\n")
        try:
            method, path, version = self._parse_request_line(request_line)
            keep_alive = self._read_headers(version)
        except BadRequest as exc:
            self._send(request_line, "", exc.status, {"error": str(exc)}, close=True)
            return False
        if method not in ("GET", "HEAD"):
            self._send(request_line, method, 501, {"error": f"unsupported method {method}"})
            return keep_alive and not self.in_flight.stopping
        status, body = self._route(path)
        self._send(request_line, method, status, body, path=path)
        return keep_alive and not self.in_flight.stopping

    @staticmethod
    def _parse_request_line(request_line: str) -> tuple[str, str, str]:
        words = request_line.split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            raise BadRequest(400, f"bad request syntax ({request_line!r})")
        method, path, version = words
        if version not in ("HTTP/1.0", "HTTP/1.1"):
            raise BadRequest(400, f"bad request version ({version!r})")
        return method, path, version

    def _read_headers(self, version: str) -> bool:
        """Read the header lines; return whether the connection stays open afterwards."""
        keep_alive = version == "HTTP/1.1"
        length = 0
        for _ in range(MAX_HEADERS + 1):
            line = self._line(431)
            if line is None:
                raise OSError("connection closed in the headers")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("iso-8859-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "connection":
                if value == "close":
                    keep_alive = False
                elif value == "keep-alive":
                    keep_alive = True
            elif name == "content-length":
                if not value.isdigit():
                    raise BadRequest(400, "bad Content-Length")
                length = int(value)
        else:
            raise BadRequest(431, f"more than {MAX_HEADERS} headers")
        self._discard(length)
        return keep_alive

    def _discard(self, length: int) -> None:
        # A body the app does not read must still leave the stream, or it reads as a request.
        while len(self.buffer) < length:
            data = self.sock.recv(65536)
            if not data:
                raise OSError("connection closed in the body")
            self.buffer += data
        self.buffer = self.buffer[length:]

    def _route(self, path_and_query: str) -> tuple[int, dict[str, object]]:
        app = self.app
        path, _, query = path_and_query.partition("?")
        if app["fails_requests"] and path not in HEALTH_PATHS:
            return 500, {"version": app["version"], "error": "this release fails every request"}
        if path == "/sleep":
            return self._sleep(query)
        if path in HEALTH_PATHS:
            healthy = bool(app["healthy"])
            body = {"version": app["version"], "message": app["message"], "healthy": healthy}
            return (200 if healthy else 503), body
        if path == "/":
            pod = os.environ.get("POD_NAME") or _socket.gethostname()
            return 200, {"version": app["version"], "message": app["message"], "pod": pod}
        return 404, {"error": "not found", "path": path}

    def _sleep(self, query: str) -> tuple[int, dict[str, object]]:
        raw = "1"
        for part in query.split("&"):
            name, _, value = part.partition("=")
            if name == "seconds" and value:
                raw = value
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds <= MAX_SLEEP_SECONDS:
            return 400, {"error": f"seconds must be between 0 and {MAX_SLEEP_SECONDS:g}"}
        # Written before the wait, so that a test knows when the request is in flight.
        log(f"sleeping {seconds:g}s")
        time.sleep(seconds)
        return 200, {"version": self.app["version"], "slept": seconds}

    def _send(
        self,
        request_line: str,
        method: str,
        status: int,
        body: dict[str, object],
        *,
        path: str = "",
        close: bool = False,
    ) -> None:
        data = (to_json(body) + "\n").encode()
        headers = [
            f"HTTP/1.1 {status} {REASONS.get(status, '')}",
            f"Server: {SERVER}",
            f"Date: {http_date(time.time())}",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
        ]
        if close or self.in_flight.stopping:
            # The client must not send its next request down a connection about to close.
            headers.append("Connection: close")
        head = ("\r\n".join(headers) + "\r\n\r\n").encode("iso-8859-1")
        # One write: headers and body in separate segments would wait on a delayed ACK.
        self.sock.sendall(head if method == "HEAD" else head + data)
        # Probes and load balancers ask every second or more; their answers would bury the
        # log a user reads (and cost the kubelet a line each). A failing one is logged.
        if path.partition("?")[0] in HEALTH_PATHS and 200 <= status < 300:
            return
        log(f'{self.client} "{request_line}" {status} -')


def _listener(host: str, port: int) -> _socket.socket:
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _accept(app: dict[str, object], listener: _socket.socket) -> None:
    try:
        fd, address = listener._accept()
    except (BlockingIOError, InterruptedError):
        return  # another wake-up took it, or the client gave up
    conn = _socket.socket(listener.family, _socket.SOCK_STREAM, 0, fd)
    conn.setblocking(True)
    conn.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
    _thread.start_new_thread(Connection(app, conn, str(address[0])).serve, ())


def _serve(app: dict[str, object], startup_seconds: float) -> int:
    host = os.environ.get("LOCALCLUSTER_POD_IP") or "127.0.0.1"
    port = int(os.environ.get("PORT") or 8080)
    if startup_seconds > 0:
        print(f"starting up, listening in {startup_seconds:g}s", flush=True)
        time.sleep(startup_seconds)
    in_flight = InFlight()
    app["in_flight"] = in_flight
    listener = _listener(host, port)
    # Connections are accepted on this thread, between signals: a signal handler that raised
    # could drop one just accepted. The handler only records the signal; the wakeup socket
    # ends the poll() that an idle app sits in, with no timeout and no polling.
    wake, wakeup = _socket.socketpair()
    wakeup.setblocking(False)
    _signal.set_wakeup_fd(wakeup.fileno(), warn_on_full_buffer=False)
    received: list[int] = []

    def _stop(signum: int, frame: object) -> None:
        received.append(signum)

    _signal.signal(_signal.SIGTERM, _stop)
    _signal.signal(_signal.SIGINT, _stop)
    print(
        f"demo app version {app['version']} listening on http://{host}:{port}/ "
        f"healthy={app['healthy']}",
        flush=True,
    )
    poller = select.poll()
    poller.register(listener.fileno(), select.POLLIN)
    poller.register(wake.fileno(), select.POLLIN)
    while not received:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                _accept(app, listener)
            else:
                wake.recv(64)
    in_flight.stopping = True
    listener.close()  # new connections are refused from here on
    # Printed once the listener is closed: whoever reads it may count on refused connections.
    print(
        f"received signal {received[0]}, shutting down; requests in flight: {in_flight.count}",
        flush=True,
    )
    left = in_flight.wait_idle(DRAIN_SECONDS)
    if left:
        print(f"{left} requests still in flight after {DRAIN_SECONDS:g}s, exiting", flush=True)
    else:
        in_flight.wait_closed(KEEPALIVE_DRAIN_SECONDS)
    return 0


def migrate(kind: str, version: str) -> int:
    """The image's ``migrate`` command: print a few lines and exit, as a migration would.

    ``DEMO_MIGRATE_SLEEP`` seconds pass first (a slow migration), then
    ``DEMO_MIGRATE_FAIL=1`` makes it fail with status 1 instead of succeeding.
    """
    env = os.environ
    print(f"demo/{kind} version {version}: migrate starting", flush=True)
    preview = env.get("GREENLIGHT_PREVIEW_URL")
    if preview:
        print(f"preview at {preview}", flush=True)
    pause = float(env.get("DEMO_MIGRATE_SLEEP") or 0)
    if pause > 0:
        print(f"migrating for {pause:g}s", flush=True)
        time.sleep(pause)
    if env.get("DEMO_MIGRATE_FAIL", "").strip().lower() in ("1", "true", "yes"):
        print("applying migration 0002_add_column", flush=True)
        print("error: migration 0002_add_column failed", file=sys.stderr, flush=True)
        return 1
    for step in ("0001_initial", "0002_add_column"):
        print(f"applying migration {step}: ok", flush=True)
    print("migrate done", flush=True)
    return 0


def main(argv: list[str]) -> int:
    """Run the demo image named by ``argv[0]``; return the process exit code.

    ``migrate`` as the next argument (a container's ``args: ["migrate"]``) runs the
    image's migrate command instead of the app.
    """
    kind = argv[0] if argv else "hello"
    if argv[1:2] == ["migrate"]:
        return migrate(kind, os.environ.get("APP_VERSION") or "latest")
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
    app: dict[str, object] = {
        "version": version,
        "message": message,
        "healthy": healthy,
        "fails_requests": kind == "bad-release",
    }
    return _serve(app, startup)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
