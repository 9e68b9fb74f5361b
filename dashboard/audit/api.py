"""``/api/audit/``: the audit events the caller may read, filtered as on the Audit page, paged."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from dashboard.api.schema import ApiSchema
from dashboard.audit import queries
from dashboard.audit.models import AuditEvent
from dashboard.tokens.scopes import TokenScopePermission


class AuditEventSerializer(serializers.ModelSerializer[AuditEvent]):
    """One event, read-only."""

    class Meta:
        model = AuditEvent
        fields = queries.FIELDS
        read_only_fields = queries.FIELDS


class AuditList(generics.ListAPIView[AuditEvent]):
    """List events newest first; filters ``user``, ``action``, ``app``, ``namespace``, ``since``
    and ``until`` (ISO times, UTC), as on the Audit page. Read-only: GET only."""

    serializer_class = AuditEventSerializer
    schema = ApiSchema()
    permission_classes = [IsAuthenticated, TokenScopePermission]
    filter_backends: list[Any] = []

    def get_queryset(self) -> Any:
        """The caller's visible events narrowed by the query's filters; 400 on a bad filter."""
        if not queries.may_read(self.request.user):
            raise PermissionDenied("You may not see the audit trail.")
        filters = queries.AuditFilterForm(self.request.query_params)
        if not filters.is_valid():
            raise ValidationError(filters.errors)
        return filters.apply(queries.visible_events(self.request.user))

    @extend_schema(
        parameters=[
            OpenApiParameter("user", str, description="Who: a user name, or a token's name."),
            OpenApiParameter("action", str, description="What: one action, e.g. deploy."),
            OpenApiParameter("app", str, description="The app's name."),
            OpenApiParameter("namespace", str, description="The namespace."),
            OpenApiParameter("since", str, description="From this ISO time or date (UTC)."),
            OpenApiParameter("until", str, description="Up to this ISO time or date (UTC)."),
        ]
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """A page of events (``count``, ``next``, ``previous``, ``results``)."""
        return super().get(request, *args, **kwargs)
