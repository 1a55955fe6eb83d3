from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from .teams import current_membership


def team(request: HttpRequest) -> dict[str, Any]:
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    membership = current_membership(request)
    return {
        "membership": membership,
        "current_team": membership.team if membership else None,
        "my_memberships": list(request.user.memberships.select_related("team")),
    }
