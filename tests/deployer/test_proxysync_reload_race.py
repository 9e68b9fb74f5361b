"""Runtime map changes right after a reload reach every worker that accepts connections."""

from __future__ import annotations

import http.client
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.etcdstore import EtcdStore
from deployer.haproxycli import (
    RuntimeAPIError,
    master_command,
    run_commands,
    served_revision,
    show_map,
)
from deployer.lbconfig import render_config
from deployer.proxysync import ProxySync
from tests.deployer.lbkit import Pod, eventually, get, running, target
from tests.servers import Server

HOSTS = [f"sw{number}.localhost" for number in range(3)]


@pytest.fixture
def store(etcd: Server) -> Iterator[EtcdStore]:
    """An EtcdStore on a prefix of its own."""
    with EtcdStore(str(etcd.extra["endpoint"]), f"/race-{uuid.uuid4().hex[:8]}") as store:
        yield store


class Clients:
    """One thread per hostname sending GETs on new connections; every non-200 is kept."""

    def __init__(self, port: int, hosts: list[str]) -> None:
        self.port = port
        self.failures: list[str] = []
        self.answered = 0
        self._hosts = list(hosts)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        for host in hosts:
            self.follow(host)

    def follow(self, host: str) -> None:
        """Request ``host`` continuously too."""
        thread = threading.Thread(target=self._client, args=(host,), daemon=True)
        self._threads.append(thread)
        thread.start()

    def _client(self, host: str) -> None:
        while not self._stop.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                connection.request("GET", "/", headers={"Host": host, "Connection": "close"})
                response = connection.getresponse()
                body = response.read().decode(errors="replace")
                with self._lock:
                    self.answered += 1
                    if response.status != 200:
                        self.failures.append(f"{host}: {response.status} {body[:60]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(f"{host}: {exc!r}")
            finally:
                connection.close()
            time.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def test_switches_and_new_hostnames_right_after_reloads_are_served_by_every_worker(
    store: EtcdStore, haproxy: Server
) -> None:
    blue, green = Pod("blue"), Pod("green")
    pods = {"v1": blue, "v2": green}
    clients: Clients | None = None
    try:
        with running(ProxySync(store, target(haproxy))):
            revision = 0
            for host in HOSTS:
                app = host.split(".")[0]
                store.put_backend(f"default.{app}-v2", {"servers": [green.server_entry()]})
                revision = store.put_route(host, f"default.{app}-v1", [blue.server_entry()])
            assert store.wait_applied(revision, 20)
            current = dict.fromkeys(HOSTS, "v1")
            clients = Clients(haproxy.port, HOSTS)
            time.sleep(0.3)

            mismatches: list[str] = []
            for round_ in range(12):
                # A new backend needs a reload ...
                store.put_backend(f"default.extra{round_}-v1", {"servers": [blue.server_entry()]})
                # ... and, a few milliseconds later, existing hostnames switch and a new
                # hostname points at an existing backend: runtime updates.
                time.sleep(0.01 * (round_ % 4))
                revision = 0
                for host in HOSTS:
                    app = host.split(".")[0]
                    current[host] = "v2" if current[host] == "v1" else "v1"
                    revision = store.point_frontend(host, f"default.{app}-{current[host]}")
                added = f"new{round_}.localhost"
                revision = store.point_frontend(added, f"default.{HOSTS[0].split('.')[0]}-v2")
                waited = store.wait_applied(revision, 20)
                assert waited, waited.problem
                # Acknowledged: every new connection gets the new routes at once.
                for _ in range(5):
                    for host in HOSTS:
                        answer = get(haproxy.port, host)
                        if answer != (200, pods[current[host]].name):
                            mismatches.append(f"round {round_} {host}: {answer}")
                    answer = get(haproxy.port, added)
                    if answer != (200, "green"):
                        mismatches.append(f"round {round_} {added}: {answer}")
                clients.follow(added)
                time.sleep(0.15)
            clients.stop()
            assert clients.answered > 100
            assert not mismatches, mismatches[:10]
            assert not clients.failures, clients.failures[:10]
    finally:
        if clients is not None:
            clients.stop()
        blue.stop()
        green.stop()


def _configure(haproxy: Server, revision: int) -> Path:
    """Write a configuration routing through a map file; return the map file."""
    config: Path = haproxy.extra["config"]  # type: ignore[assignment]
    map_file = config.parent / "race.map"
    if not map_file.exists():
        map_file.write_text("")
    config.write_text(
        render_config(
            lb_port=haproxy.port,
            stats_port=int(haproxy.extra["stats_port"]),  # type: ignore[arg-type]
            backends={},
            map_path=str(map_file),
            revision=revision,
        )
    )
    return map_file


def _master_answers(socket_path: Path) -> bool:
    """Whether the master is up and forwards to a worker (not starting after a reload)."""
    try:
        return bool(master_command(socket_path, "@1 show version", retry_for=1.0).strip())
    except OSError:
        return False


def _reload(haproxy: Server, revision: int) -> None:
    socket_path: Path = haproxy.extra["master_socket"]  # type: ignore[assignment]
    assert eventually(lambda: _master_answers(socket_path), 15)
    master_command(socket_path, "reload")
    stats = int(haproxy.extra["stats_port"])  # type: ignore[arg-type]
    assert eventually(lambda: served_revision("127.0.0.1", stats) == revision, 15)


def test_runtime_commands_sent_during_a_reload_run_in_the_new_worker_or_fail(
    haproxy: Server,
) -> None:
    socket_path: Path = haproxy.extra["master_socket"]  # type: ignore[assignment]
    map_file = _configure(haproxy, 1)
    _reload(haproxy, 1)
    for attempt in range(2, 6):
        _configure(haproxy, attempt)
        assert eventually(lambda: _master_answers(socket_path), 15)
        # The master re-executes itself: what reaches it meanwhile may be dropped unanswered.
        master_command(socket_path, "reload")
        host = f"race{attempt}.localhost"
        try:
            run_commands(socket_path, [f"add map {map_file} {host} no_route"])
        except RuntimeAPIError:
            continue  # refused out loud: the caller reloads
        stats = int(haproxy.extra["stats_port"])  # type: ignore[arg-type]
        assert eventually(lambda: served_revision("127.0.0.1", stats) == attempt, 15)  # noqa: B023
        # Confirmed: the worker serving now has it.
        assert host in show_map(socket_path, map_file), f"attempt {attempt}: {host} was lost"
