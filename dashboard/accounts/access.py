"""Who may see and do what: the one place access is decided.

Every page, partial, export, API call and admin action asks here. An object
of a team the user is not in is a 404, never a 403: its existence is not
revealed. A member whose role is too low gets a 403 that says which role the
action needs.
"""

from __future__ import annotations

from typing import Any, TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest

from dashboard.models import Membership, Role

SESSION_KEY = "team_id"

M = TypeVar("M", bound=Model)


def team_ids(user: Any) -> QuerySet[Membership]:
    """The ids of the user's teams, as a subquery."""
    return Membership.objects.filter(user=user).values("team_id")


def visible(queryset: QuerySet[M], user: Any) -> QuerySet[M]:
    """The rows of ``queryset`` that belong to one of the user's teams."""
    return queryset.filter(team_id__in=team_ids(user))


def membership_in(user: Any, team_id: int) -> Membership | None:
    if not getattr(user, "is_authenticated", False):
        return None
    return Membership.objects.filter(user=user, team_id=team_id).select_related("team").first()


def require_role(membership: Membership | None, role: str, team: Any = None) -> Membership:
    """The membership if it allows ``role``, else 403 saying what is needed."""
    if membership is None or not membership.allows(role):
        where = f" in {team or (membership.team if membership else 'this team')}"
        raise PermissionDenied(f"This needs the {role} role{where}.")
    return membership


def object_for(
    user: Any, queryset: QuerySet[M], *, role: str = Role.VIEWER, **lookup: Any
) -> tuple[M, Membership]:
    """This object, for this user, with at least this role: the object and the
    user's membership in its team. 404 when it is not in one of the user's
    teams (or the lookup is malformed), 403 when the role is too low."""
    try:
        obj = visible(queryset, user).get(**lookup)
    except (queryset.model.DoesNotExist, ValueError, TypeError, OverflowError):
        raise Http404("No such object in your teams.") from None
    membership = membership_in(user, obj.team_id)  # type: ignore[attr-defined]
    return obj, require_role(membership, role)


def operator_allows(user: Any, obj: Any, role: str) -> bool:
    """For the admin site: superusers operate every team; other staff only
    the teams where they hold ``role``."""
    if getattr(user, "is_superuser", False):
        return True
    membership = membership_in(user, obj.team_id)
    return membership is not None and membership.allows(role)


# --- the team a page acts for ---------------------------------------------------------


def current_membership(request: HttpRequest) -> Membership | None:
    """The membership of the team the session acts for (the first team by name
    when none was chosen, or the chosen one was left)."""
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
    return require_role(membership, role)
