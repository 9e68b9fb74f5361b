"""A small, bounded HTTP load through HAProxy for tests: keep-alive and new-connection clients."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Load:
    """GET ``path`` with ``Host: host`` from ``clients`` threads until stopped (at most ``limit`` s).

    Half the clients keep their connection alive, half open one per request. Every
    answer other than 2xx, and every connection error, is a failure.
    """

    port: int
    host: str
    path: str = "/health"
    clients: int = 4
    limit: float = 60.0
    pause: float = 0.005
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for index in range(self.clients):
            thread = threading.Thread(target=self._client, args=(index % 2 == 0,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every client (each finishes the request it is in)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def wait_requests(self, count: int, timeout: float = 10.0) -> None:
        """Wait until ``count`` more requests have been answered."""
        target = self.requests + count
        deadline = time.monotonic() + timeout
        while self.requests < target and time.monotonic() < deadline:
            time.sleep(0.01)

    def _record(self, failure: str | None) -> None:
        with self._lock:
            self.requests += 1
            if failure is not None:
                self.failures.append(failure)

    def _client(self, keepalive: bool) -> None:
        deadline = time.monotonic() + self.limit
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            headers = {"Host": self.host}
            if not keepalive:
                headers["Connection"] = "close"
            try:
                connection.request("GET", self.path, headers=headers)
                response = connection.getresponse()
                response.read()
                ok = 200 <= response.status < 300
                self._record(None if ok else f"HTTP {response.status}")
                if not keepalive or response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                self._record(f"{type(exc).__name__}: {exc}")
                connection.close()
                connection = None
            self._stop.wait(self.pause)
        if connection is not None:
            connection.close()
