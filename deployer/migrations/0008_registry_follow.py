"""Registry polling (App.follow_*), the registry trigger, and per-host registry logins."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import deployer.follow


class Migration(migrations.Migration):
    dependencies = [
        ("deployer", "0007_role_bindings"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="app",
            name="follow_failures",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="app",
            name="follow_interval_seconds",
            field=models.PositiveIntegerField(
                default=60, validators=[deployer.follow.validate_follow_interval]
            ),
        ),
        migrations.AddField(
            model_name="app",
            name="follow_last_error",
            field=models.TextField(blank=True, default=""),
        ),
        migrations.AddField(
            model_name="app",
            name="follow_last_poll",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="app",
            name="follow_newest_tag",
            field=models.CharField(blank=True, default="", max_length=128),
        ),
        migrations.AddField(
            model_name="app",
            name="follow_next_poll",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="app",
            name="follow_policy",
            field=models.CharField(
                default="off", max_length=128, validators=[deployer.follow.validate_follow_policy]
            ),
        ),
        migrations.AlterField(
            model_name="deployment",
            name="trigger",
            field=models.CharField(
                choices=[
                    ("ui", "Dashboard"),
                    ("api", "REST API"),
                    ("webhook", "Webhook"),
                    ("schedule", "Schedule"),
                    ("registry", "Registry poll"),
                ],
                default="ui",
                max_length=16,
            ),
        ),
        migrations.CreateModel(
            name="RegistryCredential",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("host", models.CharField(max_length=255, unique=True)),
                ("username", models.CharField(blank=True, default="", max_length=255)),
                ("password", models.CharField(blank=True, default="", max_length=1024)),
                ("plain_http", models.BooleanField(default=False)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "updated_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["host"],
            },
        ),
    ]
