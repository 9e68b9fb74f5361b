"""A stopping demo app closes kept-alive connections after one more answer, not while idle.

Closing an idle kept-alive connection races the client's next request on it (RFC 9112
section 9.3.1 makes the client retry it); a client that sends within the app's
KEEPALIVE_DRAIN_SECONDS after SIGTERM gets its answer with ``Connection: close`` instead.
"""

from __future__ import annotations

import http.client
import json
import signal
import time

from localcluster.demo_app import KEEPALIVE_DRAIN_SECONDS

from .test_runtime_demo import demo, wait_listening
from .test_runtime_demo_drain import read_until


def test_a_kept_alive_connection_gets_one_more_answer_with_connection_close() -> None:
    with demo("demo/hello:7") as (proc, ip, port):
        wait_listening(ip, port)
        kept = http.client.HTTPConnection(ip, port, timeout=5)
        kept.request("GET", "/health")
        first = kept.getresponse()
        assert first.status == 200 and first.getheader("Connection") is None
        first.read()

        proc.send_signal(signal.SIGTERM)
        read_until(proc, "received signal")
        time.sleep(KEEPALIVE_DRAIN_SECONDS / 4)
        kept.request("GET", "/health")
        last = kept.getresponse()

        assert (last.status, json.loads(last.read())["version"]) == (200, "7")
        assert last.getheader("Connection") == "close"
        assert proc.wait(5) == 0
        kept.close()


def test_an_idle_kept_alive_connection_holds_the_exit_up_only_briefly() -> None:
    with demo("demo/hello:7") as (proc, ip, port):
        wait_listening(ip, port)
        idle = http.client.HTTPConnection(ip, port, timeout=5)
        idle.request("GET", "/health")
        idle.getresponse().read()

        proc.send_signal(signal.SIGTERM)
        read_until(proc, "received signal")
        started = time.monotonic()

        assert proc.wait(5) == 0
        assert time.monotonic() - started < KEEPALIVE_DRAIN_SECONDS + 0.5
        idle.close()
