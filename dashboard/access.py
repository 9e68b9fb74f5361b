"""Role bindings: the Access page, ``/api/role-bindings/``, and the rules both follow.

An admin on ``*`` manages every binding; an admin of a namespace manages that namespace's
bindings only (never another namespace's nor ``*``). Bad input gets a message per field and
stores nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.exceptions import PermissionDenied as ApiDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response

from dashboard.api.schema import ApiSchema
from dashboard.audit.service import record
from deployer import roles
from deployer.models import RoleBinding
from scaling.permissions import allows_global

FIELDS = ("role", "user", "group", "namespace")


class Refused(Exception):
    """The caller may not manage bindings of this namespace."""


def managed_by(user: Any) -> QuerySet[RoleBinding]:
    """The bindings ``user`` may see: those of the namespaces it is an admin of.

    Reading them needs a token's ``read`` scope; changing them its ``admin`` scope.
    """
    rows = RoleBinding.objects.select_related("user", "group", "created_by")
    visible = roles.visible_namespaces(user, "roles", scope="read")
    if visible is None:
        return rows
    return rows.filter(namespace__in=sorted(visible))


def check(data: Mapping[str, Any]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Each field's problems, and the binding's values when there are none."""
    errors: dict[str, list[str]] = {}
    role = str(data.get("role") or "").strip()
    username = str(data.get("user") or "").strip()
    group_name = str(data.get("group") or "").strip()
    namespace = str(data.get("namespace") or "").strip()
    if role not in roles.ROLES:
        errors["role"] = [f"Unknown role {role!r}; choose one of {', '.join(roles.ROLES)}."]
    user = group = None
    if username and group_name:
        errors["group"] = ["Bind the role to a user or to a group, not both."]
    elif not username and not group_name:
        errors["user"] = ["Name the user (or the group) the role is bound to."]
    elif username:
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            errors["user"] = [f"No user is named {username!r}."]
    else:
        group = Group.objects.filter(name=group_name).first()
        if group is None:
            errors["group"] = [f"No group is named {group_name!r}."]
    if not namespace:
        errors["namespace"] = ["Name a namespace, or * for every namespace."]
    elif not roles.valid_namespace(namespace):
        errors["namespace"] = [
            f"{namespace!r} is not a namespace: write * or a DNS label (lowercase letters, digits "
            "and '-', starting and ending with a letter or digit, at most 63 characters)."
        ]
    values = {"role": role, "user": user, "group": group, "namespace": namespace}
    return errors, values


def create(by: Any, data: Mapping[str, Any]) -> RoleBinding:
    """A new binding; ValidationError by field or Refused, nothing stored, when it may not be."""
    errors, values = check(data)
    if errors:
        raise ValidationError(errors)
    if not roles.allows(by, "roles", values["namespace"]):
        raise Refused(
            f"You may not bind roles on {values['namespace']}: it needs the admin role there"
            + (" (on * itself)." if values["namespace"] == roles.EVERY else " or on *.")
        )
    try:
        with transaction.atomic():
            binding = RoleBinding.objects.create(created_by=by, **values)
            record(by, "role_binding.create", binding, role=binding.role)
            return binding
    except IntegrityError:
        who = values["user"] or values["group"]
        raise ValidationError(
            {"role": [f"{who} is {values['role']} on {values['namespace']} already."]}
        ) from None


def delete(by: Any, binding: RoleBinding) -> None:
    """Remove a binding ``by`` may manage (PermissionDenied otherwise)."""
    if not roles.allows(by, "roles", binding.namespace):
        raise Refused(f"You may not remove bindings on {binding.namespace}.")
    record(by, "role_binding.delete", binding, role=binding.role)
    binding.delete()


