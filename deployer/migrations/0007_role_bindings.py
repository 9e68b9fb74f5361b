"""Role bindings, and the upgrade rule: who held model permissions keeps what they could do.

Each user and group holding today's Django model permissions of the deployer or scaling apps
is bound, on every namespace (``*``), to the least role that covers every permission it held.
Superusers need no binding (a superuser is admin everywhere).
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

# The role each model permission needs at least; a holder gets the highest of its permissions'.
PERMISSION_ROLES = {
    "deployer.view_app": "viewer",
    "deployer.view_deployment": "viewer",
    "scaling.view_schedule": "viewer",
    "scaling.view_scalingrun": "viewer",
    "scaling.view_nodegroup": "viewer",
    "deployer.add_deployment": "deployer",
    "deployer.change_deployment": "deployer",
    "deployer.delete_deployment": "deployer",
    "scaling.add_schedule": "operator",
    "scaling.change_schedule": "operator",
    "scaling.delete_schedule": "operator",
    "scaling.add_nodegroup": "operator",
    "scaling.change_nodegroup": "operator",
    "scaling.delete_nodegroup": "operator",
    "scaling.add_scalingrun": "operator",
    "deployer.add_app": "admin",
    "deployer.change_app": "admin",
    "deployer.delete_app": "admin",
}
ORDER = ("viewer", "deployer", "operator", "admin")


def _highest(permissions):
    roles = [PERMISSION_ROLES[p] for p in permissions if p in PERMISSION_ROLES]
    return max(roles, key=ORDER.index) if roles else None


def bind_existing(apps, schema_editor):
    """Bind each holder of model permissions to the matching role on ``*``."""
    RoleBinding = apps.get_model("deployer", "RoleBinding")
    Permission = apps.get_model("auth", "Permission")
    Group = apps.get_model("auth", "Group")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    rows = Permission.objects.filter(content_type__app_label__in=("deployer", "scaling"))
    names = {
        p.pk: f"{p.content_type.app_label}.{p.codename}"
        for p in rows.select_related("content_type")
    }
    for group in Group.objects.filter(permissions__in=list(names)).distinct():
        held = [names[pk] for pk in group.permissions.values_list("pk", flat=True) if pk in names]
        role = _highest(held)
        if role:
            RoleBinding.objects.get_or_create(role=role, group=group, namespace="*")
    users = User.objects.filter(user_permissions__in=list(names), is_superuser=False).distinct()
    for user in users:
        held = [
            names[pk] for pk in user.user_permissions.values_list("pk", flat=True) if pk in names
        ]
        role = _highest(held)
        if role:
            RoleBinding.objects.get_or_create(role=role, user=user, namespace="*")


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("deployer", "0006_promotion_and_guard"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="RoleBinding",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("role", models.CharField(max_length=16)),
                ("namespace", models.CharField(max_length=63)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "group",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="role_bindings",
                        to="auth.group",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="role_bindings",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["namespace", "role", "id"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("group__isnull", True), ("user__isnull", False)),
                            models.Q(("group__isnull", False), ("user__isnull", True)),
                            _connector="OR",
                        ),
                        name="rolebinding_user_or_group",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("user__isnull", False)),
                        fields=("role", "user", "namespace"),
                        name="rolebinding_unique_user",
                    ),
                    models.UniqueConstraint(
                        condition=models.Q(("group__isnull", False)),
                        fields=("role", "group", "namespace"),
                        name="rolebinding_unique_group",
                    ),
                ],
            },
        ),
        migrations.RunPython(bind_existing, migrations.RunPython.noop),
    ]
