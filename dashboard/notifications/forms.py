"""The subscription form of the Notifications page."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from dashboard.notifications import validation
from dashboard.notifications.models import Subscription, new_secret
from deployer.events import EVENTS
from deployer.models import App


class SubscriptionForm(forms.ModelForm):
    """Name, app (or every app), events, channel, target, on/off; a new secret when asked."""

    app = forms.ModelChoiceField(
        queryset=App.objects.order_by("namespace", "name"),
        required=False,
        empty_label="Every app",
        help_text="Every app also hears the events of no app (scaling runs, drains, load balancers).",
    )
    events = forms.MultipleChoiceField(
        choices=list(EVENTS.items()), widget=forms.CheckboxSelectMultiple
    )
    target = forms.CharField(
        max_length=2000,
        help_text="The incoming webhook URL, or email addresses separated by commas.",
    )
    rotate_secret = forms.BooleanField(
        required=False,
        label="Make a new signing secret",
        help_text="Signed webhooks only: the old secret stops working at once.",
    )

    class Meta:
        model = Subscription
        fields = ("name", "app", "events", "channel", "target", "enabled")

    def clean(self) -> dict[str, Any]:
        """Check the events against the scope and the target against the channel."""
        data = super().clean()
        if "events" in data:
            try:
                data["events"] = validation.clean_events(list(data["events"]), data.get("app"))
            except ValidationError as exc:
                self.add_error("events", exc)
        if data.get("channel") and "target" in data:
            try:
                data["target"] = validation.clean_target(data["channel"], data["target"])
            except ValidationError as exc:
                self.add_error("target", exc)
        return data

    def save(self, commit: bool = True) -> Subscription:
        """Save; a signed webhook gets a secret when it has none or a new one was asked for."""
        subscription: Subscription = super().save(commit=False)
        if subscription.channel == Subscription.Channel.WEBHOOK:
            if not subscription.secret or self.cleaned_data.get("rotate_secret"):
                subscription.secret = new_secret()
                self.new_secret = subscription.secret
        else:
            subscription.secret = ""
        if commit:
            subscription.save()
        return subscription

    new_secret: str = ""
