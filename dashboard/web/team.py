"""The team page (members, roles, cost rate) and the team's audit trail.

Everyone in the team sees who is in it; admins change it, through the team
services (a team always keeps an admin; every change is audited)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Case, IntegerField, Value, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.accounts import access
from dashboard.accounts.access import require_membership
from dashboard.accounts.services import (
    TeamRuleError,
    member_add,
    member_remove,
    member_set_role,
    team_set_cost_rate,
)
from dashboard.core.keyset import cursor_decode, keyset_page
from dashboard.models import ROLE_RANK, AuditEvent, Membership, Role, Team

from .scope import posted_for_other_team

AUDIT_PAGE_SIZE = 50


# --- forms -------------------------------------------------------------------------------


class MemberAddForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class CostRateForm(forms.Form):
    cost_per_gb_second = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_digits=12,
        decimal_places=8,
        label="Cost per GB-second",
        help_text="Estimates model instance costs in the team's currency. Empty: no estimate.",
    )


# --- views -----------------------------------------------------------------------------------


def _members(team: Team) -> Any:
    rank = Case(
        *[When(role=role, then=Value(-rank)) for role, rank in ROLE_RANK.items()],
        output_field=IntegerField(),
    )
    return (
        Membership.objects.filter(team=team).select_related("user").order_by(rank, "user__username")
    )


def _render_team(
    request: HttpRequest,
    membership: Membership,
    *,
    add_form: MemberAddForm | None = None,
    cost_form: CostRateForm | None = None,
    status: int = 200,
) -> HttpResponse:
    team = membership.team
    can_manage = membership.allows(Role.ADMIN)
    context = {
        "team": team,
        "members": _members(team),
        "can_manage": can_manage,
        "roles": Role.choices,
        "add_form": (add_form or MemberAddForm()) if can_manage else None,
        "cost_form": (
            cost_form or CostRateForm(initial={"cost_per_gb_second": team.cost_per_gb_second})
        )
        if can_manage
        else None,
    }
    return render(request, "dashboard/team.html", context, status=status)


@login_required
@require_GET
def team_page(request: HttpRequest) -> HttpResponse:
    return _render_team(request, require_membership(request))


@login_required
@require_POST
def member_add_view(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request, Role.ADMIN)
    if posted_for_other_team(request, membership):
        return redirect("team")
    form = MemberAddForm(request.POST)
    if not form.is_valid():
        return _render_team(request, membership, add_form=form, status=400)
    try:
        member_add(
            team=membership.team,
            username=form.cleaned_data["username"].strip(),
            role=form.cleaned_data["role"],
            actor=request.user,
        )
    except TeamRuleError as exc:
        form.add_error("username", str(exc))
        return _render_team(request, membership, add_form=form, status=400)
    messages.success(
        request, f"{form.cleaned_data['username']} added as {form.cleaned_data['role']}."
    )
    return redirect("team")


def _managed_membership(request: HttpRequest, pk: int) -> Membership:
    """The membership if it is in one of the user's teams (else 404) and the
    user is an admin there (else 403)."""
    target, _ = access.object_for(
        request.user, Membership.objects.select_related("user", "team"), role=Role.ADMIN, pk=pk
    )
    return target


@login_required
@require_POST
def member_role_view(request: HttpRequest, pk: int) -> HttpResponse:
    target = _managed_membership(request, pk)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Pick one of the roles: viewer, member or admin.")
        return redirect("team")
    name = target.user.get_username()
    try:
        changed = member_set_role(
            membership=target, role=form.cleaned_data["role"], actor=request.user
        )
    except TeamRuleError as exc:
        messages.error(request, str(exc))
        return redirect("team")
    if changed:
        messages.success(request, f"{name} is now {form.cleaned_data['role']}.")
    else:
        messages.info(request, f"{name} already was {form.cleaned_data['role']}.")
    return redirect("team")


@login_required
@require_POST
def member_remove_view(request: HttpRequest, pk: int) -> HttpResponse:
    target = _managed_membership(request, pk)
    name = target.user.get_username()
    try:
        member_remove(membership=target, actor=request.user)
    except TeamRuleError as exc:
        messages.error(request, str(exc))
        return redirect("team")
    messages.success(request, f"{name} removed from {target.team}.")
    if target.user_id == request.user.pk:
        return redirect("home")
    return redirect("team")


@login_required
@require_POST
def team_settings_view(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request, Role.ADMIN)
    if posted_for_other_team(request, membership):
        return redirect("team")
    form = CostRateForm(request.POST)
    if not form.is_valid():
        return _render_team(request, membership, cost_form=form, status=400)
    rate = form.cleaned_data["cost_per_gb_second"]
    if team_set_cost_rate(team=membership.team, rate=rate, actor=request.user):
        messages.success(
            request,
            "Cost rate cleared." if rate is None else f"Cost rate set to {rate} per GB-second.",
        )
    return redirect("team")


def _detail_pairs(details: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        for key, value in sorted((details or {}).items())
    ]


@login_required
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request, Role.ADMIN)
    position = cursor_decode(request.GET.get("cursor", ""))
    page = keyset_page(
        AuditEvent.objects.filter(team=membership.team).select_related("actor"),
        position=position,
        size=AUDIT_PAGE_SIZE,
    )
    events = [(event, _detail_pairs(event.details)) for event in page.items]
    context = {"events": events, "page": page, "is_first_page": position is None}
    return render(request, "dashboard/audit.html", context)
