"""ServerDrains: when a leaving server is done, and what happens to it in HAProxy."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from deployer import serverdrain
from deployer.haproxycli import RuntimeAPIError
from deployer.lbconfig import ServerSpec
from deployer.serverdrain import DELETE_ATTEMPTS, LeavingServer, ServerDrains

BACKEND = "default.hello-v1"


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The runtime API commands ServerDrains sends (all accepted)."""
    commands: list[str] = []
    monkeypatch.setattr(
        serverdrain, "run_commands", lambda socket_path, batch: commands.extend(batch)
    )
    return commands


def _drains(clock: Clock) -> ServerDrains:
    return ServerDrains(Path("/nonexistent/master.sock"), threading.Lock(), clock)


def _leaving(clock: Clock, name: str = "pod-1", revision: int = 10) -> LeavingServer:
    spec = ServerSpec(name, name, "127.0.0.2", 8080, "check")
    return LeavingServer(
        backend=BACKEND,
        spec=spec,
        record=BACKEND,
        revision=revision,
        sessions=2,
        started=clock.now,
        deadline=clock.now + 60,
    )


def test_it_deletes_a_server_once_it_has_no_session(clock: Clock, sent: list[str]) -> None:
    drains = _drains(clock)
    drains.add([_leaving(clock)])
    clock.now += 1

    drains.poll({(BACKEND, "pod-1"): 1}, 0, read_at=clock.now)
    assert drains.pending(10) and sent == []

    clock.now += 0.5
    drains.poll({(BACKEND, "pod-1"): 0}, 0, read_at=clock.now)

    assert not drains.pending(10)
    assert sent == [f"set server {BACKEND}/pod-1 state maint", f"del server {BACKEND}/pod-1"]
    report = drains.report(10)
    assert report.servers == {f"{BACKEND}/pod-1": {"sessions": 2, "seconds": 1.5}}
    assert report.timed_out == [] and not drains.busy()


def test_it_ignores_figures_read_before_the_server_left(clock: Clock, sent: list[str]) -> None:
    drains = _drains(clock)
    read_at = clock.now - 0.01  # the drain thread asked HAProxy just before the drain
    drains.add([_leaving(clock)])

    drains.poll({}, 0, read_at=read_at)

    assert drains.pending(10) and sent == []


def test_it_waits_for_the_old_worker_once_a_reload_took_the_server(
    clock: Clock, sent: list[str]
) -> None:
    drains = _drains(clock)
    drains.add([_leaving(clock)])
    clock.now += 0.1
    old_read = clock.now
    clock.now += 0.1
    drains.hand_to_old_worker()

    drains.poll({}, 0, read_at=old_read)  # "no old worker" was true before the reload
    assert drains.pending(10)
    clock.now += 0.1
    drains.poll({}, 1, read_at=clock.now)
    assert drains.pending(10)
    clock.now += 0.1
    drains.poll({}, 0, read_at=clock.now)

    assert not drains.pending(10)
    assert sent == []  # the new worker never had it: nothing to delete


def test_it_reports_a_server_still_busy_at_its_deadline_as_timed_out(
    clock: Clock, sent: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    drains = _drains(clock)
    drains.add([_leaving(clock)])
    clock.now += 61

    with caplog.at_level(logging.WARNING, logger="deployer.serverdrain"):
        drains.poll({(BACKEND, "pod-1"): 1}, 0, read_at=clock.now)

    assert drains.report(10).timed_out == [f"{BACKEND}/pod-1"]
    assert f"{BACKEND}/pod-1 still had requests after the drain timeout" in caplog.text
    assert f"set server {BACKEND}/pod-1 state maint" in sent


def test_it_leaves_a_server_in_maintenance_when_haproxy_keeps_refusing_its_deletion(
    clock: Clock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[list[str]] = []

    def refusing(socket_path: Path, batch: list[str]) -> None:
        attempts.append(batch)
        raise RuntimeAPIError("Server still has connections attached to it, cannot remove it.")

    monkeypatch.setattr(serverdrain, "run_commands", refusing)
    drains = _drains(clock)
    drains.add([_leaving(clock)])
    with caplog.at_level(logging.WARNING, logger="deployer.serverdrain"):
        for _ in range(20):
            clock.now += 5
            drains.poll({(BACKEND, "pod-1"): 0}, 0, read_at=clock.now)

    assert len(attempts) == DELETE_ATTEMPTS
    assert "left in maintenance" in caplog.text
    assert not drains.busy()
    drains.report(10)
    # Still in the worker (in maintenance): adding it again must not use ``add server``.
    assert (BACKEND, "pod-1") in drains.in_worker()


def test_it_forgets_a_server_put_back_into_rotation(clock: Clock, sent: list[str]) -> None:
    drains = _drains(clock)
    drains.add([_leaving(clock)])

    drains.take_back((BACKEND, "pod-1"))
    clock.now += 1
    drains.poll({}, 0, read_at=clock.now)

    assert sent == [] and not drains.pending(10)
    assert drains.left_rotation() == {} and drains.report(10).servers == {}


def test_it_keeps_naming_recent_servers_for_a_minute(clock: Clock, sent: list[str]) -> None:
    drains = _drains(clock)
    drains.add([_leaving(clock, "pod-1", revision=10)])
    clock.now += 0.1
    drains.poll({}, 0, read_at=clock.now)
    assert list(drains.report(10).servers) == [f"{BACKEND}/pod-1"]
    clock.now += 1
    drains.add([_leaving(clock, "pod-2", revision=12)])
    clock.now += 0.1
    drains.poll({}, 0, read_at=clock.now)

    assert list(drains.report(12).servers) == [f"{BACKEND}/pod-1", f"{BACKEND}/pod-2"]
    assert drains.left_rotation() == {BACKEND: {"pod-1": 2, "pod-2": 2}}
    clock.now += 61
    assert drains.report(13).servers == {} and drains.left_rotation() == {}
