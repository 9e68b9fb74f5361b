"""The Notifications page: subscriptions, their form, and the delivery log.

Seeing them needs the permission to view apps; creating, changing and deleting them the
permission to change apps.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard.notifications.forms import SubscriptionForm
from dashboard.notifications.models import Delivery, DeliveryAttempt, Subscription
from deployer import permissions

RECENT_DELIVERIES = 50


def can_manage(user: Any) -> bool:
    """True when ``user`` may create, change and delete subscriptions."""
    return permissions.can_view_app(user) and bool(user.has_perm(permissions.CHANGE))


def _require(allowed: bool, what: str) -> None:
    if not allowed:
        raise PermissionDenied(f"You may not {what}.")


@require_GET
def notification_list(request: HttpRequest) -> HttpResponse:
    """Every subscription, and the recent deliveries (optionally of one status) with their attempts."""
    _require(permissions.can_view_app(request.user), "see notifications")
    status = request.GET.get("status", "")
    deliveries = Delivery.objects.select_related("subscription").prefetch_related(
        Prefetch("attempt_log", queryset=DeliveryAttempt.objects.order_by("at", "id"))
    )
    if status in Delivery.Status.values:
        deliveries = deliveries.filter(status=status)
    else:
        status = ""
    return render(
        request,
        "dashboard/notifications.html",
        {
            "subscriptions": Subscription.objects.select_related("app"),
            "deliveries": deliveries[:RECENT_DELIVERIES],
            "statuses": Delivery.Status.choices,
            "status": status,
            "can_manage": can_manage(request.user),
        },
    )


def _form_page(request: HttpRequest, subscription: Subscription | None) -> HttpResponse:
    instance = subscription or Subscription(created_by=request.user)
    form = SubscriptionForm(request.POST or None, instance=instance)
    if request.method == "POST":
        if form.is_valid():
            saved = form.save()
            messages.success(request, f"Saved the subscription {saved.name}.")
            if form.new_secret:
                messages.warning(
                    request,
                    f"Signing secret of {saved.name}: {form.new_secret} (shown once; copy it "
                    "to the receiver now).",
                )
            return redirect("notifications")
        return render(
            request,
            "dashboard/subscription_form.html",
            {"form": form, "subscription": subscription},
            status=400,
        )
    return render(
        request, "dashboard/subscription_form.html", {"form": form, "subscription": subscription}
    )


@require_http_methods(["GET", "POST"])
def subscription_create(request: HttpRequest) -> HttpResponse:
    """A new subscription."""
    _require(can_manage(request.user), "manage notifications")
    return _form_page(request, None)


@require_http_methods(["GET", "POST"])
def subscription_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Change a subscription (its secret stays unless a new one is asked for)."""
    _require(can_manage(request.user), "manage notifications")
    return _form_page(request, get_object_or_404(Subscription, pk=pk))


@require_POST
def subscription_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete a subscription and its delivery log."""
    _require(can_manage(request.user), "manage notifications")
    subscription = get_object_or_404(Subscription, pk=pk)
    subscription.delete()
    messages.success(request, f"Deleted the subscription {subscription.name}.")
    return redirect("notifications")
