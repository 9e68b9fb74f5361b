"""Recording audit events: :func:`record`, the field diff with env values masked, the client's IP.

``record`` is called where a user acts: in the views and the API, and in the deployer's
service functions that both of them (and the webhooks) call. Model writes made by the
workflow itself are not user actions and are not recorded.
"""

from __future__ import annotations

import contextvars
import ipaddress
import json
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.http import HttpRequest, HttpResponse

from dashboard.audit.models import AuditEvent

# action -> how the Audit page names it.
ACTIONS: dict[str, str] = {
    "app.create": "app created",
    "app.edit": "app changed",
    "app.delete": "app deleted",
    "deploy": "deploy",
    "abort": "abort",
    "promote": "promote",
    "reject": "reject",
    "swap_back": "swap back",
    "scale": "scale",
    "undeploy": "undeploy",
    "schedule.create": "schedule created",
    "schedule.edit": "schedule changed",
    "schedule.delete": "schedule deleted",
    "node_group.create": "node group created",
    "node_group.edit": "node group changed",
    "node_group.delete": "node group deleted",
    "node_group.capacity": "node group capacity",
    "node.action": "node action",
    "token.create": "token created",
    "token.revoke": "token revoked",
    "role_binding.create": "role binding created",
    "role_binding.delete": "role binding deleted",
    "login": "sign-in",
    "login_failed": "failed sign-in",
}
# Fields whose values are never stored in a diff: only which keys changed.
MASKED_FIELDS = frozenset({"env"})
# Bookkeeping fields that change on every save and say nothing about the change.
IGNORED_FIELDS = frozenset({"id", "created_at", "updated_at", "updated_by", "created_by"})

_current_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar(
    "greenlight_audit_request", default=None
)


class RequestContext:
    """Middleware: the request being served, for events recorded below a view (services)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        """Serve ``request`` with it set as the current one."""
        token = _current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            _current_request.reset(token)


def _valid_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(request: Any) -> str | None:
    """The client's address: REMOTE_ADDR, or, from a trusted proxy, X-Forwarded-For's last hop
    that is not itself a trusted proxy (settings.TRUSTED_PROXIES; none by default)."""
    meta = getattr(request, "META", {})
    remote = _valid_ip(meta.get("REMOTE_ADDR") or "")
    trusted = {_valid_ip(proxy) for proxy in getattr(settings, "TRUSTED_PROXIES", ())} - {None}
    forwarded = meta.get("HTTP_X_FORWARDED_FOR", "")
    if remote is None or remote not in trusted or not forwarded:
        return remote
    # Proxies append; only the hops our trusted proxies added can be believed, right to left.
    for hop in reversed(forwarded.split(",")):
        address = _valid_ip(hop)
        if address is None:
            return remote
        if address not in trusted:
            return address
    return remote


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def state(
    instance: models.Model, exclude: Iterable[str] = (), related: Iterable[str] = ()
) -> dict[str, Any]:
    """The instance's concrete fields as JSON values (foreign keys as ids), for :func:`changes`;
    each name in ``related`` (a reverse relation) adds the list of its rows' fields."""
    skip = IGNORED_FIELDS | set(exclude)
    values: dict[str, Any] = {}
    for field in instance._meta.concrete_fields:
        if field.name in skip:
            continue
        values[field.name] = field.value_from_object(instance)
    for name in related:
        rows = getattr(instance, name).order_by("pk")
        back = getattr(instance._meta.get_field(name), "field", None)
        values[name] = [state(row, exclude={"id", getattr(back, "name", "")}) for row in rows]
    return _jsonable(values)


def changes(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``{field: [before, after]}`` for each field that differs; ``env`` as the keys
    ``added``, ``removed`` and ``changed``, never a value."""
    diff: dict[str, Any] = {}
    for field in sorted(set(before) | set(after)):
        old, new = before.get(field), after.get(field)
        if old == new:
            continue
        if field in MASKED_FIELDS:
            old_env, new_env = old or {}, new or {}
            diff[field] = {
                "added": sorted(set(new_env) - set(old_env)),
                "removed": sorted(set(old_env) - set(new_env)),
                "changed": sorted(
                    key for key in set(old_env) & set(new_env) if old_env[key] != new_env[key]
                ),
            }
        else:
            diff[field] = [old, new]
    return diff


def _target_fields(target: Any) -> dict[str, str]:
    """target_type, target_id, target, namespace and app of a model instance or a text."""
    if target is None:
        return {}
    if not isinstance(target, models.Model):
        return {"target": str(target)[:255]}
    fields = {
        "target_type": target._meta.model_name or "",
        "target_id": str(target.pk or ""),
        "target": str(target)[:255],
    }
    app = target if target._meta.label == "deployer.App" else getattr(target, "app", None)
    if isinstance(app, models.Model):
        fields["app"] = str(getattr(app, "name", ""))
        fields["namespace"] = str(getattr(app, "namespace", ""))
    namespace = getattr(target, "namespace", None)
    if isinstance(namespace, str):
        fields["namespace"] = namespace
    return fields


def token_facts(token: Any) -> dict[str, Any]:
    """What a token record keeps of an API token: its owner, scopes, namespaces and expiry."""
    return {
        "owner": token.user.get_username(),
        "scopes": list(token.scopes),
        "namespaces": list(token.namespaces),
        "expires_at": token.expires_at,
    }


def _who(actor: Any) -> dict[str, Any]:
    if actor is None:
        return {}
    if isinstance(actor, str):
        return {"username": actor[:150]}
    if not getattr(actor, "is_authenticated", False):
        return {}
    token = getattr(actor, "greenlight_token", None)
    return {
        "user_id": actor.pk,
        "username": actor.get_username(),
        "token": getattr(token, "name", "") if token is not None else "",
    }


def record(
    request_or_actor: Any,
    action: str,
    target: Any = None,
    diff: dict[str, Any] | None = None,
    **details: Any,
) -> AuditEvent:
    """Append one event: ``action`` (a key of ACTIONS) done by the request's user (or ``actor``:
    a user, a name such as a webhook's, or None for the system) to ``target``.

    The IP comes from the request, or from the request being served when an actor is given.
    ``namespace=`` and ``app=`` in ``details`` override what the target says.
    """
    if action not in ACTIONS:
        raise ValueError(f"Unknown audit action {action!r}; add it to dashboard.audit ACTIONS.")
    if hasattr(request_or_actor, "META"):
        return append(
            request_or_actor,
            getattr(request_or_actor, "user", None),
            action,
            target,
            diff,
            **details,
        )
    return append(_current_request.get(), request_or_actor, action, target, diff, **details)


def append(
    request: Any,
    actor: Any,
    action: str,
    target: Any = None,
    diff: dict[str, Any] | None = None,
    **details: Any,
) -> AuditEvent:
    """:func:`record` with the request (or None) and the actor given apart."""
    if action not in ACTIONS:
        raise ValueError(f"Unknown audit action {action!r}; add it to dashboard.audit ACTIONS.")
    fields: dict[str, Any] = {"action": action, **_target_fields(target), **_who(actor)}
    for key in ("namespace", "app"):
        if key in details:
            fields[key] = str(details.pop(key) or "")
    return AuditEvent.objects.create(
        ip=client_ip(request) if request is not None else None,
        diff=_jsonable(diff or {}),
        details=_jsonable(details),
        **fields,
    )
