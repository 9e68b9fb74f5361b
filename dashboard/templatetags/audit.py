"""``{{ user|may_read_audit }}``: whether the nav shows the Audit link."""

from __future__ import annotations

from typing import Any

from django import template

from dashboard.audit import queries

register = template.Library()


@register.filter
def may_read_audit(user: Any) -> bool:
    """True when ``user`` may open the Audit page."""
    return queries.may_read(user)
