"""The Anthropic provider (Messages API, Message Batches API) joins the provider choices."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0014_job_input_columns"),
    ]

    operations = [
        migrations.AlterField(
            model_name="credential",
            name="provider",
            field=models.CharField(
                choices=[
                    ("together", "Together"),
                    ("mymagic", "MyMagic"),
                    ("bytez", "Bytez"),
                    ("lamini", "Lamini"),
                    ("gridrepublic", "GridRepublic"),
                    ("openai", "OpenAI-compatible"),
                    ("anthropic", "Anthropic"),
                ],
                max_length=20,
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="provider",
            field=models.CharField(
                choices=[
                    ("together", "Together"),
                    ("mymagic", "MyMagic"),
                    ("bytez", "Bytez"),
                    ("lamini", "Lamini"),
                    ("gridrepublic", "GridRepublic"),
                    ("openai", "OpenAI-compatible"),
                    ("anthropic", "Anthropic"),
                ],
                max_length=20,
            ),
        ),
        migrations.AlterField(
            model_name="price",
            name="provider",
            field=models.CharField(
                choices=[
                    ("together", "Together"),
                    ("mymagic", "MyMagic"),
                    ("bytez", "Bytez"),
                    ("lamini", "Lamini"),
                    ("gridrepublic", "GridRepublic"),
                    ("openai", "OpenAI-compatible"),
                    ("anthropic", "Anthropic"),
                ],
                max_length=20,
            ),
        ),
    ]
