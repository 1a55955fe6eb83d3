"""Which team a request acts for, and what the user may do there.

Another team's object is a 404 (not a 403): its existence is not revealed."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest

from .models import Membership, Role

SESSION_KEY = "team_id"


def current_membership(request: HttpRequest) -> Membership | None:
    cached = getattr(request, "_membership", False)
    if cached is not False:
        return cached
    memberships = Membership.objects.filter(user=request.user).select_related("team")
    wanted = request.session.get(SESSION_KEY)
    membership = None
    if wanted is not None:
        membership = memberships.filter(team_id=wanted).first()
    if membership is None:
        membership = memberships.order_by("team__name").first()
    request._membership = membership  # type: ignore[attr-defined]
    return membership


def require_membership(request: HttpRequest, role: str = Role.VIEWER) -> Membership:
    membership = current_membership(request)
    if membership is None:
        raise PermissionDenied("You are not a member of any team yet; ask a team admin to add you.")
    if not membership.allows(role):
        raise PermissionDenied(f"This needs the {role} role in {membership.team}.")
    return membership


def team_object_or_404(queryset: QuerySet[Any], request: HttpRequest, **lookup: Any) -> Model:
    """The object if it belongs to one of the user's teams, else 404."""
    team_ids = Membership.objects.filter(user=request.user).values("team_id")
    try:
        return queryset.filter(team_id__in=team_ids).get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError):
        raise Http404("No such object in your teams.") from None


def role_in(request: HttpRequest, team_id: int) -> Membership | None:
    return Membership.objects.filter(user=request.user, team_id=team_id).first()
