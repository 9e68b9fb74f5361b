"""The real-server fixtures start, answer and stop."""

from __future__ import annotations

import socket
import urllib.request

from tests.servers import Server


def test_it_starts_a_redis_that_answers_ping(redis: Server) -> None:
    with socket.create_connection(("127.0.0.1", redis.port), timeout=2) as conn:
        conn.sendall(b"PING\r\n")
        assert conn.recv(16) == b"+PONG\r\n"


def test_it_starts_an_etcd_that_reports_health(etcd: Server) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{etcd.port}/health", timeout=5) as response:
        assert b'"health":"true"' in response.read()


def test_it_starts_an_haproxy_that_answers_503_without_routes(haproxy: Server) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{haproxy.port}/", headers={"Host": "x.localhost"}
    )
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as error:
        assert error.code == 503
        assert b"No application is deployed" in error.read()
    else:
        raise AssertionError("expected a 503 from an empty route table")
