"""Forms of the scaling pages: the schedule editor with its action rows, node groups, manual actions."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.forms import BaseInlineFormSet, inlineformset_factory

from deployer.models import App
from scaling.models import AppAction, NodeGroup, NodeGroupAction, Schedule
from scaling.schedule import InvalidSpec, Spec, validate_cron, zone_or_error

MAX_PERCENT = 1000
TIMING_FIELDS = ("kind", "cron", "days", "at_time", "until_time", "timezone")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class ScheduleForm(forms.ModelForm):
    """Name, timing (cron, or weekdays with a start and optional end) and time zone."""

    days = forms.TypedMultipleChoiceField(
        choices=list(enumerate(Schedule.DAY_NAMES)),
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple(attrs={"class": "days"}),
        label="Days",
    )

    class Meta:
        model = Schedule
        fields = ["name", "enabled", "kind", "cron", "days", "at_time", "until_time", "timezone"]
        labels = {
            "kind": "Timing",
            "cron": "Cron expression",
            "at_time": "Starts at",
            "until_time": "Ends at (optional)",
            "timezone": "Time zone",
        }
        help_texts = {
            "cron": "minute hour day-of-month month day-of-week, e.g. 0 21 * * 1-5",
            "until_time": "Makes it a window: at its end apps and node groups go back to "
            "their baseline. Earlier than the start means the next day.",
            "timezone": "IANA name, e.g. Europe/Amsterdam; times are wall-clock times there.",
        }
        error_messages = {"name": {"unique": "A schedule with this name already exists."}}
        widgets = {
            "kind": forms.RadioSelect,
            "at_time": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
            "until_time": forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
            "timezone": forms.TextInput(attrs={"list": "zones", "autocomplete": "off"}),
            "cron": forms.TextInput(attrs={"class": "mono", "placeholder": "0 21 * * 1-5"}),
        }

    def clean_timezone(self) -> str:
        """An IANA zone this machine knows."""
        value = str(self.cleaned_data.get("timezone", "")).strip()
        try:
            zone_or_error(value)
        except InvalidSpec as exc:
            raise ValidationError(str(exc)) from None
        return value

    def clean(self) -> dict[str, Any]:
        """The fields the chosen timing needs, each error on its field."""
        data = super().clean() or {}
        kind = data.get("kind")
        if kind == Schedule.Kind.CRON:
            cron = str(data.get("cron") or "").strip()
            if not cron:
                self.add_error("cron", "Enter a cron expression, e.g. 0 21 * * 1-5.")
            else:
                try:
                    validate_cron(cron)
                except InvalidSpec as exc:
                    self.add_error("cron", str(exc))
                data["cron"] = cron
            data["days"], data["at_time"], data["until_time"] = [], None, None
        elif kind == Schedule.Kind.WEEKLY:
            if not data.get("days"):
                self.add_error("days", "Pick at least one day.")
            if data.get("at_time") is None and "at_time" not in self.errors:
                self.add_error("at_time", "Enter the time the schedule starts.")
            until = data.get("until_time")
            if until is not None and until == data.get("at_time"):
                self.add_error("until_time", "The window must end at a different time.")
            data["cron"] = ""
        return data

    def timing_errors(self) -> dict[str, list[str]]:
        """Errors of the timing fields only (the preview ignores the name)."""
        self.is_valid()
        return {k: [str(m) for m in v] for k, v in self.errors.items() if k in TIMING_FIELDS}

    def spec(self) -> Spec | None:
        """The timing as a Spec, or None while a timing field has an error."""
        if self.timing_errors():
            return None
        data = self.cleaned_data
        if data["kind"] == Schedule.Kind.CRON:
            return Spec(zone=data["timezone"], cron=data["cron"])
        return Spec(
            zone=data["timezone"],
            days=frozenset(data["days"]),
            at=data["at_time"],
            until=data["until_time"],
        )


class AppActionForm(forms.ModelForm):
    """One app row: replicas as an absolute number or a percentage of the baseline, with a floor."""

    class Meta:
        model = AppAction
        fields = ["app", "mode", "value", "floor"]
        labels = {"value": "Value", "floor": "At least"}
        widgets = {
            "value": forms.NumberInput(attrs={"min": 0}),
            "floor": forms.NumberInput(attrs={"min": 0}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["app"].queryset = App.objects.order_by("namespace", "name")
        self.fields["value"].min_value = None  # the message below says more than "≥ 0"

    def clean(self) -> dict[str, Any]:
        """Percentages within 0-1000; absolute replicas within the configured cap."""
        data = super().clean() or {}
        mode, value = data.get("mode"), data.get("value")
        if value is None:
            return data
        if mode == AppAction.Mode.PERCENT and not 0 <= value <= MAX_PERCENT:
            self.add_error("value", f"A percentage must be between 0 and {MAX_PERCENT}.")
        if mode == AppAction.Mode.ABSOLUTE and value > settings.MAX_REPLICAS:
            self.add_error("value", f"At most {settings.MAX_REPLICAS} replicas.")
        floor = data.get("floor")
        if floor is not None and floor > settings.MAX_REPLICAS:
            self.add_error("floor", f"At most {settings.MAX_REPLICAS} replicas.")
        return data


class NodeGroupActionForm(forms.ModelForm):
    """One node group row: its desired capacity, within the group's min and max."""

    class Meta:
        model = NodeGroupAction
        fields = ["node_group", "desired"]
        labels = {"desired": "Nodes"}
        widgets = {"desired": forms.NumberInput(attrs={"min": 0})}

    def clean(self) -> dict[str, Any]:
        """The desired capacity must fit the group's bounds."""
        data = super().clean() or {}
        group, desired = data.get("node_group"), data.get("desired")
        if (
            group is not None
            and desired is not None
            and not group.min_size <= desired <= group.max_size
        ):
            self.add_error(
                "desired", f"{group.name} allows {group.min_size} to {group.max_size} nodes."
            )
        return data


