"""The schedule editor's rules as one unit: its form, its two row formsets, the save.

A ``ScheduleEdit`` holds ``ScheduleForm`` and its row formsets bound to one submission,
validates them as the editor page does (at least one row, each target once, sizes
within bounds) and saves them together, bumping the revision so that the tick applies
the schedule's latest due time again, as edited. The REST API builds one from a JSON
body (``from_api``); the editor page's submission maps onto the same three forms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time
from typing import Any

from django.db import transaction
from django.db.models import F

from scaling.forms import (
    TIMING_FIELDS,
    AppActionFormSet,
    NodeGroupActionFormSet,
    ScheduleForm,
)
from scaling.models import AppAction, NodeGroupAction, Schedule

APP_PREFIX = "apps"
GROUP_PREFIX = "groups"
NO_ACTIONS = "Add at least one app or node group action."
SCHEDULE_FIELDS = ("name", "enabled", *TIMING_FIELDS)
APP_ROW_FIELDS = ("app", "mode", "value", "floor")
KEPT, DELETED = -1, -2
GROUP_ROW_FIELDS = ("node_group", "desired")
# Each list of rows in an API body (also the schedule's related name): its formset's
# prefix, the field naming its target, and its fields.
ROW_LISTS = (
    ("app_actions", APP_PREFIX, "app", APP_ROW_FIELDS),
    ("node_group_actions", GROUP_PREFIX, "node_group", GROUP_ROW_FIELDS),
)

Errors = dict[str, Any]


@dataclass
class ScheduleEdit:
    """A schedule's form and row formsets, bound to one submission."""

    form: ScheduleForm
    apps: Any  # AppActionFormSet
    groups: Any  # NodeGroupActionFormSet
    # Position of each formset form in the submitted rows (API bodies): KEPT for a stored
    # row left as it is, DELETED for one whose target the submitted list leaves out.
    app_rows: list[int] = field(default_factory=list)
    group_rows: list[int] = field(default_factory=list)

    @classmethod
    def from_api(
        cls, body: Mapping[str, Any], schedule: Schedule | None, user: Any = None
    ) -> ScheduleEdit:
        """An API body: schedule fields and whole lists of ``app_actions``/``node_group_actions``.

        A field left out keeps its stored value (PATCH); a list given replaces the rows,
        each target's existing row edited in place, the rows of targets left out deleted.
        """
        instance = schedule or Schedule(created_by=_user(user))
        data: dict[str, Any] = _schedule_values(schedule) if schedule else {}
        data.update({key: body[key] for key in SCHEDULE_FIELDS if key in body})
        data = {key: value for key, value in data.items() if value is not None}
        if not data.get("enabled", False):
            data.pop("enabled", None)  # an unticked checkbox is an absent one
        app_rows, group_rows = (
            _rows(
                data,
                prefix,
                list(getattr(instance, name).all()) if schedule else [],
                body.get(name),
                target,
                fields,
            )
            for name, prefix, target, fields in ROW_LISTS
        )
        return cls(
            ScheduleForm(data, instance=instance),
            AppActionFormSet(data, instance=instance, prefix=APP_PREFIX),
            NodeGroupActionFormSet(data, instance=instance, prefix=GROUP_PREFIX),
            app_rows,
            group_rows,
        )

    def is_valid(self) -> bool:
        """The editor's validation: every form and row, and at least one action."""
        valid = self.form.is_valid() & self.apps.is_valid() & self.groups.is_valid()
        if valid and self.apps.live_count() + self.groups.live_count() == 0:
            self.form.add_error(None, NO_ACTIONS)
            valid = False
        return valid

    def scales_apps(self) -> bool:
        """Whether the schedule, as submitted, would scale apps (needs the deploy permission)."""
        return bool(self.apps.is_valid() and self.apps.live_count())

    def save(self) -> Schedule:
        """Save the schedule and its rows together; an edit bumps the revision. Call is_valid first."""
        with transaction.atomic():
            saved = self.form.save(commit=False)
            if saved.pk is not None:
                saved.revision = F("revision") + 1
            saved.save()
            saved.refresh_from_db(fields=["revision"])
            self.apps.instance = self.groups.instance = saved
            self.apps.save()
            self.groups.save()
        return saved

    def api_errors(self) -> Errors:
        """The errors by API field: rows as lists in the submitted order, ``{}`` for a good row."""
        errors: Errors = {
            ("non_field_errors" if key == "__all__" else key): [str(m) for m in messages]
            for key, messages in self.form.errors.items()
        }
        for name, formset, positions in (
            ("app_actions", self.apps, self.app_rows),
            ("node_group_actions", self.groups, self.group_rows),
        ):
            rows: list[dict[str, list[str]]] = [{} for position in positions if position >= 0]
            extra: list[str] = [str(m) for m in formset.non_form_errors()]
            for index, form in enumerate(formset.forms):
                position = positions[index] if index < len(positions) else KEPT
                if position == DELETED:
                    continue
                for key, messages in form.errors.items():
                    texts = [str(m) for m in messages]
                    if position == KEPT or key in ("id", "DELETE"):
                        extra += texts
                    else:
                        key = "non_field_errors" if key == "__all__" else key
                        rows[position].setdefault(key, []).extend(texts)
            if any(rows):
                errors[name] = rows
                if extra:  # about the rows together, or about rows the body did not name
                    errors.setdefault("non_field_errors", []).extend(extra)
            elif extra:
                errors[name] = extra
        return errors


