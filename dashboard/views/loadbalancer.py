"""The Load balancer page: every live load balancer, what it acknowledged, backends, records left out."""

from __future__ import annotations

from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from deployer.lbstatus import load_balancer_status


@require_GET
@permission_required("deployer.view_app", raise_exception=True)
def load_balancer(request: HttpRequest) -> HttpResponse:
    """The fleet (address, health, applied revision and lag, reloads), backends, skipped records."""
    return render(request, "dashboard/load_balancer.html", {"lb": load_balancer_status()})
