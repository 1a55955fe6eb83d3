from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from dashboard.accounts.services import TeamRuleError, member_put
from dashboard.models import Role, Team


class Command(BaseCommand):
    help = "Add a user to a team, or change their role (a team always keeps an admin)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("team")
        parser.add_argument("username")
        parser.add_argument("--role", choices=[r.value for r in Role], default=Role.MEMBER)

    def handle(self, *args: Any, team: str, username: str, role: str, **options: Any) -> None:
        try:
            team_obj = Team.objects.get(name=team)
        except Team.DoesNotExist:
            raise CommandError(f"No team named {team!r} (create it with create_team).") from None
        try:
            outcome = member_put(
                team=team_obj, username=username, role=role, actor=None, via="command"
            )
        except TeamRuleError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{username} is {role} in {team_obj.name} ({outcome})")
