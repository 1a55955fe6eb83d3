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

from dashboard.models import ROLE_RANK, Membership, Role, Team

SESSION_KEY = "team_id"

M = TypeVar("M", bound=Model)


def roles_from(role: str) -> list[str]:
    """``role`` and every role above it."""
    return [r for r, rank in ROLE_RANK.items() if rank >= ROLE_RANK[Role(role)]]


def team_ids(user: Any, role: str = Role.VIEWER) -> QuerySet[Membership]:
    """The ids of the teams where the user holds at least ``role``, as a subquery."""
    return Membership.objects.filter(user=user, role__in=roles_from(role)).values("team_id")


def teams_of(user: Any, role: str = Role.VIEWER) -> QuerySet[Team]:
    """The teams where the user holds at least ``role``."""
    return Team.objects.filter(pk__in=team_ids(user, role))


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


# --- the admin site: staff operate their own teams, superusers every team ----------------
#
# ``team_path`` is the lookup from a row to its team: "team" for most,
# "job__team" for a job's rows, "pk" for the teams themselves.


def operable(
    queryset: QuerySet[M], user: Any, role: str = Role.VIEWER, *, team_path: str = "team"
) -> QuerySet[M]:
    """The rows of ``queryset`` this admin user operates with at least
    ``role``: every row for superusers; for other staff, the rows of teams
    where they hold ``role`` (a row of no team: none)."""
    if getattr(user, "is_superuser", False):
        return queryset
    if not getattr(user, "is_authenticated", False):
        return queryset.none()
    return queryset.filter(**{f"{team_path}__in": team_ids(user, role)})


def operator_allows(user: Any, obj: Any, role: str, *, team_path: str = "team") -> bool:
    """For one row (saved or not): superusers operate every team; other staff
    only the teams where they hold ``role``."""
    if getattr(user, "is_superuser", False):
        return True
    team_id = _team_id(obj, team_path)
    membership = membership_in(user, team_id) if team_id is not None else None
    return membership is not None and membership.allows(role)


def _team_id(obj: Any, team_path: str) -> int | None:
    *hops, last = team_path.split("__")
    for hop in hops:
        obj = getattr(obj, hop, None)
        if obj is None:
            return None
    return obj.pk if last == "pk" else getattr(obj, f"{last}_id", None)


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
