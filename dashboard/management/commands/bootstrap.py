"""Create the demo user (and, when the deployer is ready, the demo app)."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from deployer import roles
from deployer.demo import ensure_demo_app
from deployer.models import RoleBinding
from launcher.stack import admin_password
from scaling.demo import ensure_demo_scaling


class Command(BaseCommand):
    """``manage.py bootstrap``: idempotently seed the demo user ``admin`` and the demo app."""

    help = "Create the demo user admin and the demo app hello when they are missing."

    def handle(self, *args: Any, **options: Any) -> None:
        """Create or update the demo user; print the password when it was generated."""
        user_model = get_user_model()
        password = admin_password()
        user, created = user_model.objects.get_or_create(
            username="admin", defaults={"is_staff": True, "is_superuser": True}
        )
        if password is not None:
            user.set_password(password)
            user.save()
            self.stdout.write("Demo user: admin (password from GREENLIGHT_ADMIN_PASSWORD)")
        elif created:
            generated = secrets.token_urlsafe(12)
            user.set_password(generated)
            user.save()
            self.stdout.write(f"Demo user: admin  password: {generated}")
        else:
            self.stdout.write(
                "Demo user: admin (password unchanged; set GREENLIGHT_ADMIN_PASSWORD to reset it)"
            )
        # The demo user is a superuser (admin everywhere); the binding shows it on the Access page.
        RoleBinding.objects.get_or_create(
            role=roles.ADMIN, user=user, namespace=roles.EVERY, defaults={"created_by": user}
        )
        ensure_demo_app(user)
        ensure_demo_scaling(user)
