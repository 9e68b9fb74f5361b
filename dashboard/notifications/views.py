"""The Notifications page: subscriptions, their form, and the delivery log.

Seeing them needs a role in the subscription's app's namespace (``*`` for every app);
creating, changing and deleting them the admin role there.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from dashboard.notifications.forms import SubscriptionForm
from dashboard.notifications.models import Delivery, DeliveryAttempt, Subscription
from deployer import permissions, roles

RECENT_DELIVERIES = 50


def can_manage(user: Any) -> bool:
    """True when ``user`` may create, change and delete subscriptions."""
    return permissions.may(user, "notifications")


def _namespace(app: Any) -> str:
    """A subscription's namespace: its app's, or every namespace (``*``) for every app."""
    return app.namespace if app is not None else roles.EVERY


def _subscription_for(request: HttpRequest, pk: int) -> Subscription:
    """The subscription, 404 outside the user's namespaces, 403 unless an admin of its namespace."""
    subscription = get_object_or_404(Subscription.objects.select_related("app"), pk=pk)
    namespace = _namespace(subscription.app)
    if not roles.allows(request.user, "view", namespace):
        raise Http404("No such subscription.")
    _require(roles.allows(request.user, "notifications", namespace), "manage notifications")
    return subscription


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
    deliveries = roles.filter_visible(deliveries, request.user, "subscription__app__namespace")
    if status in Delivery.Status.values:
        deliveries = deliveries.filter(status=status)
    else:
        status = ""
    return render(
        request,
        "dashboard/notifications.html",
        {
            "subscriptions": roles.filter_visible(
                Subscription.objects.select_related("app"), request.user, "app__namespace"
            ),
            "deliveries": deliveries[:RECENT_DELIVERIES],
            "statuses": Delivery.Status.choices,
            "status": status,
            "can_manage": can_manage(request.user),
        },
    )


def _form_page(request: HttpRequest, subscription: Subscription | None) -> HttpResponse:
    instance = subscription or Subscription(created_by=request.user)
    form = SubscriptionForm(request.POST or None, instance=instance)
    # Only apps of the namespaces the user administers are offered (and accepted).
    field = form.fields["app"]
    field.queryset = roles.filter_visible(field.queryset, request.user, action="notifications")
    if request.method == "POST":
        if form.is_valid() and not roles.allows(
            request.user, "notifications", _namespace(form.cleaned_data.get("app"))
        ):
            form.add_error("app", "You are not an admin of this app's namespace.")
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
    return _form_page(request, _subscription_for(request, pk))


@require_POST
def subscription_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete a subscription and its delivery log."""
    subscription = _subscription_for(request, pk)
    subscription.delete()
    messages.success(request, f"Deleted the subscription {subscription.name}.")
    return redirect("notifications")