class _UniqueTargets(BaseInlineFormSet):
    target_field = ""

    def clean(self) -> None:
        """Each app or node group appears once per schedule."""
        super().clean()
        seen: set[int] = set()
        for form in self.forms:
            if not form.cleaned_data or form.cleaned_data.get("DELETE"):
                continue
            target = form.cleaned_data.get(self.target_field)
            if target is None:
                continue
            if target.pk in seen:
                form.add_error(self.target_field, f"{target} is already in this schedule.")
            seen.add(target.pk)

    def live_count(self) -> int:
        """Rows that will exist after saving."""
        return sum(
            1
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and form.cleaned_data.get(self.target_field) is not None
        )


class AppActionFormSetBase(_UniqueTargets):
    """App rows: each app once."""

    target_field = "app"


class NodeGroupActionFormSetBase(_UniqueTargets):
    """Node group rows: each group once."""

    target_field = "node_group"


AppActionFormSet = inlineformset_factory(
    Schedule,
    AppAction,
    form=AppActionForm,
    formset=AppActionFormSetBase,
    extra=1,
    can_delete=True,
)
NodeGroupActionFormSet = inlineformset_factory(
    Schedule,
    NodeGroupAction,
    form=NodeGroupActionForm,
    formset=NodeGroupActionFormSetBase,
    extra=1,
    can_delete=True,
)


class NodeGroupForm(forms.ModelForm):
    """A node group: provider, name, size limits."""

    class Meta:
        model = NodeGroup
        fields = ["name", "provider", "external_name", "region", "min_size", "max_size", "desired"]
        labels = {
            "external_name": "Auto Scaling group name",
            "min_size": "Minimum",
            "max_size": "Maximum",
            "desired": "Desired",
        }
        help_texts = {
            "external_name": "AWS only; defaults to the node group's name.",
            "region": "AWS only; defaults to GREENLIGHT_AWS_REGION.",
        }

    def clean_name(self) -> str:
        """A DNS label: nodes of local groups are named after it."""
        name = str(self.cleaned_data.get("name", "")).strip()
        if not _DNS_LABEL.match(name) or len(name) > 50:
            raise ValidationError(
                "Use lower-case letters, digits and dashes (at most 50), e.g. workers-a."
            )
        return name

    def clean(self) -> dict[str, Any]:
        """min ≤ desired ≤ max."""
        data = super().clean() or {}
        low, high, desired = data.get("min_size"), data.get("max_size"), data.get("desired")
        if low is not None and high is not None and low > high:
            self.add_error("max_size", "The maximum must be at least the minimum.")
        elif (
            desired is not None
            and low is not None
            and high is not None
            and not low <= desired <= high
        ):
            self.add_error("desired", f"Between {low} and {high}.")
        return data


class ScaleAppForm(forms.Form):
    """Manual: set an app's replicas."""

    replicas = forms.IntegerField(min_value=0)
    baseline = forms.BooleanField(required=False, label="Also make this the baseline")

    def clean_replicas(self) -> int:
        """Within the configured cap."""
        value = int(self.cleaned_data["replicas"])
        if value > settings.MAX_REPLICAS:
            raise ValidationError(f"At most {settings.MAX_REPLICAS} replicas.")
        return value


class CapacityForm(forms.Form):
    """Manual: set a node group's desired capacity."""

    desired = forms.IntegerField(min_value=0)

    def __init__(self, *args: Any, group: NodeGroup, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group = group

    def clean_desired(self) -> int:
        """Within the group's bounds."""
        value = int(self.cleaned_data["desired"])
        if not self.group.min_size <= value <= self.group.max_size:
            raise ValidationError(
                f"{self.group.name} allows {self.group.min_size} to {self.group.max_size} nodes."
            )
        return value


class DrainForm(forms.Form):
    """Manual: drain options."""

    force = forms.BooleanField(required=False, label="Also delete pods no controller manages")
    deadline = forms.IntegerField(min_value=5, max_value=3600, required=False)