def nav(request: HttpRequest) -> dict[str, object]:
    """What the navigation shows: the links the signed-in user's roles open."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav": {}}
    return {
        "nav": {
            "scaling": allows_global(user, "view"),
            "load_balancer": allows_global(user, "view"),
            "notifications": roles.allows_somewhere(user, "view"),
            "access": roles.allows_somewhere(user, "roles"),
        }
    }


# The Access page.


class BindingForm(forms.Form):
    """A new binding on the Access page."""

    role = forms.ChoiceField(
        choices=[(role, f"{role}: {roles.ROLE_HELP[role]}") for role in roles.ROLES]
    )
    user = forms.CharField(required=False, max_length=150, help_text="A username, or…")
    group = forms.CharField(required=False, max_length=150, help_text="…a group's name.")
    namespace = forms.CharField(max_length=63, help_text="A namespace, or * for every one.")


def _page(request: HttpRequest, form: BindingForm, status: int = 200) -> HttpResponse:
    return render(
        request,
        "dashboard/access.html",
        {"form": form, "bindings": managed_by(request.user), "roles": roles.ROLE_HELP},
        status=status,
    )


def _require_admin(request: HttpRequest) -> None:
    if not roles.allows_somewhere(request.user, "roles"):
        raise PermissionDenied("You may not manage access; it needs the admin role.")


@require_http_methods(["GET", "POST"])
def access_page(request: HttpRequest) -> HttpResponse:
    """The bindings of the namespaces you administer; POST binds a role."""
    _require_admin(request)
    if request.method != "POST":
        return _page(request, BindingForm())
    form = BindingForm(request.POST)
    if form.is_valid():
        try:
            binding = create(request.user, form.cleaned_data)
        except ValidationError as exc:
            for name, problems in exc.detail.items():  # type: ignore[union-attr]
                for problem in problems:
                    form.add_error(name if name in form.fields else None, str(problem))
        except Refused as exc:
            form.add_error("namespace", str(exc))
        else:
            messages.success(request, f"Bound: {binding}.")
            return redirect("access")
    return _page(request, form, status=400)


@require_POST
def binding_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Remove a binding of a namespace you administer."""
    _require_admin(request)
    binding = get_object_or_404(managed_by(request.user), pk=pk)
    try:
        delete(request.user, binding)
    except Refused as exc:
        raise Http404(str(exc)) from None
    messages.success(request, f"Removed: {binding}.")
    return redirect("access")


# /api/role-bindings/


class RoleBindingSerializer(serializers.ModelSerializer):
    """A binding: a role, a user or a group (by name), a namespace or ``*``."""

    # Null for a binding to a group (user), to a user (group), or made by no user.
    user = serializers.CharField(
        source="user.get_username", read_only=True, default=None, allow_null=True
    )
    group = serializers.CharField(
        source="group.name", read_only=True, default=None, allow_null=True
    )
    created_by = serializers.CharField(
        source="created_by.get_username", read_only=True, default=None, allow_null=True
    )

    class Meta:
        model = RoleBinding
        fields = ("id", "role", "user", "group", "namespace", "created_by", "created_at")
        read_only_fields = fields


class RoleBindingRequest(serializers.Serializer):
    """A new binding: ``role``, exactly one of ``user`` and ``group``, ``namespace``."""

    role = serializers.CharField(help_text=f"One of {', '.join(roles.ROLES)}.")
    user = serializers.CharField(required=False, allow_blank=True, help_text="A username.")
    group = serializers.CharField(required=False, allow_blank=True, help_text="A group's name.")
    namespace = serializers.CharField(help_text="A namespace (a DNS label), or * for every one.")


class RoleBindingViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Role bindings of the namespaces you administer (every one for an admin on ``*``)."""

    serializer_class = RoleBindingSerializer
    permission_classes = [IsAuthenticated]
    schema = ApiSchema()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """Only admins (of some namespace) manage bindings."""
        super().initial(request, *args, **kwargs)
        if not roles.allows_somewhere(request.user, "roles", scope="read"):
            raise ApiDenied("Managing role bindings needs the admin role.")

    def get_queryset(self) -> QuerySet[RoleBinding]:
        """The bindings the caller manages."""
        if getattr(self, "swagger_fake_view", False):
            return RoleBinding.objects.none()
        return managed_by(self.request.user)

    @extend_schema(request=RoleBindingRequest, responses={201: RoleBindingSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Bind a role; 400 with each field's problem, 403 outside the namespaces you administer."""
        data = request.data if isinstance(request.data, Mapping) else None
        if data is None:
            raise ValidationError({"non_field_errors": ["The body must be a JSON object."]})
        try:
            binding = create(request.user, data)
        except Refused as exc:
            raise ApiDenied(str(exc)) from None
        return Response(RoleBindingSerializer(binding).data, status=status.HTTP_201_CREATED)

    @extend_schema(responses={204: None})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Remove the binding (204)."""
        try:
            delete(request.user, self.get_object())
        except Refused as exc:
            raise NotFound(str(exc)) from None
        return Response(status=status.HTTP_204_NO_CONTENT)
