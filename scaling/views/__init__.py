"""Pages of the scaling app: schedules, cluster actions, runs."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from dashboard.audit.service import changes, record, state
from scaling.models import NodeGroup, Schedule

# The rows of a schedule that its audit diffs include.
RELATED = {"schedule": ("app_actions", "node_group_actions")}


def delete_row(
    request: HttpRequest, row: NodeGroup | Schedule, message: str, to: str
) -> HttpResponse:
    """Delete ``row``, say ``message`` (its ``{name}`` filled in) and redirect to the page ``to``."""
    name = row.name
    kind = "schedule" if isinstance(row, Schedule) else "node_group"
    record(request, f"{kind}.delete", row, changes(state(row, related=RELATED.get(kind, ())), {}))
    row.delete()
    messages.success(request, message.format(name=name))
    return redirect(to)