def _user(user: Any) -> Any:
    return user if getattr(user, "pk", None) else None


def _clock(value: time | None) -> str | None:
    return value.strftime("%H:%M:%S") if value is not None else None


def _schedule_values(schedule: Schedule) -> dict[str, Any]:
    """The stored schedule as the form's data, so that a PATCH changes only what it names."""
    return {
        "name": schedule.name,
        "enabled": schedule.enabled,
        "kind": schedule.kind,
        "cron": schedule.cron,
        "days": list(schedule.days) if isinstance(schedule.days, list) else [],
        "at_time": _clock(schedule.at_time),
        "until_time": _clock(schedule.until_time),
        "timezone": schedule.timezone,
    }


def _rows(
    data: dict[str, Any],
    prefix: str,
    existing: Sequence[AppAction | NodeGroupAction],
    submitted: Sequence[Mapping[str, Any]] | None,
    target: str,
    fields: tuple[str, ...],
) -> list[int]:
    """Write the formset's fields for ``submitted`` rows into ``data``; each form's position.

    Existing rows come first (a formset's initial forms): edited in place when their
    target is submitted again, deleted when it is not, kept as they are when no list
    was submitted. Rows for new targets follow as extra forms.
    """
    positions: list[int] = []
    by_target: dict[Any, int] = {}
    if submitted is not None:
        for position, row in enumerate(submitted):
            by_target.setdefault(row.get(target), position)
    taken: set[int] = set()
    for index, row in enumerate(existing):
        key = f"{prefix}-{index}-"
        data[key + "id"] = row.pk
        target_id = getattr(row, f"{target}_id")
        position = by_target.get(target_id) if submitted is not None else None
        if submitted is not None and position is None:
            values = {name: _stored(row, name) for name in fields}
            data.update({key + name: value for name, value in values.items()})
            data[key + "DELETE"] = "on"
            positions.append(DELETED)
            continue
        source = submitted[position] if position is not None and submitted else None
        for name in fields:
            value = source.get(name) if source is not None else _stored(row, name)
            if value is not None:
                data[key + name] = value
        if position is not None:
            taken.add(position)
        positions.append(KEPT if position is None else position)
    index = len(existing)
    for position, row in enumerate(submitted or []):
        if position in taken:
            continue
        key = f"{prefix}-{index}-"
        data.update({key + name: row[name] for name in fields if row.get(name) is not None})
        positions.append(position)
        index += 1
    data[f"{prefix}-TOTAL_FORMS"] = index
    data[f"{prefix}-INITIAL_FORMS"] = len(existing)
    return positions


def _stored(row: AppAction | NodeGroupAction, name: str) -> Any:
    value = getattr(row, f"{name}_id", None) if name in ("app", "node_group") else None
    return value if value is not None else getattr(row, name)
