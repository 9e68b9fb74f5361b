"""HAProxy's stats CSV export, canned: the header HAProxy 2.6 writes and backend rows.

A :class:`StatsServer` answers ``/stats;csv`` on a loopback port with whatever its
``backends`` hold when asked, so a test moves the counters between two readings.
"""

from __future__ import annotations

import csv
import http.client
import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# The columns of `show stat` in HAProxy 2.6, in order.
HEADER_LINE = (
    "pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,"
    "hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,"
    "cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,"
    "rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,"
    "check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,"
    "conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,"
    "srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,"
    "safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,"
    "agg_server_check_status,agg_check_status,-"
)
HEADER = HEADER_LINE.split(",")


@dataclass
class Row:
    """One backend's counters on one HAProxy."""

    ok: int = 0
    errors: int = 0
    rtime: int = 0
    ttime: int = 0


def stats_csv(backends: dict[str, Row]) -> str:
    """A ``show stat`` CSV export: the frontends, and each backend with a server and its total."""
    out = io.StringIO()
    out.write("# ")
    writer = csv.DictWriter(out, fieldnames=HEADER, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerow({"pxname": "http", "svname": "FRONTEND", "hrsp_2xx": 999, "status": "OPEN"})
    for name, row in backends.items():
        counters = {
            "hrsp_2xx": row.ok,
            "hrsp_5xx": row.errors,
            "hrsp_1xx": 0,
            "hrsp_3xx": 0,
            "hrsp_4xx": 0,
            "hrsp_other": 0,
            "req_tot": row.ok + row.errors,
            "rtime": row.rtime,
            "ttime": row.ttime,
        }
        writer.writerow({"pxname": name, "svname": "pod-1", "status": "UP", **counters})
        writer.writerow({"pxname": name, "svname": "BACKEND", "status": "UP", **counters})
    return out.getvalue()


@dataclass
class StatsServer:
    """A stats page on a loopback port serving :func:`stats_csv` of ``backends``."""

    backends: dict[str, Row] = field(default_factory=dict)
    address: str = ""
    requests: int = 0


@contextmanager
def stats_server() -> Iterator[StatsServer]:
    """Serve a StatsServer until the block ends."""
    state = StatsServer()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            if not self.path.startswith("/stats;csv"):
                self.send_error(404)
                return
            body = stats_csv(state.backends).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.address = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class PrometheusStub:
    """A Prometheus query API on a loopback port answering ``answer`` to every query."""

    answer: dict[str, Any] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    address: str = ""


@contextmanager
def prometheus_server() -> Iterator[PrometheusStub]:
    """Serve a PrometheusStub until the block ends."""
    state = PrometheusStub()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            state.queries.append(self.rfile.read(length).decode())
            body = json.dumps(state.answer).encode()
            self.send_response(200 if state.answer.get("status") == "success" else 400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.address = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class VersionedLoad:
    """GET ``path`` with ``Host: host`` through HAProxy from keep-alive and new-connection clients.

    Every answer is recorded by the version that gave it. A failure is a connection error
    or any answer but a 200, except a 500 from version ``bad`` (the bad release's own
    answer, which the version it replaces would not have given). Bounded: ``clients``
    threads for at most ``limit`` seconds.
    """

    port: int
    host: str
    bad: str
    path: str = "/"
    clients: int = 4
    limit: float = 120.0
    pause: float = 0.01
    answers: dict[tuple[int, str], int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> VersionedLoad:
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
            thread.join(timeout=15)

    @property
    def requests(self) -> int:
        """Every request answered or failed so far."""
        with self._lock:
            return sum(self.answers.values()) + len(self.failures)

    def count(self, status: int, version: str) -> int:
        """How many answers ``version`` gave with ``status``."""
        with self._lock:
            return self.answers.get((status, version), 0)

    def _record(self, status: int, version: str, failure: str | None) -> None:
        with self._lock:
            if failure is not None:
                self.failures.append(failure)
            else:
                key = (status, version)
                self.answers[key] = self.answers.get(key, 0) + 1

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
                raw = response.read()
                try:
                    version = str(json.loads(raw or b"{}").get("version", "?"))
                except (ValueError, AttributeError):
                    version = "?"
                expected = response.status == 200 or (
                    response.status == 500 and version == self.bad
                )
                failure = (
                    None if expected else f"HTTP {response.status} from {version}: {raw[:80]!r}"
                )
                self._record(response.status, version, failure)
                if not keepalive or response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as exc:
                self._record(0, "", f"{type(exc).__name__}: {exc}")
                connection.close()
                connection = None
            time.sleep(self.pause)  # a bounded load, not a flood
        if connection is not None:
            connection.close()
