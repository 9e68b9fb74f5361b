"""The Audit page: filter, page, and export the filtered events as CSV or JSON."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.audit import queries
from dashboard.audit.service import ACTIONS

PAGE_SIZE = 50
EXPORTS = ("csv", "json")


class _Echo:
    """A file-like object whose write() returns the line, for a streamed CSV."""

    def write(self, value: str) -> str:
        return value


def _csv_rows(events: Any) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(queries.FIELDS)
    for event in events.iterator(chunk_size=500):
        row = queries.as_dict(event)
        yield writer.writerow(
            [
                json.dumps(row[field], sort_keys=True)
                if field in ("diff", "details")
                else row[field]
                for field in queries.FIELDS
            ]
        )


def _export(events: Any, kind: str) -> HttpResponse | StreamingHttpResponse:
    if kind == "csv":
        response = StreamingHttpResponse(_csv_rows(events), content_type="text/csv")
    else:
        body = json.dumps([queries.as_dict(event) for event in events.iterator(chunk_size=500)])
        response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="greenlight-audit.{kind}"'
    return response


@require_GET
def audit_list(request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    """The events the user may read, newest first, filtered; ``?export=csv|json`` downloads them."""
    if not queries.may_read(request.user):
        raise PermissionDenied("You may not see the audit trail.")
    filters = queries.AuditFilterForm(request.GET)
    events = queries.visible_events(request.user)
    valid = filters.is_valid()
    if valid:
        events = filters.apply(events)
    export = request.GET.get("export", "")
    if export and export not in EXPORTS:
        filters.add_error(None, f"Unknown export {export[:20]!r}: choose csv or json.")
        valid = False
    if not valid:
        events = events.none()
    elif export:
        return _export(events, export)
    params = request.GET.copy()
    params.pop("page", None)
    params.pop("export", None)
    paginator = Paginator(events, PAGE_SIZE)
    return render(
        request,
        "dashboard/audit.html",
        {
            "filters": filters,
            "page": paginator.get_page(request.GET.get("page")),
            "query": params.urlencode() + "&" if params else "",
            "export_query": params.urlencode(),
            "actions": ACTIONS,
        },
        status=200 if valid else 400,
    )
