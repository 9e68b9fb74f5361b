"""Top-level pages of the dashboard."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def home(request: HttpRequest) -> HttpResponse:
    """The landing page after sign-in."""
    return render(request, "dashboard/home.html")
