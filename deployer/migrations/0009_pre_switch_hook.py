"""App.pre_switch_hook and its timeout: a command run as a Job before the switch."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("deployer", "0008_registry_follow"),
    ]

    operations = [
        migrations.AddField(
            model_name="app",
            name="pre_switch_hook",
            field=models.CharField(blank=True, default="", max_length=1024),
        ),
        migrations.AddField(
            model_name="app",
            name="pre_switch_hook_timeout_seconds",
            field=models.PositiveIntegerField(default=300),
        ),
    ]
