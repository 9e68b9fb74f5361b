"""Scaling run pages: the run with its live log, and its stored lines as JSON."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render

from deployer.livelog import parse_after
from scaling.models import ScalingRun, ScalingRunLog
from scaling.permissions import can_view_runs, require

PAGE = 500
RUNS_PER_PAGE = 50


def run_list(request: HttpRequest) -> HttpResponse:
    """Every run, newest first, 50 to a page, optionally of one kind."""
    require(can_view_runs(request.user), "see scaling runs")
    runs = ScalingRun.objects.select_related("schedule", "triggered_by")
    kind = request.GET.get("kind", "")
    if kind in ScalingRun.Kind.values:
        runs = runs.filter(kind=kind)
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "scaling/run_list.html",
        {
            "page": page,
            "runs": page.object_list,
            "kind": kind,
            "kinds": ScalingRun.Kind.choices,
            "query": f"kind={kind}&" if kind else "",
        },
    )


def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A run: what was planned, what happened, and the log following live."""
    require(can_view_runs(request.user), "see scaling runs")
    run = get_object_or_404(ScalingRun.objects.select_related("schedule", "triggered_by"), pk=pk)
    lines = list(run.logs.order_by("seq")[:PAGE])
    outcomes = {r.get("key"): r.get("outcome", "") for r in run.result}
    plan = []
    for change in run.plan:
        key = f"{change['target']}:{change['id']}"
        plan.append({**change, "key": key, "outcome": outcomes.get(key, "")})
    return render(
        request,
        "scaling/run_detail.html",
        {"run": run, "plan": plan, "lines": lines, "last_seq": lines[-1].seq if lines else 0},
    )


def run_logs(request: HttpRequest, pk: int) -> JsonResponse:
    """Stored lines with ``seq`` greater than ``?after=``, at most 500 at a time."""
    require(can_view_runs(request.user), "see scaling runs")
    run = get_object_or_404(ScalingRun, pk=pk)
    try:
        after = parse_after(request.GET.get("after"))
    except ValueError:
        after = 0
    lines = list(ScalingRunLog.objects.filter(run=run, seq__gt=after).order_by("seq")[: PAGE + 1])
    return JsonResponse(
        {
            "results": [line.as_payload() for line in lines[:PAGE]],
            "has_more": len(lines) > PAGE,
            "status": run.status,
            "failure_reason": run.failure_reason,
        }
    )
