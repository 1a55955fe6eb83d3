from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from dashboard.models import Team


class Command(BaseCommand):
    help = "Create a team (no error if it exists)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name")

    def handle(self, *args: Any, name: str, **options: Any) -> None:
        team, created = Team.objects.get_or_create(name=name.strip())
        self.stdout.write(f"{'Created' if created else 'Exists'}: team {team.name} (id {team.pk})")
