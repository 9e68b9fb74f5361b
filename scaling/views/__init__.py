"""Pages of the scaling app: schedules, cluster actions, runs."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from scaling.models import NodeGroup, Schedule


def delete_row(
    request: HttpRequest, row: NodeGroup | Schedule, message: str, to: str
) -> HttpResponse:
    """Delete ``row``, say ``message`` (its ``{name}`` filled in) and redirect to the page ``to``."""
    name = row.name
    row.delete()
    messages.success(request, message.format(name=name))
    return redirect(to)
