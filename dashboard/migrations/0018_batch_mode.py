"""Batch mode: a job's mode and its cancel asked of the provider, the remote
batches of a batch job (``BatchChunk``), and a price's optional batch prices
(unset: half the online price)."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0017_judge_jobs"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="cancel_requested_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="job",
            name="mode",
            field=models.CharField(
                choices=[("online", "Online"), ("batch", "Batch")], default="online", max_length=10
            ),
        ),
        migrations.AddField(
            model_name="price",
            name="batch_input_per_mtok",
            field=models.DecimalField(blank=True, decimal_places=6, max_digits=12, null=True),
        ),
        migrations.AddField(
            model_name="price",
            name="batch_output_per_mtok",
            field=models.DecimalField(blank=True, decimal_places=6, max_digits=12, null=True),
        ),
        migrations.CreateModel(
            name="BatchChunk",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("number", models.PositiveIntegerField()),
                ("start_index", models.PositiveIntegerField()),
                ("end_index", models.PositiveIntegerField()),
                ("requests", models.PositiveIntegerField(default=0)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "Pending"),
                            ("submitting", "Submitting"),
                            ("live", "Live"),
                            ("ended", "Ended"),
                            ("failed", "Failed"),
                            ("unknown", "Outcome unknown"),
                        ],
                        default="pending",
                        max_length=20,
                    ),
                ),
                ("remote_id", models.CharField(blank=True, max_length=255)),
                ("input_file_id", models.CharField(blank=True, max_length=255)),
                ("output_file_id", models.CharField(blank=True, max_length=255)),
                ("error_file_id", models.CharField(blank=True, max_length=255)),
                ("results_url", models.CharField(blank=True, max_length=1000)),
                ("provider_status", models.CharField(blank=True, max_length=40)),
                ("counts", models.JSONField(blank=True, default=dict)),
                ("error", models.TextField(blank=True)),
                ("next_poll_at", models.DateTimeField(blank=True, db_index=True, null=True)),
                ("poll_failures", models.PositiveIntegerField(default=0)),
                ("lease_owner", models.CharField(blank=True, max_length=64)),
                ("lease_expires_at", models.DateTimeField(blank=True, null=True)),
                ("submitted_at", models.DateTimeField(blank=True, null=True)),
                ("ended_at", models.DateTimeField(blank=True, null=True)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("cancel_requested", models.BooleanField(default=False)),
                (
                    "job",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="chunks",
                        to="dashboard.job",
                    ),
                ),
            ],
            options={
                "ordering": ["job_id", "number"],
                "constraints": [
                    models.UniqueConstraint(fields=("job", "number"), name="one_chunk_per_number")
                ],
            },
        ),
    ]
