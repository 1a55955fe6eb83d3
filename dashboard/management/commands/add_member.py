from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from dashboard.audit import audit
from dashboard.models import Membership, Role, Team


class Command(BaseCommand):
    help = "Add a user to a team, or change their role."

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
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        membership, created = Membership.objects.update_or_create(
            team=team_obj, user=user, defaults={"role": role}
        )
        audit(
            None,
            team_obj,
            "member.added" if created else "member.role_changed",
            username,
            role=role,
        )
        self.stdout.write(f"{username} is {role} in {team_obj.name}")
