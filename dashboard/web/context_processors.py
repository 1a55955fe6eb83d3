from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from dashboard.accounts.access import current_membership
from dashboard.models import Role


def team(request: HttpRequest) -> dict[str, Any]:
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    membership = current_membership(request)
    return {
        "membership": membership,
        "current_team": membership.team if membership else None,
        "can_submit": bool(membership and membership.allows(Role.MEMBER)),
        "my_memberships": list(request.user.memberships.select_related("team")),
    }
