from django.db import migrations, models


class Migration(migrations.Migration):
    """The outputs and per-prompt errors live in the items now."""

    dependencies = [("dashboard", "0009_items_from_outputs")]
    operations = [
        migrations.RemoveField(model_name="job", name="outputs"),
        migrations.RemoveField(model_name="job", name="output_errors"),
        migrations.AlterField(
            model_name="job",
            name="spec",
            field=models.JSONField(
                help_text=(
                    "The normalized job spec (providers.JobSpec) without its prompts: "
                    "those are the items."
                )
            ),
        ),
    ]
