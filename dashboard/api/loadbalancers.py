"""``GET /api/load-balancers/``: every load balancer of the fleet, as the Load balancer page lists it."""

from __future__ import annotations

import logging
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from dashboard.api.permissions import GlobalViewPermission
from dashboard.api.schema import ApiSchema
from deployer.errors import StoreError
from deployer.lbstatus import load_balancers

logger = logging.getLogger(__name__)


class RejectedConfigurationSerializer(serializers.Serializer):
    """The last configuration a load balancer refused."""

    revision = serializers.IntegerField(help_text="The etcd revision of the refused configuration.")
    error = serializers.CharField(help_text="Why HAProxy refused it.")


class SkippedRecordSerializer(serializers.Serializer):
    """A record the load balancer left out of its configuration."""

    key = serializers.CharField(help_text="The record's full etcd key.")
    reason = serializers.CharField(help_text="Why it was left out.")


class LoadBalancerSerializer(serializers.Serializer):
    """One load balancer: its registration, its last acknowledgement and its lag.

    A member whose proxysync is down (no live lease) is listed with ``state`` "proxysync
    down", whether its HAProxy still accepts connections, and null acknowledgements.
    """

    id = serializers.CharField(help_text="The id it registered under `<prefix>/lbs/<id>`.")
    state = serializers.ChoiceField(
        choices=["live", "proxysync down"],
        help_text="live: registered on its lease; proxysync down: a member without a live "
        "lease, whose HAProxy may still serve its last routes.",
    )
    haproxy_answers = serializers.BooleanField(
        allow_null=True,
        help_text="For a member whose proxysync is down: whether its HAProxy accepts "
        "connections (deploys wait for it before stopping pods while it does); null when live.",
    )
    address = serializers.CharField(help_text="Where users' traffic enters it.")
    healthy = serializers.BooleanField(help_text="Whether its HAProxy's master socket answers.")
    error = serializers.CharField(
        allow_null=True, help_text="The last refused configuration or failed reload; null since."
    )
    haproxy_version = serializers.CharField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True, help_text="When its proxysync started.")
    last_reload_at = serializers.DateTimeField(
        allow_null=True, help_text="Its last HAProxy reload; null when none since start."
    )
    reloads = serializers.IntegerField(help_text="HAProxy reloads since its proxysync started.")
    applied_revision = serializers.IntegerField(
        allow_null=True, help_text="The etcd revision its HAProxy serves."
    )
    applied_at = serializers.DateTimeField(allow_null=True, help_text="When it applied it.")
    lag = serializers.IntegerField(
        allow_null=True,
        help_text="How many changes of frontend or backend records it has not applied yet; "
        "0 when it is up to date.",
    )
    reloaded = serializers.BooleanField(
        allow_null=True,
        help_text="Whether the last apply reloaded HAProxy (false: runtime API, no reload).",
    )
    seconds = serializers.FloatField(allow_null=True, help_text="How long the last apply took.")
    rejected = RejectedConfigurationSerializer(allow_null=True)
    drained_revision = serializers.IntegerField(
        allow_null=True,
        help_text="No HAProxy worker or session older than this revision is left.",
    )
    skipped = SkippedRecordSerializer(many=True)


class LoadBalancerFleetSerializer(serializers.Serializer):
    """Every load balancer of the fleet, sorted by id, and the etcd revision they were read at.

    When etcd cannot be read, ``error`` says why, ``revision`` is null and the list is empty
    (every HAProxy keeps serving its last configuration meanwhile), as the page says it.
    """

    revision = serializers.IntegerField(
        allow_null=True, help_text="etcd's revision when the fleet was read; null if unread."
    )
    error = serializers.CharField(
        allow_null=True, help_text="Why etcd could not be read; null when it was."
    )
    count = serializers.IntegerField()
    results = LoadBalancerSerializer(many=True)


class LoadBalancerList(APIView):
    """Read-only: the fleet, for anyone who may see the Load balancer page."""

    permission_classes = [GlobalViewPermission]
    schema = ApiSchema()

    @extend_schema(
        operation_id="load_balancers_list",
        responses={
            200: OpenApiResponse(
                LoadBalancerFleetSerializer,
                description="Every load balancer by id.",
            ),
            503: OpenApiResponse(
                LoadBalancerFleetSerializer,
                description="etcd could not be read: `error` says why, and the list is empty.",
            ),
        },
    )
    def get(self, request: Request) -> Response:
        """Each load balancer: id, state, address, health, HAProxy version, applied revision, lag."""
        fleet: dict[str, Any]
        try:
            revision, balancers = load_balancers()
        except StoreError as exc:
            # A monitoring client that reads only the status sees the fleet is unknown.
            logger.warning("load balancer list: %s", exc)
            fleet = {"revision": None, "error": f"etcd could not be read: {exc}", "results": []}
            answer = status.HTTP_503_SERVICE_UNAVAILABLE
        else:
            fleet = {"revision": revision, "error": None, "results": balancers}
            answer = status.HTTP_200_OK
        fleet["count"] = len(fleet["results"])
        return Response(LoadBalancerFleetSerializer(fleet).data, status=answer)
