"""Schedule pages: the overview, the editor with its live preview, delete and dry run."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db import transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.audit.service import changes, record, state
from scaling import preview as preview_module
from scaling import services
from scaling.forms import AppActionFormSet, NodeGroupActionFormSet, ScheduleForm
from scaling.models import NodeGroup, ScalingRun, Schedule
from scaling.permissions import (
    can_edit_schedules,
    can_run,
    can_scale_apps,
    can_view,
    require,
)
from scaling.planner import holding_now, schedule_problem, spec_of
from scaling.preview import preview_or_problem, preview_schedule
from scaling.schedule import InvalidSpec, known_zones, next_runs
from scaling.views import RELATED, delete_row


def overview(request: HttpRequest) -> HttpResponse:
    """Schedules with their next run, node groups and the latest runs."""
    require(can_view(request.user), "see schedules")
    now = preview_module.clock.now()
    schedules = list(
        Schedule.objects.prefetch_related("app_actions__app", "node_group_actions__node_group")
    )
    rows = []
    for schedule in schedules:
        problem = schedule_problem(schedule)
        try:
            upcoming = (
                next_runs(spec_of(schedule), now, 1) if schedule.enabled and not problem else []
            )
        except InvalidSpec as exc:
            upcoming, problem = [], str(exc)
        due = upcoming[0] if upcoming else None
        rows.append(
            {
                "schedule": schedule,
                "next": due,
                "problem": problem,
                # Formatted here: the template's date filter would show the site's zone.
                "local": due.local.strftime("%a %H:%M %Z") if due else "",
                "utc": due.at.strftime("%a %H:%M UTC") if due else "",
            }
        )
    runs = ScalingRun.objects.select_related("schedule", "triggered_by")[:15]
    holding = [
        {
            "change": h.change,
            "schedule": h.schedule,
            "since": h.due.local.strftime("%a %d %b %H:%M %Z"),
            "restore": h.due.event == "restore",
        }
        for h in holding_now(now)
    ]
    return render(
        request,
        "scaling/overview.html",
        {
            "rows": rows,
            "holding": holding,
            "groups": NodeGroup.objects.all(),
            "runs": runs,
            "can_edit": can_edit_schedules(request.user),
            "can_run": can_run(request.user),
        },
    )


def _editor(
    request: HttpRequest, schedule: Schedule | None, status: int = 200, **forms: Any
) -> HttpResponse:
    form = forms["form"]
    if form.is_bound:
        spec = form.spec()
        rows, problem = preview_or_problem(spec) if spec is not None else ([], "")
    else:
        rows, problem = preview_schedule(schedule) if schedule else ([], "")
    context = {
        "schedule": schedule,
        "preview": rows,
        "problem": problem,
        "zones": known_zones(),
        "can_run": can_run(request.user),
        "can_edit": can_edit_schedules(request.user),
        "can_scale_apps": can_scale_apps(request.user),
        **forms,
    }
    return render(request, "scaling/schedule_form.html", context, status=status)


def _save(request: HttpRequest, schedule: Schedule | None) -> HttpResponse:
    instance = schedule or Schedule(created_by=request.user)
    before = state(schedule, related=RELATED["schedule"]) if schedule else {}
    form = ScheduleForm(request.POST, instance=instance)
    apps = AppActionFormSet(request.POST, instance=instance, prefix="apps")
    groups = NodeGroupActionFormSet(request.POST, instance=instance, prefix="groups")
    valid = form.is_valid() & apps.is_valid() & groups.is_valid()
    if apps.is_valid() and apps.live_count():
        # A schedule with app rows scales those apps when it fires: the same right as Scale.
        require(can_scale_apps(request.user), "schedule app scaling")
    if valid and apps.live_count() + groups.live_count() == 0:
        form.add_error(None, "Add at least one app or node group action.")
        valid = False
    if not valid:
        return _editor(request, schedule, status=400, form=form, apps=apps, groups=groups)
    with transaction.atomic():
        saved = form.save(commit=False)
        if saved.pk is not None:
            saved.revision = F("revision") + 1
        saved.save()
        saved.refresh_from_db(fields=["revision"])
        apps.instance = groups.instance = saved
        apps.save()
        groups.save()
        after = state(saved, related=RELATED["schedule"])
        action = "schedule.edit" if schedule else "schedule.create"
        record(request, action, saved, changes(before, after))
    messages.success(request, f"Schedule “{saved.name}” saved.")
    return redirect("scaling:schedule-edit", pk=saved.pk)


def schedule_create(request: HttpRequest) -> HttpResponse:
    """A new schedule."""
    require(can_edit_schedules(request.user), "create schedules")
    if request.method == "POST":
        return _save(request, None)
    form = ScheduleForm(initial={"timezone": "UTC", "kind": Schedule.Kind.CRON})
    return _editor(
        request,
        None,
        form=form,
        apps=AppActionFormSet(prefix="apps"),
        groups=NodeGroupActionFormSet(prefix="groups"),
    )


def schedule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    """Change a schedule; the page previews its next runs."""
    require(can_view(request.user), "see schedules")
    schedule = get_object_or_404(Schedule, pk=pk)
    if request.method == "POST":
        require(can_edit_schedules(request.user), "change schedules")
        return _save(request, schedule)
    return _editor(
        request,
        schedule,
        form=ScheduleForm(instance=schedule),
        apps=AppActionFormSet(instance=schedule, prefix="apps"),
        groups=NodeGroupActionFormSet(instance=schedule, prefix="groups"),
        runs=schedule.runs.all()[:10],
    )


@require_GET
def schedule_preview(request: HttpRequest) -> JsonResponse:
    """The next 5 runs of the timing in the query string, or the errors of its fields."""
    require(can_view(request.user), "see schedules")
    form = ScheduleForm(request.GET)
    spec = form.spec()
    if spec is None:
        return JsonResponse({"ok": False, "errors": form.timing_errors(), "runs": []})
    runs, problem = preview_or_problem(spec)
    if problem:
        return JsonResponse({"ok": False, "errors": {"timing": [problem]}, "runs": []})
    return JsonResponse({"ok": True, "errors": {}, "runs": runs})


@require_POST
def schedule_delete(request: HttpRequest, pk: int) -> HttpResponse:
    """Delete a schedule (its runs stay, detached)."""
    require(can_edit_schedules(request.user), "delete schedules")
    schedule = get_object_or_404(Schedule, pk=pk)
    return delete_row(request, schedule, "Schedule “{name}” deleted.", "scaling:overview")


@require_POST
def schedule_dry_run(request: HttpRequest, pk: int) -> HttpResponse:
    """Start a dry run of the schedule and show its live log."""
    require(can_run(request.user), "start dry runs")
    schedule = get_object_or_404(Schedule, pk=pk)
    run = services.request_dry_run(schedule, request.user)
    return redirect("scaling:run-detail", pk=run.pk)
