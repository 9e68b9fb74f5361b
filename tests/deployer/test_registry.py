"""Tags from a real registry (Debian's docker-registry) and registry polling."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.utils import timezone

from deployer import follow, registry
from deployer.models import App, Deployment, RegistryCredential
from tests.registrykit import bearer_proxy, push_image, registry_server
from tests.servers import Server, free_port

USERS = {"ci": "s3cret"}
USER = ("ci", "s3cret")


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with registry_server(tmp_path_factory.mktemp("registry")) as server:
        yield server


@pytest.fixture(scope="module")
def locked_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with registry_server(tmp_path_factory.mktemp("registry-auth"), users=USERS) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    cache.clear()
    yield
    cache.clear()


def test_tags_come_newest_first_versions_by_semver_then_others_by_created(
    db: None, open_registry: Server
) -> None:
    url, host = open_registry.extra["url"], open_registry.extra["host"]
    for tag in ("1.2.3", "1.10.0", "1.2.10", "v2.0.0"):
        push_image(url, "team/order", tag)
    push_image(url, "team/order", "latest", created="2026-03-01T00:00:00Z")
    push_image(url, "team/order", "edge", created="2026-05-01T00:00:00Z")
    push_image(url, "team/order", "old", created="2025-01-01T00:00:00Z")

    found = registry.lookup(f"{host}/team/order:1.2.3")

    assert found["error"] == ""
    assert found["tags"] == ["v2.0.0", "1.10.0", "1.2.10", "1.2.3", "edge", "latest", "old"]
    assert found["repository"] == f"{host}/team/order"


def test_a_lookup_is_cached_until_forgotten(db: None, open_registry: Server) -> None:
    url, host = open_registry.extra["url"], open_registry.extra["host"]
    push_image(url, "team/cached", "1")
    image = f"{host}/team/cached:1"
    assert registry.lookup(image)["tags"] == ["1"]

    push_image(url, "team/cached", "2")
    again = registry.lookup(image)
    assert again["tags"] == ["1"] and again["cached"] is True

    registry.forget(image)
    assert registry.lookup(image)["tags"] == ["2", "1"]


def test_a_registry_that_demands_a_login_gets_the_credentials_kept_for_its_host(
    db: None, locked_registry: Server
) -> None:
    url, host = locked_registry.extra["url"], locked_registry.extra["host"]
    push_image(url, "team/private", "3.1.0", auth=("ci", "s3cret"))
    # Tags that are not versions are dated by their configs, read with the same login.
    push_image(url, "team/private", "stable", created="2026-02-01T00:00:00Z", auth=USER)
    push_image(url, "team/private", "nightly", created="2026-06-01T00:00:00Z", auth=USER)
    image = f"{host}/team/private:3.1.0"

    anonymous = registry.lookup(image)
    assert anonymous["tags"] == []
    assert "requires a login" in anonymous["error"] and "Registries page" in anonymous["error"]

    RegistryCredential.objects.create(host=host, username="ci", password="wrong", plain_http=True)
    registry.forget(image)
    assert "refused the credentials" in registry.lookup(image)["error"]

    RegistryCredential.objects.filter(host=host).update(password="s3cret")
    registry.forget(image)
    assert registry.lookup(image) == {
        "repository": f"{host}/team/private",
        "tags": ["3.1.0", "nightly", "stable"],
        "error": "",
        "cached": False,
    }


def test_bearer_challenges_are_answered_with_a_token_and_pages_are_followed(
    db: None, locked_registry: Server
) -> None:
    url = locked_registry.extra["url"]
    for tag in ("1", "2", "3", "4", "5"):
        push_image(url, "team/paged", tag, auth=("ci", "s3cret"))
    with bearer_proxy(
        url, upstream_auth=("ci", "s3cret"), users={"robot": "t0ken"}, page=2
    ) as proxy:
        image = f"{proxy.host}/team/paged:1"
        assert "Registries page" in registry.lookup(image)["error"]

        RegistryCredential.objects.create(host=proxy.host, username="robot", password="t0ken")
        registry.forget(image)
        found = registry.lookup(image)

    assert found["error"] == "" and found["tags"] == ["5", "4", "3", "2", "1"]
    assert proxy.pages_served >= 3
    assert proxy.tokens_issued == ["repository:team/paged:pull"]


def test_a_registry_that_is_down_or_silent_gives_no_tags_and_says_why(db: None) -> None:
    closed = free_port()
    down = registry.lookup(f"127.0.0.1:{closed}/team/app:1")
    assert down["tags"] == [] and "cannot be reached" in down["error"]

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        slow = registry.lookup(f"127.0.0.1:{silent.getsockname()[1]}/team/app:1", timeout=0.3)
    finally:
        silent.close()
    assert slow["tags"] == [] and "did not answer within 0.3 s" in slow["error"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("semver-patch", "1.2.4"),
        ("semver-minor", "1.3.0"),
        ("semver-major", "2.0.0"),
        ("release-*", None),
    ],
)
def test_policies_pick_the_newest_tag_they_accept(policy: str, expected: str | None) -> None:
    tags = ["1.2.2", "1.2.3", "1.2.4", "1.3.0", "2.0.0", "latest", "1.2.5-rc.1"]
    assert follow.pick(policy, "1.2.3", tags) == expected


def test_a_glob_picks_the_newest_matching_tag_by_created() -> None:
    created = {"release-a": "2026-01-02", "release-b": "2026-01-01", "nightly": "2026-02-01"}
    assert follow.pick("release-*", "release-b", list(created), created) == "release-a"
    assert follow.pick("release-*", "release-a", list(created), created) is None


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("semver-minr", "Unknown policy 'semver-minr'"),
        ("release/*", "is not a glob of tags"),
        ("release-1", "names a single tag"),
        ("release-[12", "is never closed"),
    ],
)
def test_bad_policies_and_intervals_are_refused(
    make_app: Callable[..., App], policy: str, message: str
) -> None:
    app = make_app(follow_policy=policy, follow_interval_seconds=5)
    with pytest.raises(ValidationError) as caught:
        app.full_clean()
    assert message in " ".join(caught.value.message_dict["follow_policy"])
    assert "Poll every 10 to 86400 seconds." in caught.value.message_dict["follow_interval_seconds"]


def test_semver_minor_deploys_the_newest_minor_not_the_next_major_and_skips_a_failed_tag(
    make_app: Callable[..., App], open_registry: Server
) -> None:
    url, host = open_registry.extra["url"], open_registry.extra["host"]
    push_image(url, "demo/hello", "1.2.3")
    app = make_app(image=f"{host}/demo/hello:1.2.3", follow_policy="semver-minor")
    assert follow.poll(app) is None
    push_image(url, "demo/hello", "1.2.4")
    push_image(url, "demo/hello", "2.0.0")

    assert follow.poll_due() == 0  # the next poll is a minute away
    App.objects.filter(pk=app.pk).update(follow_next_poll=timezone.now())
    assert follow.poll_due() == 1

    deployment = Deployment.objects.get(app=app)
    assert deployment.image == f"{host}/demo/hello:1.2.4"
    assert deployment.status == Deployment.Status.QUEUED
    assert deployment.trigger == Deployment.Trigger.REGISTRY
    assert deployment.trigger_detail == "registry poll: semver-minor"
    app.refresh_from_db()
    assert app.follow_newest_tag == "2.0.0" and app.follow_last_error == ""
    assert app.follow_next_poll - app.follow_last_poll == timedelta(seconds=60)

    Deployment.objects.filter(pk=deployment.pk).update(status=Deployment.Status.FAILED)
    assert follow.poll(app) is None  # 1.2.4 failed: not again
    assert Deployment.objects.filter(app=app).count() == 1

    push_image(url, "demo/hello", "1.2.5")
    newer = follow.poll(app)
    assert newer is not None and newer.image == f"{host}/demo/hello:1.2.5"

    # 1.2.5 went live and was swapped back from (say, by the guard): polling leaves it alone.
    Deployment.objects.filter(pk=newer.pk).update(status=Deployment.Status.SUCCEEDED, version=2)
    assert follow.poll(app) is None
    assert Deployment.objects.filter(app=app).count() == 2

    # The live version is the current one while the app names its repository.
    Deployment.objects.filter(pk=newer.pk).update(version=3)
    App.objects.filter(pk=app.pk).update(live_version=3)
    app.refresh_from_db()
    assert follow.current_image(app) == f"{host}/demo/hello:1.2.5"
    App.objects.filter(pk=app.pk).update(image=f"{host}/demo/other:1")
    app.refresh_from_db()
    assert follow.current_image(app) == f"{host}/demo/other:1"


def test_errors_back_off_and_a_good_poll_resets_the_wait(
    make_app: Callable[..., App], open_registry: Server
) -> None:
    closed = free_port()
    app = make_app(image=f"127.0.0.1:{closed}/demo/hello:1", follow_policy="semver-major")
    waits = []
    for _ in range(3):
        follow.poll(app)
        app.refresh_from_db()
        waits.append((app.follow_next_poll - app.follow_last_poll).total_seconds())
    assert waits == [120, 240, 480]
    assert app.follow_failures == 3 and "cannot be reached" in app.follow_last_error

    push_image(open_registry.extra["url"], "demo/backoff", "1")
    App.objects.filter(pk=app.pk).update(image=f"{open_registry.extra['host']}/demo/backoff:1")
    app.refresh_from_db()
    follow.poll(app)
    app.refresh_from_db()
    assert app.follow_failures == 0 and app.follow_last_error == ""
    assert (app.follow_next_poll - app.follow_last_poll).total_seconds() == 60


def test_a_due_app_is_polled_once(make_app: Callable[..., App], open_registry: Server) -> None:
    push_image(open_registry.extra["url"], "demo/claim", "1.0.0")
    make_app(image=f"{open_registry.extra['host']}/demo/claim:1.0.0", follow_policy="semver-patch")
    make_app(image=f"{open_registry.extra['host']}/demo/claim:1.0.0")  # off: never polled
    assert follow.poll_due() == 1
    assert follow.poll_due() == 0
