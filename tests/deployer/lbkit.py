"""What proxysync tests run against a real HAProxy: pod stand-ins, a client load, master state."""

from __future__ import annotations

import collections
import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from deployer.haproxycli import HAProxyTarget, master_command
from deployer.proxysync import ProxySync
from tests.servers import Server


def target(haproxy: Server, **options: float) -> HAProxyTarget:
    """Where proxysync finds the test's HAProxy."""
    return HAProxyTarget(
        config=haproxy.extra["config"],  # type: ignore[arg-type]
        master_socket=haproxy.extra["master_socket"],  # type: ignore[arg-type]
        lb_port=haproxy.port,
        stats_port=int(haproxy.extra["stats_port"]),  # type: ignore[arg-type]
        **options,  # type: ignore[arg-type]
    )


@contextlib.contextmanager
def running(sync: ProxySync) -> Iterator[ProxySync]:
    """``sync.run()`` in a thread until the block ends."""
    thread = threading.Thread(target=sync.run, daemon=True)
    thread.start()
    try:
        yield sync
    finally:
        sync.stop()
        thread.join(10)
        assert not thread.is_alive()


def master_state(haproxy: Server) -> tuple[int, list[str]]:
    """The master's reload count and the pids of its current workers (``show proc``)."""
    socket_path: Path = haproxy.extra["master_socket"]  # type: ignore[assignment]
    answer = master_command(socket_path, "show proc", retry_for=2.0)
    reloads, workers, section = -1, [], ""
    for line in answer.splitlines():
        if line.startswith("#"):
            section = line.strip()
            continue
        fields = line.split()
        if len(fields) > 2 and fields[1] == "master":
            reloads = int(fields[2])
        elif section == "# workers" and fields:
            workers.append(fields[0])
    return reloads, workers


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether ``check()`` holds within ``timeout`` (HAProxy offers nothing to watch)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def server_stats(haproxy: Server, backend: str) -> dict[str, dict[str, str]]:
    """Server name -> its ``show stat`` fields, in ``backend`` of the current worker."""
    socket_path: Path = haproxy.extra["master_socket"]  # type: ignore[assignment]
    answer = master_command(socket_path, f"@1 show stat {backend} 4 -1", retry_for=2.0)
    lines = [line for line in answer.splitlines() if line.strip()]
    if not lines or not lines[0].startswith("# "):
        return {}
    header = lines[0][2:].split(",")
    rows = [dict(zip(header, line.split(","), strict=False)) for line in lines[1:]]
    return {row["svname"]: row for row in rows}


def server_names(haproxy: Server, backend: str) -> dict[str, str]:
    """Server name -> status (UP, DRAIN, MAINT...) of ``backend`` in the current worker."""
    return {name: row["status"] for name, row in server_stats(haproxy, backend).items()}


class _PodHandler(BaseHTTPRequestHandler):
    # Keep-alive, as most applications: HAProxy keeps idle connections to it.
    protocol_version = "HTTP/1.1"
    server: Pod

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        url = urlsplit(self.path)
        counted = url.path != "/health"
        if counted:
            self.server.started_request()
        try:
            delay = float(parse_qs(url.query).get("delay", ["0"])[0])
            if delay:
                time.sleep(delay)
            body = self.server.name.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        finally:
            if counted:
                self.server.finished_request()

    def log_message(self, *args: object) -> None:
        pass


class Pod(ThreadingHTTPServer):
    """A pod stand-in on 127.0.0.1 answering its name; ``?delay=<s>`` answers late."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, name: str) -> None:
        super().__init__(("127.0.0.1", 0), _PodHandler)
        self.name = name
        self.hits = 0  # requests other than health checks
        self.active = 0
        self._lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.server_address[1])

    def server_entry(self) -> dict[str, object]:
        """Its entry in a backend record."""
        return {"name": self.name, "address": "127.0.0.1", "port": self.port}

    def started_request(self) -> None:
        """Count a request in."""
        with self._lock:
            self.hits += 1
            self.active += 1

    def finished_request(self) -> None:
        """Count a request out."""
        with self._lock:
            self.active -= 1

    def stop(self) -> None:
        """Stop listening, as a deleted pod does."""
        self.shutdown()
        self.server_close()


class Closer:
    """A server that accepts connections and closes them without answering."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = int(self.sock.getsockname()[1])
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            with conn, contextlib.suppress(OSError):
                conn.settimeout(1)
                conn.recv(65536)

    def stop(self) -> None:
        """Stop listening."""
        self.sock.close()


def get(port: int, host: str, path: str = "/") -> tuple[int, str]:
    """GET through HAProxy on a new connection: status and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Host": host, "Connection": "close"})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


class Load:
    """Client threads sending GETs through HAProxy until stopped, bounded in count and time.

    Half of the threads keep their connection alive, half open one per request; one
    request in ``slow_every`` takes ``slow_delay`` seconds at the pod, so that servers
    have requests in flight when they leave.
    """

    def __init__(
        self,
        port: int,
        host: str,
        *,
        threads: int = 4,
        max_seconds: float = 30.0,
        max_requests: int = 20000,
        slow_every: int = 10,
        slow_delay: float = 0.05,
    ) -> None:
        self.port = port
        self.host = host
        self.max_requests = max_requests
        self.slow_every = slow_every
        self.slow_delay = slow_delay
        self.deadline = time.monotonic() + max_seconds
        self.answers: collections.Counter[str] = collections.Counter()
        self.failures: list[str] = []
        self._count = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(n % 2 == 0,), daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def requests(self) -> int:
        """Requests answered or failed so far."""
        with self._lock:
            return self._count

    def _take(self) -> int | None:
        with self._lock:
            if self._count >= self.max_requests or time.monotonic() >= self.deadline:
                return None
            self._count += 1
            return self._count

    def _client(self, keep_alive: bool) -> None:
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            number = self._take()
            if number is None:
                break
            path = f"/?delay={self.slow_delay}" if number % self.slow_every == 0 else "/"
            headers = {"Host": self.host}
            if not keep_alive:
                headers["Connection"] = "close"
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                connection.request("GET", path, headers=headers)
                response = connection.getresponse()
                body = response.read().decode(errors="replace")
                if response.status == 200:
                    with self._lock:
                        self.answers[body] += 1
                else:
                    self.failures.append(f"{response.status} {body[:80]}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                connection = None
            if not keep_alive and connection is not None:
                connection.close()
                connection = None
            time.sleep(0.002)  # a steady, modest rate
        if connection is not None:
            connection.close()

    def wait_for(self, requests: int, timeout: float = 10.0) -> None:
        """Block until ``requests`` more requests were sent (the load is flowing)."""
        goal = self.requests + requests
        deadline = time.monotonic() + timeout
        while self.requests < goal:  # nothing to watch: the clients count
            assert time.monotonic() < deadline, "the load did not flow"
            time.sleep(0.01)

    def finish(self) -> None:
        """Wait until the clients reach their bounds (count or time)."""
        for thread in self._threads:
            thread.join(max(0.0, self.deadline - time.monotonic()) + 15)

    def stop(self) -> None:
        """Stop the clients and wait for their last requests."""
        self._stop.set()
        self.finish()
