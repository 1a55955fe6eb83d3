"""Joins batch mode (0015_batch_mode, made beside 0015_anthropic_provider)
with the migrations main took meanwhile; no operation of its own."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0015_batch_mode"),
        ("dashboard", "0016_scores"),
    ]

    operations = []
