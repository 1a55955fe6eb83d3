# Credential health (what the last call saw, and when) and the instances'
# ``stopping`` status, which counts as live in the one-live-instance rule.
# Self-contained: Credential and ModelInstance only.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0010_drop_job_outputs"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="modelinstance",
            name="one_live_instance_per_model",
        ),
        migrations.AddField(
            model_name="credential",
            name="health",
            field=models.CharField(
                choices=[
                    ("unknown", "Not checked yet"),
                    ("ok", "OK"),
                    ("auth_failed", "Authentication failed"),
                    ("error", "Last call failed"),
                ],
                default="unknown",
                max_length=12,
            ),
        ),
        migrations.AddField(
            model_name="credential",
            name="health_checked_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="credential",
            name="health_detail",
            field=models.TextField(blank=True, help_text="Redacted."),
        ),
        migrations.AlterField(
            model_name="modelinstance",
            name="status",
            field=models.CharField(
                choices=[
                    ("requested", "Requested"),
                    ("loading", "Loading"),
                    ("running", "Running"),
                    ("stopping", "Stopping"),
                    ("stopped", "Stopped"),
                    ("expired", "Expired"),
                    ("failed", "Failed"),
                ],
                default="requested",
                max_length=10,
            ),
        ),
        migrations.AddConstraint(
            model_name="modelinstance",
            constraint=models.UniqueConstraint(
                condition=models.Q(("status__in", ["requested", "loading", "running", "stopping"])),
                fields=("credential", "model"),
                name="one_live_instance_per_model",
            ),
        ),
    ]
