"""Registry polling: an app follows its repository and deploys the newest tag its policy accepts.

Policies: ``off``; ``semver-patch`` (newer patch of the current major.minor), ``semver-minor``
(newer within the current major), ``semver-major`` (anything newer); or a glob of tags such as
``release-*`` (fnmatch), the newest by the image config's ``created``. The current version is
the tag of the live deployment's image (the app's image before any deploy). A tag that was
deployed before (and failed, was aborted, or was swapped back from) is not deployed again by
polling; the next newer tag is. Pre-release versions
(``1.3.0-rc.1``) are candidates only while the current version is a pre-release.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone

if TYPE_CHECKING:
    from deployer.models import App, Deployment

log = logging.getLogger(__name__)

OFF = "off"
SEMVER_POLICIES = ("semver-patch", "semver-minor", "semver-major")
FOLLOW_INTERVAL_DEFAULT = 60
FOLLOW_INTERVAL_MIN = 10
FOLLOW_INTERVAL_MAX = 86400
# Errors double the wait, up to this long.
BACKOFF_MAX_SECONDS = 3600
_GLOB = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]{1,128}$")


def validate_follow_policy(value: str) -> None:
    """off, a semver policy, or a glob of tags (at least one of ``* ? [...]``)."""
    if value in (OFF, *SEMVER_POLICIES):
        return
    if value.startswith("semver"):
        raise ValidationError(
            f"Unknown policy {value!r}: use off, semver-patch, semver-minor, semver-major "
            "or a glob of tags such as release-*."
        )
    if not _GLOB.match(value):
        raise ValidationError(
            f"{value!r} is not a glob of tags: use letters, digits, '_', '.', '-' and the "
            "wildcards * ? [...] (at most 128 characters)."
        )
    if not any(c in value for c in "*?["):
        raise ValidationError(
            f"{value!r} names a single tag; a policy is off, semver-patch, semver-minor, "
            "semver-major or a glob with * ? or [...]."
        )
    depth = 0
    for c in value:
        if c == "[":
            if depth:
                raise ValidationError(f"{value!r}: '[' inside a [...] set.")
            depth = 1
        elif c == "]":
            if not depth:
                raise ValidationError(f"{value!r}: ']' without '['.")
            depth = 0
    if depth:
        raise ValidationError(f"{value!r}: '[' is never closed.")


def validate_follow_interval(value: int) -> None:
    if value is None or not FOLLOW_INTERVAL_MIN <= value <= FOLLOW_INTERVAL_MAX:
        raise ValidationError(f"Poll every {FOLLOW_INTERVAL_MIN} to {FOLLOW_INTERVAL_MAX} seconds.")


def pick(
    policy: str, current: str, tags: list[str], created: dict[str, str] | None = None
) -> str | None:
    """The newest tag of ``tags`` the policy moves ``current`` to; None when nothing is newer."""
    from deployer import registry

    if policy in SEMVER_POLICIES:
        now = registry.version_of(current)
        if now is None:
            raise ValueError(f"the current tag {current!r} is not a version")
        best: tuple[object, str] | None = None
        for tag in tags:
            version = registry.version_of(tag)
            if version is None or version <= now:
                continue
            # Pre-releases only follow a pre-release (1.3.0-rc.1 does not replace 1.2.3).
            if version.prerelease and not now.prerelease:
                continue
            if policy == "semver-patch" and (version.major, version.minor) != (
                now.major,
                now.minor,
            ):
                continue
            if policy == "semver-minor" and version.major != now.major:
                continue
            if best is None or version > best[0]:
                best = (version, tag)
        return best[1] if best else None
    matching = [t for t in tags if registry.matches_glob(t, policy)]
    if not matching:
        return None
    newest = registry.newest_first(matching, created)[0]
    if newest == current:
        return None
    if created and current in created and created.get(newest, "") <= created[current]:
        return None
    return newest


def current_image(app: App) -> str:
    """The live deployment's image; the app's image when nothing is live or the app's image
    names another repository now (the app follows the repository it names)."""
    from deployer import registry
    from deployer.models import Deployment

    if app.live_version is not None:
        live = (
            Deployment.objects.filter(
                app=app,
                kind=Deployment.Kind.DEPLOY,
                version=app.live_version,
                status=Deployment.Status.SUCCEEDED,
            )
            .order_by("-pk")
            .values_list("image", flat=True)
            .first()
        )
        if live and registry.parse(live) == registry.parse(app.image):
            return live
    return app.image


def _tried(app: App, image: str) -> bool:
    """True when ``image`` was deployed before: under way, failed, aborted, or since swapped
    back from (a guard's breach, a person's swap-back); when it is live it is the current one."""
    from deployer.models import Deployment

    return Deployment.objects.filter(app=app, kind=Deployment.Kind.DEPLOY, image=image).exists()


def backoff_seconds(interval: int, failures: int) -> int:
    """The wait after ``failures`` errors in a row: the interval doubled per error, capped."""
    if failures <= 0:
        return interval
    return min(BACKOFF_MAX_SECONDS, interval * 2 ** min(failures, 16))


def poll(app: App) -> Deployment | None:
    """Ask the registry once for ``app``; queue a deploy of the newest accepted tag."""
    from deployer import registry, services
    from deployer.errors import DeployError
    from deployer.models import Deployment

    now = timezone.now()
    image = current_image(app)
    repo = registry.parse(image)
    client = registry.Client(repo)
    deployment = None
    error = ""
    newest_seen = app.follow_newest_tag
    try:
        tags = client.tags()
        created: dict[str, str] = {}
        if app.follow_policy not in SEMVER_POLICIES:
            wanted = [t for t in tags if registry.matches_glob(t, app.follow_policy)]
            current = registry.tag_of(image)
            for tag in [*wanted[: registry.MAX_DATED], current]:
                if tag in tags:
                    created[tag] = client.created(tag)
            ordered = registry.newest_first(wanted, created)
        else:
            ordered = [t for t in registry.newest_first(tags) if registry.version_of(t)]
        newest_seen = ordered[0] if ordered else ""
        tag = pick(app.follow_policy, registry.tag_of(image), tags, created)
        if tag is not None:
            candidate = _with_tag(image, tag)
            if not _tried(app, candidate):
                deployment = services.request_deploy(
                    app,
                    image=candidate,
                    trigger=Deployment.Trigger.REGISTRY,
                    detail=f"registry poll: {app.follow_policy}",
                )
    except registry.RegistryError as exc:
        error = str(exc)
    except ValueError as exc:
        error = f"Cannot follow {app.follow_policy}: {exc}."
    except DeployError as exc:
        error = f"The deploy of the newest tag was refused: {exc}"
    failures = app.follow_failures + 1 if error else 0
    wait = backoff_seconds(app.follow_interval_seconds, failures)
    type(app).objects.filter(pk=app.pk).update(
        follow_last_poll=now,
        follow_next_poll=now + timedelta(seconds=wait),
        follow_newest_tag=newest_seen[:128],
        follow_last_error=error,
        follow_failures=failures,
    )
    if error:
        log.warning("Registry poll of %s: %s", app, error)
    return deployment


def _with_tag(image: str, tag: str) -> str:
    """``host/team/app:1`` + ``2`` -> ``host/team/app:2`` (a digest is dropped)."""
    name = image.strip().split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return f"{name[:colon] if colon > slash else name}:{tag}"


def poll_due(now: datetime | None = None) -> int:
    """Poll every following app whose next poll is due; the number polled."""
    from deployer.models import App

    now = now or timezone.now()
    polled = 0
    due = (
        App.objects.exclude(follow_policy=OFF)
        .filter(Q(follow_next_poll__isnull=True) | Q(follow_next_poll__lte=now))
        .values_list("pk", "follow_next_poll")
    )
    for pk, next_poll in list(due):
        # Claim the poll: another beat or worker that read the same row skips it.
        same = (
            Q(follow_next_poll__isnull=True) if next_poll is None else Q(follow_next_poll=next_poll)
        )
        claimed = App.objects.filter(same, pk=pk).update(
            follow_next_poll=now + timedelta(seconds=FOLLOW_INTERVAL_MIN)
        )
        if not claimed:
            continue
        app = App.objects.get(pk=pk)
        try:
            poll(app)
        except Exception:  # one app's surprise must not stop the others
            log.exception("Registry poll of %s failed", app)
        polled += 1
    return polled
