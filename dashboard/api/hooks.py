"""Registry webhooks: Docker Hub (secret in the URL) and a generic HMAC-SHA256-signed hook.

The generic hook signs ``<timestamp>.<body>``; a delivery is accepted within five
minutes of its timestamp and only once (its signature is remembered for that long),
so a captured delivery cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ParseError, PermissionDenied, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api import parsers
from dashboard.api.views import Conflict, queued
from dashboard.images import repository, same_repository, with_tag
from dashboard.models import HookDelivery
from deployer import services
from deployer.errors import AppBusy, DeployError
from deployer.models import App, Deployment

DEDUPE_WINDOW = timedelta(minutes=1)
SIGNATURE_HEADER = "X-Greenlight-Signature"
TIMESTAMP_HEADER = "X-Greenlight-Timestamp"
# How far a delivery's timestamp may be from the server's clock, either way.
SIGNATURE_TOLERANCE = timedelta(minutes=5)
# Registry payloads are a few kilobytes; anything much larger is not a push notification.
MAX_HOOK_BODY = 64 * 1024


class PayloadTooLarge(APIException):
    """413: a webhook body over MAX_HOOK_BODY."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"


def tag_field(*, required: bool = True) -> serializers.RegexField:
    """An image tag as Docker accepts it."""
    return serializers.RegexField(
        r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
        required=required,
        error_messages={
            "invalid": "Enter a tag of letters, digits, '_', '.' and '-' (e.g. 1.2.3)."
        },
    )


class DockerHubPushData(serializers.Serializer):
    """``push_data`` of a Docker Hub push payload."""

    tag = tag_field()


class DockerHubRepository(serializers.Serializer):
    """``repository`` of a Docker Hub push payload."""

    repo_name = serializers.CharField(max_length=255)


class DockerHubPayload(serializers.Serializer):
    """The parts of Docker Hub's push payload Greenlight reads."""

    push_data = DockerHubPushData()
    repository = DockerHubRepository()


