"""``{{ user|may_manage_registries }}``: whether the nav shows the Registries link."""

from __future__ import annotations

from typing import Any

from django import template

from dashboard.views.registries import may_manage_registries as _may_manage

register = template.Library()


@register.filter
def may_manage_registries(user: Any) -> bool:
    """True when ``user`` may open the Registries page (an admin of every namespace)."""
    return bool(getattr(user, "is_authenticated", False)) and _may_manage(user)
