"""``/api/tokens/``: list and create your tokens (the secret once, in the 201), revoke with DELETE.

Administrators list and revoke every user's tokens; a request made with a token needs its
``admin`` scope to create or revoke one, and cannot make a token broader than itself.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from dashboard.api.schema import ApiSchema
from dashboard.audit.service import record, token_facts
from dashboard.tokens import service
from dashboard.tokens.models import SCOPES, STATES, ApiToken
from dashboard.tokens.scopes import TokenScopePermission, request_token


class TokenSerializer(serializers.ModelSerializer):
    """A token as lists show it: never its secret, only its public prefix."""

    user = serializers.CharField(source="user.get_username", read_only=True)
    prefix = serializers.CharField(source="masked", read_only=True)
    state = serializers.ChoiceField(choices=STATES, read_only=True)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=SCOPES), read_only=True)
    namespaces = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = ApiToken
        fields = (
            "id",
            "name",
            "user",
            "prefix",
            "scopes",
            "namespaces",
            "expires_at",
            "last_used_at",
            "created_at",
            "revoked_at",
            "state",
        )
        read_only_fields = fields


class NewTokenSerializer(TokenSerializer):
    """The answer to a creation: the token's full text is in ``token``, and nowhere ever again."""

    token = serializers.CharField(read_only=True, help_text="Shown once; store it now.")

    class Meta(TokenSerializer.Meta):
        fields = (*TokenSerializer.Meta.fields, "token")
        read_only_fields = fields


class TokenRequestSerializer(serializers.Serializer):
    """What a new token may do: a name, scopes, optionally namespaces and an expiry."""

    name = serializers.CharField(allow_blank=True, max_length=200)
    scopes = serializers.ListField(
        child=serializers.CharField(max_length=20),
        max_length=len(SCOPES),
        help_text=f"A subset of {', '.join(SCOPES)}.",
    )
    namespaces = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        max_length=100,
        help_text="Only these namespaces' apps; empty or left out: every namespace the owner may use.",
    )
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Left out or null: the token never expires."
    )


class TokenViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Your API tokens; an administrator's list holds everyone's (``?user=`` narrows it)."""

    serializer_class = TokenSerializer
    permission_classes = [IsAuthenticated, TokenScopePermission]
    schema = ApiSchema()

    def get_queryset(self) -> QuerySet[ApiToken]:
        """The caller's tokens, or every user's for an administrator."""
        if getattr(self, "swagger_fake_view", False):  # the schema: no request user
            return ApiToken.objects.none()
        tokens = ApiToken.objects.select_related("user").order_by("-created_at", "-id")
        user = self.request.user
        if not service.is_token_admin(user):
            return tokens.filter(user=user)
        wanted = self.request.query_params.get("user") if self.action == "list" else None
        return tokens.filter(user__username=wanted) if wanted else tokens

    @extend_schema(
        parameters=[
            OpenApiParameter("user", str, description="Administrators: only this user's tokens.")
        ]
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Tokens, newest first, revoked and expired ones included (see ``state``)."""
        return super().list(request, *args, **kwargs)

    @extend_schema(request=TokenRequestSerializer, responses={201: NewTokenSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Create a token for yourself; the 201 holds its full text, which is never shown again."""
        wanted = TokenRequestSerializer(data=request.data)
        wanted.is_valid(raise_exception=True)
        data = wanted.validated_data
        try:
            token, secret = service.create(
                request.user,
                data["name"],
                list(data["scopes"]),
                list(data.get("namespaces") or []),
                data.get("expires_at"),
                within=request_token(request),
            )
        except DjangoValidationError as exc:
            raise ValidationError(exc.message_dict) from None
        record(request, "token.create", token, **token_facts(token))
        token.token = secret  # type: ignore[attr-defined]
        return Response(NewTokenSerializer(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Revoke the token at once (204, also when it was revoked before)."""
        token = self.get_object()
        if token.revoke(by=request.user):
            record(request, "token.revoke", token, **token_facts(token))
        return Response(status=status.HTTP_204_NO_CONTENT)
