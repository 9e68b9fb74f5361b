"""HAProxy's stats CSV export, canned: the header HAProxy 2.6 writes and backend rows.

A :class:`StatsServer` answers ``/stats;csv`` on a loopback port with whatever its
``backends`` hold when asked, so a test moves the counters between two readings.
"""

from __future__ import annotations

import csv
import http.server
import io
import json
import threading
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
