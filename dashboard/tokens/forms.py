"""The Tokens page's form: the same checks as the API, one message per field."""

from __future__ import annotations

from typing import Any

from django import forms

from dashboard.tokens import service
from dashboard.tokens.models import SCOPE_HELP, SCOPES


class TokenForm(forms.Form):
    """A new token of the signed-in user."""

    name = forms.CharField(
        required=False, max_length=200, help_text="For example the CI job that will use it."
    )
    scopes = forms.MultipleChoiceField(
        required=False,
        choices=[(scope, f"{scope}: {SCOPE_HELP[scope]}") for scope in SCOPES],
        widget=forms.CheckboxSelectMultiple,
        error_messages={
            "invalid_choice": f"Unknown scope %(value)s; choose from {', '.join(SCOPES)}."
        },
    )
    namespaces = forms.CharField(
        required=False,
        max_length=2000,
        help_text="Comma-separated; empty: every namespace you may use.",
    )
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires at (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Empty: the token never expires.",
    )

    def __init__(self, *args: Any, owner: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner

    def clean(self) -> dict[str, Any]:
        """Add the service's per-field problems (empty name, unknown scope, bad namespace, past expiry)."""
        data = super().clean()
        scopes = data.get("scopes")
        if scopes is None:  # refused by the field already (an unknown scope)
            return data
        data["namespaces"] = service.split_list(data.get("namespaces"))
        problems = service.check(
            self.owner,
            data.get("name") or "",
            list(scopes),
            data["namespaces"],
            data.get("expires_at"),
        )
        for field, messages in problems.items():
            if field not in self.errors:
                for message in messages:
                    self.add_error(field, message)
        return data