class GenericPayload(serializers.Serializer):
    """``{"tag": "2"}`` (the app's repository) or ``{"image": "repo:tag"}`` (same repository)."""

    tag = tag_field(required=False)
    image = serializers.CharField(max_length=255, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """Exactly one of tag and image."""
        if ("tag" in attrs) == ("image" in attrs):
            raise ValidationError({"tag": ["Send either tag or image (not both)."]})
        return attrs


class HookAnswer(serializers.Serializer):
    """The deployment the hook queued (202) or had already queued within a minute (200)."""

    id = serializers.IntegerField()
    status = serializers.CharField()
    url = serializers.URLField()
    web_url = serializers.URLField()
    duplicate = serializers.BooleanField(required=False)


def service_identity(app: App) -> str:
    """The identity a webhook deploy of ``app`` is recorded under: ``webhook:<namespace>/<name>``."""
    return f"webhook:{app.namespace}/{app.name}"


def deploy_from_hook(app: App, image: str, detail: str) -> tuple[Deployment, bool]:
    """Queue a webhook deploy of ``image``; (deployment, False) when one was queued in the last minute."""
    with transaction.atomic():
        # Serializes concurrent deliveries of the same push (SQLite writes are serialized anyway).
        App.objects.select_for_update().filter(pk=app.pk).first()
        recent = (
            Deployment.objects.filter(
                app=app,
                image=image,
                trigger=Deployment.Trigger.WEBHOOK,
                created_at__gte=timezone.now() - DEDUPE_WINDOW,
            )
            .order_by("-created_at")
            .first()
        )
        if recent is not None:
            return recent, False
        # The deploy runs as the app's own service identity, never as a person: no user, and
        # trigger_detail names the identity (webhook:<namespace>/<app>) before what was pushed.
        deployment = services.request_deploy(
            app,
            user=None,
            image=image,
            trigger=Deployment.Trigger.WEBHOOK,
            detail=f"{service_identity(app)}: {detail}"[:255],
        )
        return deployment, True


def _answer(request: Request, deployment: Deployment, created: bool) -> Response:
    if created:
        return queued(request, deployment)
    response = queued(request, deployment)
    response.status_code = status.HTTP_200_OK
    response.data["duplicate"] = True
    response.data["detail"] = "This tag was delivered less than a minute ago; not deployed again."
    return response


def _queue(app: App, image: str, detail: str) -> tuple[Deployment, bool]:
    try:
        return deploy_from_hook(app, image, detail)
    except AppBusy as exc:
        raise Conflict(exc.message) from None
    except DeployError as exc:
        raise ValidationError({"image": [exc.message]}) from None


class Webhook(APIView):
    """A webhook: anyone may call it; what proves the sender is the secret it knows."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]


def hook_answers(errors: dict[int, str]) -> dict[int, Any]:
    """A webhook's answers: 202 (queued) and 200 (seen before), 413, and ``errors`` described."""
    described = {**errors, 413: "A body over 64 KiB."}
    return {
        202: HookAnswer,
        200: HookAnswer,
        **{code: OpenApiResponse(description=described[code]) for code in sorted(described)},
    }


class DockerHubHook(Webhook):
    """``POST /api/hooks/dockerhub/<secret>/``: deploy the pushed tag of the app with that secret."""

    @extend_schema(
        request=DockerHubPayload,
        responses=hook_answers(
            {
                400: "Malformed payload or another repository.",
                404: "No app has this secret.",
                409: "The app is being undeployed.",
                415: "A body that is not JSON or a form.",
            }
        ),
    )
    def post(self, request: Request, secret: str) -> Response:
        """Check the payload and the repository, then queue (or dedupe) the deploy."""
        app = get_object_or_404(App, webhook_secret=secret)
        bounded_body(request)
        payload = DockerHubPayload(data=request.data)
        payload.is_valid(raise_exception=True)
        repo = payload.validated_data["repository"]["repo_name"]
        tag = payload.validated_data["push_data"]["tag"]
        if not same_repository(repo, app.image):
            raise ValidationError(
                {
                    "repository": [
                        f"{repo} is not the repository of {app.name}, which runs "
                        f"{repository(app.image)}; point this webhook at that repository."
                    ]
                }
            )
        image = with_tag(app.image, tag)
        deployment, created = _queue(app, image, f"Docker Hub push of {repo}:{tag}")
        return _answer(request, deployment, created)


def bounded_body(request: Request) -> bytes:
    """The raw body of a webhook delivery; 413 when it is over MAX_HOOK_BODY."""
    try:
        declared = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        declared = 0  # the body size middleware has answered 400 already
    if declared > MAX_HOOK_BODY:
        raise PayloadTooLarge(f"A webhook body is at most {MAX_HOOK_BODY} bytes; got {declared}.")
    body = request.body
    if len(body) > MAX_HOOK_BODY:
        raise PayloadTooLarge(f"A webhook body is at most {MAX_HOOK_BODY} bytes.")
    return body


def signature(secret: str, body: bytes, timestamp: str) -> str:
    """The header value a sender computes: ``sha256=`` + hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    signed = timestamp.encode() + b"." + body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_delivery(app: App, headers: Any, body: bytes) -> None:
    """Accept a signed delivery once, within SIGNATURE_TOLERANCE of its timestamp; 403 or 409 otherwise."""
    how = (
        f"Send {TIMESTAMP_HEADER}: <unix seconds> and {SIGNATURE_HEADER}: sha256=<hex "
        "HMAC-SHA256 of '<timestamp>.<body>' with the app's webhook secret>."
    )
    sent, stamp = headers.get(SIGNATURE_HEADER, "").strip(), headers.get(TIMESTAMP_HEADER, "")
    if not sent or not stamp:
        raise PermissionDenied(f"Sign the delivery. {how}")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise PermissionDenied(f"{TIMESTAMP_HEADER} must be unix seconds, e.g. 1700000000.")
    expected = signature(app.webhook_secret, body, stamp)
    # Compared as bytes: a header with non-ASCII characters is simply a wrong signature.
    if not hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode()):
        raise PermissionDenied(f"{SIGNATURE_HEADER} does not match the timestamp and body. {how}")
    now = timezone.now()
    age = now.timestamp() - int(stamp)
    limit = SIGNATURE_TOLERANCE.total_seconds()
    if age > limit:
        raise PermissionDenied(
            f"{TIMESTAMP_HEADER} is {age:.0f} s old; deliveries older than {limit:.0f} s are "
            "refused. Sign each delivery with the time it is sent."
        )
    if -age > limit:
        raise PermissionDenied(
            f"{TIMESTAMP_HEADER} is {-age:.0f} s in the future; check the sender's clock."
        )
    if not remember_delivery(app, expected, now):
        raise Conflict(
            "This delivery was received before (same signature); a replay is not deployed. "
            "Sign a new delivery with a fresh timestamp."
        )


def remember_delivery(app: App, signed: str, now: Any) -> bool:
    """Record a delivery's signature; False when it was recorded before (a replay).

    The unique signature makes concurrent deliveries of the same request race-free: one
    insert wins. Rows are kept while their timestamp could still be accepted (a stamp up
    to the tolerance in the future stays valid twice the tolerance from now).
    """
    HookDelivery.objects.filter(received_at__lt=now - 2 * SIGNATURE_TOLERANCE).delete()
    try:
        with transaction.atomic():
            HookDelivery.objects.create(app=app, signature=signed, received_at=now)
    except IntegrityError:
        return False
    return True


class GenericHook(Webhook):
    """``POST /api/hooks/generic/<app_id>/``, timestamped and signed: deploy a tag."""

    @extend_schema(
        request=GenericPayload,
        responses=hook_answers(
            {
                400: "Malformed body or another repository.",
                403: "Missing or wrong signature, or a timestamp over 5 minutes off.",
                404: "No such app.",
                409: "This delivery was received before (a replay).",
            }
        ),
    )
    def post(self, request: Request, app_id: int) -> Response:
        """Verify the timestamped signature over the raw body, then queue (or dedupe) the deploy."""
        app = get_object_or_404(App, pk=app_id)
        body = bounded_body(request)
        verify_delivery(app, request.headers, body)
        data = parsers.loads(body or b"{}")
        if not isinstance(data, dict):
            raise ParseError('The body must be a JSON object, e.g. {"tag": "2"}.')
        payload = GenericPayload(data=data)
        payload.is_valid(raise_exception=True)
        if "image" in payload.validated_data:
            image = payload.validated_data["image"].strip()
            if not same_repository(image, app.image):
                raise ValidationError(
                    {
                        "image": [
                            f"{repository(image)} is not the repository of {app.name} "
                            f"({repository(app.image)}); change the app's image to switch "
                            "repositories."
                        ]
                    }
                )
        else:
            image = with_tag(app.image, payload.validated_data["tag"])
        deployment, created = _queue(app, image, f"signed webhook: {image}")
        return _answer(request, deployment, created)
