"""The team a page's POST acts for.

The session holds one team, and another tab can switch it between the moment
a form is rendered and the moment it is sent. Every form that acts for a team
carries the team it was rendered for (``{% team_field %}``); a POST for
another team than the session's is refused in words rather than applied to
the team switched to."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest

from dashboard.models import Membership

STALE_TEAM = "You switched teams in another tab; check the team and try again."


def posted_for_other_team(request: HttpRequest, membership: Membership) -> bool:
    """True (with the message for the page) when the POSTed form was rendered
    for another team than the one the session acts for now."""
    posted = request.POST.get("team")
    if posted is not None and posted != str(membership.team_id):
        messages.error(request, STALE_TEAM)
        return True
    return False
