"""Many writers at once on one app: sequence numbers, claims and aborts stay consistent."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from deployer import logsink, runner, services
from deployer.models import App, Deployment, DeploymentLog
from tests.concurrent import at_once

pytestmark = [pytest.mark.both_databases, pytest.mark.django_db(transaction=True)]

WRITERS = 6


@pytest.fixture(autouse=True)
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Deployment ids sent to Celery (after commit), and nothing published to Channels."""
    sent: list[int] = []
    monkeypatch.setattr(services, "enqueue", sent.append)
    monkeypatch.setattr(logsink, "publish", lambda group, message: None)
    return sent


def test_lines_appended_at_once_get_distinct_consecutive_sequence_numbers(
    make_app: Callable[..., App],
) -> None:
    deployment = services.request_deploy(make_app())
    before = DeploymentLog.objects.filter(deployment=deployment).count()

    results = at_once(
        [lambda i=i: logsink.append(deployment.pk, f"line {i}") for i in range(WRITERS)]
    )

    assert not [r for r in results if isinstance(r, BaseException)]
    seqs = sorted(DeploymentLog.objects.filter(deployment=deployment).values_list("seq", flat=True))
    assert seqs == list(range(1, before + WRITERS + 1))


def test_only_one_worker_claims_a_deployment_and_only_the_oldest_of_an_app(
    make_app: Callable[..., App],
) -> None:
    app = make_app()
    first = services.request_deploy(app)
    second = services.request_deploy(app, image="demo/hello:2")
    ids = [first.pk, second.pk] * (WRITERS // 2)

    results = at_once(
        [lambda i=i, pk=pk: runner.claim(pk, f"worker-{i}@host") for i, pk in enumerate(ids)]
    )

    assert not [r for r in results if isinstance(r, BaseException)]
    claimed = [r for r in results if r is not None]
    assert [d.pk for d in claimed] == [first.pk]  # type: ignore[union-attr]
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == Deployment.Status.RUNNING
    assert first.worker == claimed[0].worker  # type: ignore[union-attr]
    assert second.status == Deployment.Status.QUEUED


def test_an_abort_racing_a_claim_either_stops_it_before_it_starts_or_asks_it_to_stop(
    make_app: Callable[..., App],
) -> None:
    for round_ in range(4):
        deployment = services.request_deploy(make_app(f"race{round_}"))

        claim, abort = at_once(
            [
                lambda pk=deployment.pk: runner.claim(pk, "worker@host"),
                lambda queued=deployment: services.request_abort(queued),
            ]
        )

        assert not isinstance(claim, BaseException), claim
        assert not isinstance(abort, BaseException), abort
        deployment.refresh_from_db()
        if claim is None:
            assert deployment.status == Deployment.Status.ABORTED
        else:
            assert deployment.status == Deployment.Status.RUNNING
            assert deployment.abort_requested


def test_deploys_requested_at_once_queue_behind_one_another(
    make_app: Callable[..., App], enqueued: list[int]
) -> None:
    app = make_app()

    results: list[Any] = at_once(
        [
            lambda i=i: services.request_deploy(app, image=f"demo/hello:{i + 1}")
            for i in range(WRITERS)
        ]
    )

    assert not [r for r in results if isinstance(r, BaseException)]
    assert sorted(enqueued) == sorted(d.pk for d in results)
    ordered = list(Deployment.objects.filter(app=app).order_by("created_at", "id"))
    assert len(ordered) == WRITERS
    # Each one after the first says, in its log, that it waits for an earlier one.
    for deployment in ordered[1:]:
        messages = deployment.logs.values_list("message", flat=True)
        assert any("Waiting for deployment #" in m for m in messages), list(messages)
