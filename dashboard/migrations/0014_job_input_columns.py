"""A job keeps its dataset's column names in order (``input_columns``), and
its output schema's field names (``output_columns``): the items'
``input_fields`` and the schema in ``spec`` are JSON objects, whose keys
PostgreSQL's jsonb gives back shortest first. Jobs made from a dataset that
still exists (and their retries) take its columns; the others keep reading
one row's keys, and the stored schema's."""

from django.db import migrations, models


def columns_from_datasets(apps, schema_editor):
    Dataset = apps.get_model("dashboard", "Dataset")
    Job = apps.get_model("dashboard", "Job")
    for dataset in Dataset.objects.exclude(columns=[]).only("pk", "columns").iterator():
        made = Job.objects.filter(dataset_id=dataset.pk)
        made.update(input_columns=dataset.columns)
        Job.objects.filter(retry_of__in=made.values("pk"), input_columns=[]).update(
            input_columns=dataset.columns
        )


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0013_cost_notify"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="input_columns",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="job",
            name="output_columns",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.RunPython(columns_from_datasets, migrations.RunPython.noop),
    ]
