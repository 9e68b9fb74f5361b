"""Forms of the dashboard; field rules live in the deployer's model validation (App.full_clean)."""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db.models import QuerySet

from deployer import envvars
from deployer.models import App, Deployment
from deployer.validation import (
    PROMOTION_CHOICES,
    PROMOTION_TIMEOUT_MAX,
    PROMOTION_TIMEOUT_MIN,
    TRAFFIC_CHOICES,
    validate_env,
)

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Browser-side hints only; the server validates through App.full_clean().
CPU_PATTERN = r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$"
MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T|k|e[0-9]+)?$"


class AppForm(forms.ModelForm):
    """Create or edit an app descriptor; name and namespace are fixed once the app exists."""

    # Settings a form may leave out: they keep the app's value (the default for a new app).
    KEPT_WHEN_LEFT_OUT = (
        "traffic",
        "promotion",
        "promotion_timeout_seconds",
        "pre_switch_hook",
        "pre_switch_hook_timeout_seconds",
        "guard_bake_seconds",
        "guard_max_error_percent",
        "guard_min_requests",
        "follow_policy",
        "follow_interval_seconds",
    )

    class Meta:
        model = App
        # Extra pod-spec fields are JSON for API clients; the form does not edit them.
        fields = [name for name in App.DESCRIPTOR_FIELDS if name != "extra_pod_spec"]
        labels = {
            "frontend": "Frontend hostname",
            "health_enabled": "Check health before switching traffic",
            "health_type": "Health check type",
            "health_path": "Health path",
            "health_port": "Health port",
            "health_timeout": "Timeout per check (s)",
            "health_deadline": "Deadline for all pods (s)",
            "cpu_request": "CPU request",
            "cpu_limit": "CPU limit",
            "memory_request": "Memory request",
            "memory_limit": "Memory limit",
            "keep_old_seconds": "Keep old version warm (s)",
            "stop_delay_seconds": "Stop delay before SIGTERM (s)",
            "max_unavailable": "Pods down at once in a drain",
            "traffic": "Traffic switch",
            "promotion": "Promotion",
            "promotion_timeout_seconds": "Promotion timeout (s)",
            "pre_switch_hook": "Pre-switch hook",
            "pre_switch_hook_timeout_seconds": "Hook timeout (s)",
            "guard_bake_seconds": "Guard bake time (s)",
            "guard_max_error_percent": "Most 5xx answers (%)",
            "guard_min_requests": "Fewest requests to judge",
            "guard_max_response_ms": "Slowest average response (ms)",
            "guard_promql": "PromQL guard query",
            "follow_policy": "Follow the registry",
            "follow_interval_seconds": "Poll every (s)",
        }
        help_texts = {
            "follow_policy": "off; semver-patch, semver-minor or semver-major; or a glob of "
            "tags such as release-*. The newest matching tag is deployed.",
            "name": "Lowercase letters, digits and '-', starting with a letter (DNS-1035 label).",
            "image": "Repository and tag, e.g. demo/hello:1.",
            "frontend": "Host name the load balancer routes to this app, e.g. hello.localhost. "
            "No scheme, no path.",
            "health_port": "Empty: the container port.",
            "cpu_request": "Cores, e.g. 100m or 0.5.",
            "cpu_limit": "Empty: no limit.",
            "memory_request": "Bytes with a unit, e.g. 64Mi or 1Gi.",
            "memory_limit": "Empty: no limit.",
            "keep_old_seconds": "How long the previous version keeps running after the switch, "
            "so that Swap back is instant.",
            "stop_delay_seconds": "A pod leaving keeps serving this long (preStop) while load "
            "balancers take it out of rotation, then gets SIGTERM.",
            "max_unavailable": "The PodDisruptionBudget of each live version: how many of its "
            "pods a node drain may evict at once.",
            "traffic": "haproxy: the load balancer routes to the new version's pods. service: "
            "the switch moves the selector of the Service named after the app (its ClusterIP "
            "is what the load balancer, an Ingress or a cloud load balancer routes to).",
            "promotion": "automatic: traffic switches as soon as every pod is healthy. manual: "
            "the deploy waits after the health checks, the old version still serving, until "
            "someone clicks Promote (switch) or Reject (roll back).",
            "promotion_timeout_seconds": f"A deploy awaiting promotion is rejected after this "
            f"long: {PROMOTION_TIMEOUT_MIN} s to {PROMOTION_TIMEOUT_MAX} s (7 days).",
            "pre_switch_hook": "Optional: a command run once in the new version's image, as a "
            "Kubernetes Job with the app's env and GREENLIGHT_PREVIEW_URL, after the health "
            "checks and before the switch (a migration, a smoke test), e.g. migrate --noinput. "
            "Shell words, given to the image's entrypoint. If it fails, the deploy rolls back.",
            "pre_switch_hook_timeout_seconds": "The hook is stopped, and the deploy rolled back, "
            "after this long.",
            "guard_bake_seconds": "After the switch the new version bakes this long under users' "
            "traffic while the old one stays warm; a breach swaps back at once. 0: no guard.",
            "guard_max_error_percent": "The new version breaches when more than this share of "
            "its requests answers 5xx (HAProxy's counters of every load balancer).",
            "guard_min_requests": "Fewer requests during the bake are too few to judge: the "
            "bake then passes.",
            "guard_max_response_ms": "Optional: the new version breaches when its average "
            "response time (HAProxy's rtime) is above this.",
            "guard_promql": "Optional: a query asked of Prometheus during the bake; any sample "
            "with a non-zero value breaches (e.g. a ratio above a limit, written as a "
            "comparison). An unreachable Prometheus never swaps back.",
        }
        error_messages = {
            "traffic": {
                "invalid_choice": f"Unknown traffic mode %(value)s: choose {TRAFFIC_CHOICES}."
            },
            "promotion": {
                "invalid_choice": f"Unknown promotion mode %(value)s: choose {PROMOTION_CHOICES}."
            },
        }
        widgets = {
            # Filled by the view from the env rows, so model validation reports on "env".
            "env": forms.HiddenInput(),
            "image": forms.TextInput(attrs={"list": "image-suggestions", "autocomplete": "off"}),
            "cpu_request": forms.TextInput(attrs={"pattern": CPU_PATTERN, "placeholder": "100m"}),
            "cpu_limit": forms.TextInput(attrs={"pattern": CPU_PATTERN, "placeholder": "500m"}),
            "memory_request": forms.TextInput(
                attrs={"pattern": MEMORY_PATTERN, "placeholder": "64Mi"}
            ),
            "memory_limit": forms.TextInput(
                attrs={"pattern": MEMORY_PATTERN, "placeholder": "256Mi"}
            ),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["replicas"].widget.attrs.update(min=1, max=settings.MAX_REPLICAS)
        self.fields["container_port"].widget.attrs.update(min=1, max=65535)
        self.fields["health_port"].widget.attrs.update(min=1, max=65535)
        self.fields["promotion_timeout_seconds"].widget.attrs.update(
            min=PROMOTION_TIMEOUT_MIN, max=PROMOTION_TIMEOUT_MAX
        )
        for name in self.KEPT_WHEN_LEFT_OUT:
            self.fields[name].required = False
        self.fields["pre_switch_hook"].widget.attrs.update(
            placeholder="migrate --noinput", autocomplete="off"
        )
        self.fields["pre_switch_hook_timeout_seconds"].widget.attrs.update(min=1, max=86400)
        self.fields["follow_policy"].widget.attrs.update(list="follow-policies", autocomplete="off")
        self.fields["follow_interval_seconds"].widget.attrs.update(min=10, max=86400)
        self.fields["name"].widget.attrs.update(
            pattern=r"^[a-z]([a-z0-9\-]*[a-z0-9])?$", maxlength=53, autocomplete="off"
        )
        if self.instance.pk is not None:
            # Renaming would orphan the objects already running in the cluster.
            for name in ("name", "namespace"):
                self.fields[name].disabled = True
                self.fields[name].help_text = "Fixed once the app exists."

    def clean(self) -> dict[str, Any]:
        """A setting of KEPT_WHEN_LEFT_OUT that the form leaves empty keeps the app's value."""
        cleaned = super().clean() or {}
        for name in self.KEPT_WHEN_LEFT_OUT:
            if name in cleaned and cleaned[name] in (None, ""):
                cleaned[name] = getattr(self.instance, name)
        return cleaned

    def validate_unique(self) -> None:
        """The name per namespace, on the name field; App.clean() already checks the frontend."""
        message = duplicate_name_message(self.instance)
        if message:
            self.add_error("name", message)


class EnvVarForm(forms.Form):
    """One environment variable row: a value, or ``<secret>/<key>`` of a Kubernetes Secret."""

    VALUE, SECRET = "value", "secret"

    key = forms.CharField(max_length=128, required=False, label="Name")
    source = forms.ChoiceField(
        choices=[(VALUE, "Value"), (SECRET, "Secret key")],
        required=False,
        label="From",
        widget=forms.Select(attrs={"aria-label": "Where the value comes from"}),
    )
    value = forms.CharField(max_length=4096, required=False, label="Value")

    def clean_key(self) -> str:
        """A C identifier that Greenlight does not set itself (the deployer's rule, on this row)."""
        key: str = self.cleaned_data["key"].strip()
        if key and not ENV_NAME.match(key):
            raise forms.ValidationError(
                "Use letters, digits and '_', not starting with a digit (e.g. LOG_LEVEL)."
            )
        if key:
            try:
                validate_env({key: ""})
            except ValidationError as exc:
                raise forms.ValidationError(exc.message_dict.get("env", exc.messages)) from None
        return key

    def clean(self) -> dict[str, Any]:
        """A value without a name is a mistake, not a blank row; a Secret key is ``<secret>/<key>``."""
        data = super().clean() or {}
        if not data.get("key") and data.get("value"):
            self.add_error("key", "Give this value a name, or clear the row.")
        if data.get("source") != self.SECRET:
            data["entry"] = data.get("value", "")
            return data
        secret, slash, key = str(data.get("value", "")).strip().partition("/")
        problem = (
            envvars.secret_name_problem(secret) or envvars.secret_key_problem(key)
            if slash
            else "Write the Secret's name and key as <secret>/<key>, e.g. db-credentials/password."
        )
        if problem:
            self.add_error("value", problem)
        else:
            data["entry"] = {envvars.SECRET_KEY_REF: {"name": secret, "key": key}}
        return data


class BaseEnvFormSet(forms.BaseFormSet):
    """The env rows; names must be unique."""

    def clean(self) -> None:
        """Refuse a name given twice, on the row that repeats it."""
        if any(self.errors):
            return
        seen: set[str] = set()
        for form in self.forms:
            key = form.cleaned_data.get("key")
            if not key:
                continue
            if key in seen:
                form.add_error("key", f"{key} is already set above.")
            seen.add(key)

    def as_dict(self) -> dict[str, Any]:
        """The rows with a name, in order: text values and Secret references (App.env)."""
        return {
            form.cleaned_data["key"]: form.cleaned_data.get("entry", "")
            for form in self.forms
            if form.cleaned_data.get("key")
        }


EnvFormSet = forms.formset_factory(
    EnvVarForm, formset=BaseEnvFormSet, extra=1, max_num=200, validate_max=True
)


def env_formset(data: Any = None, env: dict[str, Any] | None = None) -> BaseEnvFormSet:
    """The env formset, bound to POST ``data`` or filled from an app's ``env``."""
    if data is not None:
        return EnvFormSet(data, prefix="env")
    initial = []
    for name, value in (env or {}).items():
        ref = envvars.secret_ref(value)
        if ref is None:
            initial.append({"key": name, "source": EnvVarForm.VALUE, "value": value})
        else:
            text = f"{ref['name']}/{ref['key']}"
            initial.append({"key": name, "source": EnvVarForm.SECRET, "value": text})
    return EnvFormSet(initial=initial, prefix="env")


class DeployForm(forms.Form):
    """Deploy now, optionally overriding the image for this run."""

    image = forms.CharField(
        max_length=255,
        required=False,
        help_text="Empty: the app's image.",
        widget=forms.TextInput(
            attrs={"list": "image-suggestions", "autocomplete": "off", "placeholder": "image:tag"}
        ),
    )


class ScaleForm(forms.Form):
    """Change the running replica count."""

    replicas = forms.IntegerField(min_value=0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["replicas"]
        field.max_value = settings.MAX_REPLICAS
        field.validators.append(MaxValueValidator(settings.MAX_REPLICAS))
        field.widget.attrs.update(min=0, max=settings.MAX_REPLICAS)


class UndeployForm(forms.Form):
    """Undeploy needs the app's name typed back, so that it is never a slip of the mouse."""

    confirm = forms.CharField(max_length=63, label="Type the app's name to confirm")

    def __init__(self, *args: Any, app: App, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = app
        self.fields["confirm"].error_messages["required"] = f"Type {app.name} to confirm."

    def clean_confirm(self) -> str:
        """The typed name must be the app's name."""
        value: str = self.cleaned_data["confirm"].strip()
        if value != self.app.name:
            raise forms.ValidationError(f"Type {self.app.name} to confirm.")
        return value


def duplicate_name_message(app: App) -> str:
    """The message for an app whose name is taken in its namespace, or ''."""
    if not app.name or not app.namespace:
        return ""
    taken = App.objects.filter(namespace=app.namespace, name=app.name)
    if app.pk is not None:
        taken = taken.exclude(pk=app.pk)
    if taken.exists():
        return f"An app named {app.name} already exists in namespace {app.namespace}."
    return ""


class HistoryFilterForm(forms.Form):
    """Filters of the deployments page: outcome and trigger."""

    status = forms.ChoiceField(
        choices=[("", "Any status"), *Deployment.Status.choices], required=False
    )
    trigger = forms.ChoiceField(
        choices=[("", "Any trigger"), *Deployment.Trigger.choices], required=False
    )

    def apply(self, rows: QuerySet[Deployment]) -> QuerySet[Deployment]:
        """``rows`` narrowed by the valid filters (an invalid form filters nothing)."""
        if not self.is_valid():
            return rows
        for name in ("status", "trigger"):
            if self.cleaned_data.get(name):
                rows = rows.filter(**{name: self.cleaned_data[name]})
        return rows
