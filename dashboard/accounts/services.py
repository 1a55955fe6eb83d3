"""Team rules as services: members, roles and the instance cost rate.

Every route (pages, the API, management commands and the admin) goes through
these functions, so the rules hold everywhere: a team always keeps at least
one admin, and every change leaves an audit event."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from dashboard.models import Membership, Role, Team

from .audit import audit


class TeamRuleError(Exception):
    """A change the team's rules refuse; the message is for the user."""


def _lock_team(team_id: int) -> None:
    """Serialize membership changes per team: a row lock on PostgreSQL; SQLite
    runs IMMEDIATE transactions, which already take the write lock at BEGIN."""
    Team.objects.select_for_update().filter(pk=team_id).values_list("pk").first()


def _is_last_admin(membership: Membership) -> bool:
    return (
        membership.role == Role.ADMIN
        and not Membership.objects.filter(team_id=membership.team_id, role=Role.ADMIN)
        .exclude(pk=membership.pk)
        .exists()
    )


def role_change_problem(membership: Membership, role: str | None) -> str:
    """Why this member may not get ``role`` (None: be removed) now, "" when
    they may: a form shows it before the service refuses it."""
    if role == membership.role or not _is_last_admin(membership):
        return ""
    problem = (
        f"{membership.user.get_username()} is the last admin of {membership.team}; "
        "make another member admin first"
    )
    return problem + (", or the team has nobody to manage it." if role is None else ".")


def _fresh(membership: Membership) -> Membership:
    current = Membership.objects.select_related("user", "team").filter(pk=membership.pk).first()
    if current is None:
        raise TeamRuleError("That member was already removed.")
    return current


def _user_named(username: str) -> Any:
    user_model = get_user_model()
    return user_model._default_manager.filter(**{user_model.USERNAME_FIELD: username}).first()


def member_add(*, team: Team, username: str, role: str, actor: Any, via: str = "") -> Membership:
    user = _user_named(username)
    if user is None:
        raise TeamRuleError(f"There is no user named “{username}”. They need an account first.")
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(
            team=team, user=user, defaults={"role": role}
        )
        if not created:
            raise TeamRuleError(
                f"{username} is already a member ({membership.role}); change their role instead."
            )
        audit(actor, team, "member.added", user, role=role, **_via(via))
    return membership


def member_set_role(*, membership: Membership, role: str, actor: Any, via: str = "") -> bool:
    """Change a member's role; False when it already was that role."""
    with transaction.atomic():
        _lock_team(membership.team_id)
        current = _fresh(membership)
        if current.role == role:
            return False
        problem = role_change_problem(current, role)
        if problem:
            raise TeamRuleError(problem)
        Membership.objects.filter(pk=current.pk).update(role=role)
        audit(
            actor,
            current.team,
            "member.role_changed",
            current.user,
            old=current.role,
            new=role,
            **_via(via),
        )
    membership.role = role
    return True


def member_put(*, team: Team, username: str, role: str, actor: Any, via: str = "") -> str:
    """Add the user with this role, or change their role: "added", "changed"
    or "unchanged" (the ``add_member`` command's one call)."""
    user = _user_named(username)
    if user is None:
        raise TeamRuleError(f"No user named {username!r}.")
    membership = Membership.objects.filter(team=team, user=user).first()
    if membership is None:
        member_add(team=team, username=username, role=role, actor=actor, via=via)
        return "added"
    changed = member_set_role(membership=membership, role=role, actor=actor, via=via)
    return "changed" if changed else "unchanged"


def member_remove(*, membership: Membership, actor: Any, via: str = "") -> None:
    with transaction.atomic():
        _lock_team(membership.team_id)
        current = _fresh(membership)
        problem = role_change_problem(current, None)
        if problem:
            raise TeamRuleError(problem)
        current.delete()
        audit(actor, current.team, "member.removed", current.user, role=current.role, **_via(via))


def team_set_cost_rate(*, team: Team, rate: Decimal | None, actor: Any, via: str = "") -> bool:
    with transaction.atomic():
        _lock_team(team.pk)
        old = Team.objects.values_list("cost_per_gb_second", flat=True).get(pk=team.pk)
        if old == rate:
            return False
        Team.objects.filter(pk=team.pk).update(cost_per_gb_second=rate)
        audit(
            actor,
            team,
            "team.cost_rate_changed",
            team,
            old=None if old is None else str(old),
            new=None if rate is None else str(rate),
            **_via(via),
        )
    team.cost_per_gb_second = rate
    return True


def _via(via: str) -> dict[str, str]:
    return {"via": via} if via else {}
