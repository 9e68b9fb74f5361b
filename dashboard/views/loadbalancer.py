"""The Load balancer page: every live load balancer, what it acknowledged, backends, records left out."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from deployer.lbstatus import load_balancer_status
from scaling.permissions import allows_global


@require_GET
def load_balancer(request: HttpRequest) -> HttpResponse:
    """The fleet (address, health, applied revision and lag, reloads), backends, skipped records.

    The fleet serves every namespace: seeing it needs a role on ``*``.
    """
    if not allows_global(request.user, "view"):
        raise PermissionDenied("You may not see the load balancers; it needs a role on '*'.")
    return render(request, "dashboard/load_balancer.html", {"lb": load_balancer_status()})
