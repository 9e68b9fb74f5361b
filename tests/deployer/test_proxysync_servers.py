"""A live backend's servers change through HAProxy's runtime API, and no request fails.

Real etcd, a real master-worker HAProxy, proxysync in a thread, pod stand-ins on 127.0.0.1.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer import haproxycli
from deployer.etcdstore import EtcdStore, Snapshot
from deployer.haproxycli import HAProxyTarget, master_command
from deployer.lbconfig import render_config
from deployer.lbrender import Render, render, server_changes
from deployer.proxysync import ProxySync
from tests.deployer.lbkit import (
    Closer,
    Load,
    Pod,
    eventually,
    get,
    master_state,
    running,
    server_names,
    server_stats,
    target,
)
from tests.servers import Server, free_port

HOST = "hello.localhost"
BACKEND = "default.hello-v1"


@pytest.fixture
def store(etcd: Server) -> Iterator[EtcdStore]:
    """An EtcdStore on a prefix of its own."""
    with EtcdStore(str(etcd.extra["endpoint"]), f"/test-{uuid.uuid4().hex[:8]}") as store:
        yield store


@pytest.fixture
def proxysync(store: EtcdStore, haproxy: Server) -> Iterator[ProxySync]:
    """proxysync running in a thread until the test ends."""
    with running(ProxySync(store, target(haproxy))) as sync:
        yield sync


@pytest.fixture
def pods() -> Iterator[Callable[[str], Pod]]:
    """Start pod stand-ins by name; all are stopped when the test ends."""
    started: list[Pod] = []

    def start(name: str) -> Pod:
        pod = Pod(name)
        started.append(pod)
        return pod

    yield start
    for pod in started:
        pod.stop()


def _record(*pods: Pod, **options: Any) -> dict[str, Any]:
    return {"servers": [pod.server_entry() for pod in pods], "check_path": "/health", **options}


def _route(store: EtcdStore, *pods: Pod) -> None:
    """hello.localhost routed to a backend of ``pods``, applied."""
    record = _record(*pods)
    servers = record.pop("servers")
    assert store.wait_applied(store.put_route(HOST, BACKEND, servers, backend_options=record), 20)


def _applied(store: EtcdStore) -> dict[str, Any]:
    return store.get(store.applied_key_of("lb-0"))[0] or {}


def _drained(store: EtcdStore) -> dict[str, Any]:
    return store.get(store.drained_key_of("lb-0"))[0] or {}


class _Slow:
    """A slow GET through HAProxy in a thread, with its outcome."""

    def __init__(self, port: int, delay: float) -> None:
        self.outcome: tuple[int, str] | Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(port, delay), daemon=True)
        self.thread.start()

    def _run(self, port: int, delay: float) -> None:
        try:
            self.outcome = get(port, HOST, f"/?delay={delay}")
        except Exception as exc:  # reported by the test
            self.outcome = exc

    def result(self) -> tuple[int, str] | Exception | None:
        self.thread.join(15)
        return self.outcome


def _slow_request_on(haproxy: Server, pods: list[Pod], delay: float) -> tuple[_Slow, Pod]:
    """Start a slow request and tell which pod carries it."""
    slow = _Slow(haproxy.port, delay)
    deadline = time.monotonic() + 5
    while True:  # nothing to watch: the pods count their requests
        busy = [pod for pod in pods if pod.active]
        if busy:
            return slow, busy[0]
        assert time.monotonic() < deadline, "the slow request reached no pod"
        time.sleep(0.005)


def test_it_drains_a_removed_server_without_a_reload_and_lets_its_request_finish(
    store: EtcdStore,
    haproxy: Server,
    proxysync: ProxySync,
    pods: Callable[[str], Pod],
) -> None:
    first, second = pods("pod-0"), pods("pod-1")
    _route(store, first, second)
    before = master_state(haproxy)
    slow, busy = _slow_request_on(haproxy, [first, second], delay=1.0)
    staying = second if busy is first else first

    removed_at = time.monotonic()
    revision = store.put_backend(BACKEND, _record(staying))
    assert store.wait_applied(revision, 20)

    applied = _applied(store)
    assert applied["reloaded"] is False
    assert applied["left_rotation"] == {BACKEND: {busy.name: 1}}
    assert master_state(haproxy) == before  # same worker: no reload
    assert server_names(haproxy, BACKEND)[busy.name] == "DRAIN"
    answers = {get(haproxy.port, HOST)[1] for _ in range(6)}
    assert answers == {staying.name}  # no new request for the leaving server
    assert busy.active == 1

    assert store.wait_drained(revision, 20)
    assert slow.result() == (200, busy.name)  # finished before drained was written
    assert time.monotonic() - removed_at >= 0.9
    drained = _drained(store)
    assert drained["revision"] >= revision
    figures = drained["servers"][f"{BACKEND}/{busy.name}"]
    assert figures["sessions"] == 1 and figures["seconds"] >= 0.5
    assert "timed_out" not in drained
    # Deleted from the worker (asynchronously, once it had no session).
    assert eventually(lambda: busy.name not in server_names(haproxy, BACKEND))
    assert master_state(haproxy) == before
    config: Path = haproxy.extra["config"]  # type: ignore[assignment]
    assert busy.name not in config.read_text()  # a reload would render the same


def test_it_acknowledges_an_idle_server_leaving_within_milliseconds(
    store: EtcdStore,
    haproxy: Server,
    proxysync: ProxySync,
    pods: Callable[[str], Pod],
) -> None:
    first, second = pods("pod-0"), pods("pod-1")
    _route(store, first, second)

    started = time.monotonic()
    revision = store.put_backend(BACKEND, _record(first))
    assert store.wait_applied(revision, 20)
    applied_after = time.monotonic() - started
    assert store.wait_drained(revision, 20)
    drained_after = time.monotonic() - started

    assert _applied(store)["left_rotation"] == {BACKEND: {"pod-1": 0}}
    figures = _drained(store)["servers"]
    assert list(figures) == [f"{BACKEND}/pod-1"] and figures[f"{BACKEND}/pod-1"]["sessions"] == 0
    # Tens of milliseconds on an idle machine; the bound leaves room for a busy one.
    assert applied_after < 0.5, applied_after
    assert drained_after < 0.5, drained_after


def test_it_keeps_naming_a_server_that_left_after_a_later_revision_is_applied(
    store: EtcdStore,
    haproxy: Server,
    proxysync: ProxySync,
    pods: Callable[[str], Pod],
) -> None:
    first, second = pods("pod-0"), pods("pod-1")
    _route(store, first, second)
    revision = store.put_backend(BACKEND, _record(first))
    assert store.wait_applied(revision, 20) and store.wait_drained(revision, 20)

    # Any write under the prefix is a revision to acknowledge, even one HAProxy ignores.
    later = store.put_backend(BACKEND, {**_record(first), "leaving": ["pod-1"]})
    assert store.wait_applied(later, 20) and store.wait_drained(later, 20)

    assert _applied(store)["revision"] >= later
    assert _applied(store)["left_rotation"] == {BACKEND: {"pod-1": 0}}
    assert f"{BACKEND}/pod-1" in _drained(store)["servers"]


def test_it_adds_a_server_without_a_reload_and_sends_it_requests(
    store: EtcdStore,
    haproxy: Server,
    proxysync: ProxySync,
    pods: Callable[[str], Pod],
) -> None:
    first, second = pods("pod-0"), pods("pod-1")
    _route(store, first)
    before = master_state(haproxy)

    revision = store.put_backend(BACKEND, _record(first, second))
    assert store.wait_applied(revision, 20)

    applied = _applied(store)
    assert applied["reloaded"] is False and "left_rotation" not in applied
    assert master_state(haproxy) == before
    assert server_names(haproxy, BACKEND)[second.name].startswith("UP")
    answers = [get(haproxy.port, HOST)[1] for _ in range(6)]
    assert answers.count(second.name) == 3  # round robin, at once
    config: Path = haproxy.extra["config"]  # type: ignore[assignment]
    assert f"server pod-1 127.0.0.1:{second.port} check" in config.read_text()


def test_it_puts_a_server_that_is_still_draining_back_into_rotation(
    store: EtcdStore,
    haproxy: Server,
    proxysync: ProxySync,
    pods: Callable[[str], Pod],
) -> None:
    first, second = pods("pod-0"), pods("pod-1")
    _route(store, first, second)
    before = master_state(haproxy)
    slow, busy = _slow_request_on(haproxy, [first, second], delay=1.0)
    staying = second if busy is first else first
    assert store.wait_applied(store.put_backend(BACKEND, _record(staying)), 20)

    # A pod that stays after all (an eviction was refused): its server is still draining.
    revision = store.put_backend(BACKEND, _record(first, second))
    assert store.wait_applied(revision, 20)

    assert master_state(haproxy) == before
    assert server_names(haproxy, BACKEND)[busy.name].startswith("UP")
    assert {get(haproxy.port, HOST)[1] for _ in range(6)} == {first.name, second.name}
    assert store.wait_drained(revision, 20)
    assert slow.result() == (200, busy.name)
    assert busy.name in server_names(haproxy, BACKEND)  # not deleted by the earlier drain


def test_it_reports_a_server_whose_requests_outlast_the_drain_timeout(
    store: EtcdStore,
    haproxy: Server,
    pods: Callable[[str], Pod],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = pods("pod-0"), pods("pod-1")
    with running(ProxySync(store, target(haproxy), drain_timeout=0.3)):
        _route(store, first, second)
        slow, busy = _slow_request_on(haproxy, [first, second], delay=1.5)
        staying = second if busy is first else first

        with caplog.at_level(logging.WARNING, logger="deployer.serverdrain"):
            revision = store.put_backend(BACKEND, _record(staying))
            assert store.wait_drained(revision, 20)

        drained = _drained(store)
        assert drained["timed_out"] == [f"{BACKEND}/{busy.name}"]
        assert busy.active == 1  # still running: the timeout cut nothing off
        assert f"{BACKEND}/{busy.name} still had requests" in caplog.text
        assert slow.result() == (200, busy.name)


def test_it_reloads_when_a_server_change_comes_with_other_changes(
    store: EtcdStore,
    haproxy: Server,
    proxysync: ProxySync,
    pods: Callable[[str], Pod],
) -> None:
    first, second = pods("pod-0"), pods("pod-1")
    _route(store, first, second)
    reloads, _ = master_state(haproxy)

    revision = store.put_backend(BACKEND, _record(first, timeout_server=5))
    assert store.wait_applied(revision, 20)

    applied = _applied(store)
    assert applied["reloaded"] is True
    assert applied["left_rotation"] == {BACKEND: {second.name: 0}}
    assert master_state(haproxy)[0] == reloads + 1
    assert store.wait_drained(revision, 20)
    assert f"{BACKEND}/{second.name}" in _drained(store)["servers"]
    assert {get(haproxy.port, HOST)[1] for _ in range(4)} == {first.name}


def test_it_reloads_when_the_runtime_api_refuses_a_server(
    store: EtcdStore,
    haproxy: Server,
    proxysync: ProxySync,
    pods: Callable[[str], Pod],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = pods("pod-0"), pods("pod-1")
    _route(store, first)
    reloads, _ = master_state(haproxy)

    def refusing(socket_path: Path, command: str, timeout: float = 5.0, **kwargs: float) -> str:
        if "add server" in command:
            return "Already exists a server with the same name in backend.\n\n"
        return master_command(socket_path, command, timeout, **kwargs)

    monkeypatch.setattr(haproxycli, "master_command", refusing)
    with caplog.at_level(logging.WARNING, logger="deployer.proxysync"):
        revision = store.put_backend(BACKEND, _record(first, second))
        assert store.wait_applied(revision, 20)

    assert _applied(store)["reloaded"] is True
    assert master_state(haproxy)[0] == reloads + 1
    assert "runtime update failed, reloading instead" in caplog.text
    assert {get(haproxy.port, HOST)[1] for _ in range(4)} == {first.name, second.name}


def test_it_retries_get_requests_that_a_dead_or_silent_server_failed(
    store: EtcdStore,
    haproxy: Server,
    proxysync: ProxySync,
    pods: Callable[[str], Pod],
) -> None:
    healthy = pods("pod-0")
    closer = Closer()
    try:
        servers = [
            healthy.server_entry(),
            {"name": "pod-gone", "address": "127.0.0.1", "port": free_port()},  # refuses
            {"name": "pod-mute", "address": "127.0.0.1", "port": closer.port},
        ]
        assert store.wait_applied(store.put_route(HOST, BACKEND, servers), 20)

        # At once, before a health check could take the two bad servers out.
        load = Load(haproxy.port, HOST, threads=4, max_requests=200, slow_every=1000)
        load.finish()

        assert load.failures == []
        assert load.answers == {healthy.name: 200}
        assert closer.accepted > 0  # the silent server was tried, and its requests retried
        # The refused connection itself took the dead server out (observe layer4), not
        # two failed checks.
        stats = server_stats(haproxy, BACKEND)
        assert int(stats["pod-gone"]["hanafail"]) >= 1, stats["pod-gone"]
    finally:
        closer.stop()


def test_no_request_fails_while_servers_are_added_and_removed_under_load(
    store: EtcdStore,
    haproxy: Server,
    proxysync: ProxySync,
    pods: Callable[[str], Pod],
) -> None:
    pod0, pod1 = pods("pod-0"), pods("pod-1")
    _route(store, pod0, pod1)
    before = master_state(haproxy)
    load = Load(haproxy.port, HOST, threads=4, max_seconds=30)
    try:
        load.wait_for(50)
        pod2 = pods("pod-2")
        assert store.wait_applied(store.put_backend(BACKEND, _record(pod0, pod1, pod2)), 20)
        load.wait_for(50)
        # Scale down as the deployer does: out of rotation, drained, then the pod goes.
        revision = store.put_backend(BACKEND, _record(pod1, pod2))
        assert store.wait_applied(revision, 20) and store.wait_drained(revision, 20)
        pod0.stop()
        load.wait_for(50)
        pod3 = pods("pod-3")
        revision = store.put_backend(BACKEND, _record(pod2, pod3))  # one in, one out
        assert store.wait_applied(revision, 20) and store.wait_drained(revision, 20)
        pod1.stop()
        load.wait_for(100)
    finally:
        load.stop()

    assert load.failures == []
    assert load.requests >= 250
    assert load.answers[pod2.name] > 0 and load.answers[pod3.name] > 0
    assert master_state(haproxy) == before  # every change went through the runtime API
    assert eventually(lambda: set(server_names(haproxy, BACKEND)) == {"pod-2", "pod-3"})


def _render(backends: dict[str, dict[str, Any]]) -> Render:
    where = HAProxyTarget(
        config=Path("/srv/haproxy/haproxy.cfg"),
        master_socket=Path("/srv/haproxy/master.sock"),
        lb_port=8080,
        stats_port=8081,
    )
    return render(Snapshot(revision=1, backends=backends), where)


def _server(name: str, port: int = 8000) -> dict[str, Any]:
    return {"name": name, "address": "127.0.0.2", "port": port}


def test_it_changes_only_servers_through_the_runtime_api() -> None:
    running_render = _render({BACKEND: {"servers": [_server("a"), _server("b")]}})
    render = _render({BACKEND: {"servers": [_server("b"), _server("c")]}})

    changes = server_changes(running_render, render)

    assert changes is not None
    assert [(backend, spec.name) for backend, spec in changes.added] == [(BACKEND, "c")]
    assert [(backend, spec.name) for backend, spec in changes.removed] == [(BACKEND, "a")]
    assert changes.added[0][1].add_command(BACKEND) == (
        f"add server {BACKEND}/c 127.0.0.2:8000 check inter 1s fall 2 rise 1 "
        "observe layer4 error-limit 1 on-error mark-down pool-purge-delay 5s pool-max-conn -1"
    )


@pytest.mark.parametrize(
    "after",
    [
        {BACKEND: {"servers": [_server("a")], "timeout_server": 5}},  # other options
        {BACKEND: {"servers": [_server("a", 8001)]}},  # a server moved
        {BACKEND: {"servers": [_server("a")]}, "default.other-v1": {"servers": []}},
        {BACKEND: {"servers": [_server("a"), _server("b", 99999)]}},  # HAProxy refuses
    ],
    ids=["options", "address", "new-backend", "bad-port"],
)
def test_it_reloads_for_anything_but_added_and_removed_servers(
    after: dict[str, dict[str, Any]],
) -> None:
    before = _render({BACKEND: {"servers": [_server("a")]}})

    assert server_changes(before, _render(after)) is None


def test_it_renders_retries_for_failures_nobody_announced() -> None:
    config = render_config(lb_port=8080, stats_port=8081, backends={})

    assert "    retry-on conn-failure empty-response response-timeout\n" in config
    assert "    option redispatch 1\n" in config
    assert "    retries 6\n" in config
    assert "disable-l7-retry unless METH_GET || METH_HEAD || METH_OPTIONS" in config
    assert "default-server" not in config  # dynamic servers would not get its settings
