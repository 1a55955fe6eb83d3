"""The usage page (charts of the last 30 days, the month's spend against the
budget, by provider), its chart images, and the team's prices and budget
(team admins)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from dashboard.accounts import access
from dashboard.accounts.access import require_membership
from dashboard.accounts.prices import (
    MAX_PRICE,
    PriceError,
    price_delete,
    price_set,
    team_set_budget,
)
from dashboard.jobs import cost, usage
from dashboard.models import Membership, Price, Role, Team
from providers import PROVIDER_CHOICES

from . import charts
from .scope import posted_for_other_team

#: The chart images may use their own inline styles (pygal's), nothing else.
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


class PriceForm(forms.Form):
    provider = forms.ChoiceField(choices=PROVIDER_CHOICES)
    model = forms.CharField(max_length=200, help_text="Exactly as jobs name it.")
    input_per_mtok = forms.DecimalField(
        min_value=Decimal(0),
        max_value=MAX_PRICE,
        max_digits=12,
        decimal_places=6,
        label="Input, USD per million tokens",
    )
    output_per_mtok = forms.DecimalField(
        min_value=Decimal(0),
        max_value=MAX_PRICE,
        max_digits=12,
        decimal_places=6,
        label="Output, USD per million tokens",
    )
    batch_input_per_mtok = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_value=MAX_PRICE,
        max_digits=12,
        decimal_places=6,
        label="Batch input, USD per million tokens",
        help_text="Empty: half of the online price.",
    )
    batch_output_per_mtok = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_value=MAX_PRICE,
        max_digits=12,
        decimal_places=6,
        label="Batch output, USD per million tokens",
        help_text="Empty: half of the online price.",
    )


class BudgetForm(forms.Form):
    monthly_budget_usd = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_digits=12,
        decimal_places=2,
        label="Monthly budget, USD",
        help_text="A job whose estimate would pass it is refused; running jobs go on. "
        "Empty: no budget.",
    )


def _page(
    request: HttpRequest,
    membership: Membership,
    *,
    price_form: PriceForm | None = None,
    budget_form: BudgetForm | None = None,
    status: int = 200,
) -> HttpResponse:
    team = membership.team
    can_manage = membership.allows(Role.ADMIN)
    context: dict[str, Any] = {
        **_charts_context(team),
        "budget": cost.budget_status(team),
        "month_rows": usage.month_usage(team),
        "prices": Price.objects.filter(team=team),
        "can_manage": can_manage,
        "price_form": (price_form or PriceForm()) if can_manage else None,
        "budget_form": (
            budget_form or BudgetForm(initial={"monthly_budget_usd": team.monthly_budget_usd})
        )
        if can_manage
        else None,
    }
    return render(request, "dashboard/usage.html", context, status=status)


def _charts_context(team: Team) -> dict[str, Any]:
    period = usage.last_days()
    return {
        "charts": charts.all_charts(team, period),
        "period": period,
        "has_demo": usage.period_jobs(team, period).filter(demo=True).exists(),
    }


@login_required
@require_GET
def usage_page(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request)
    if request.htmx:
        # The home page's charts panel, loaded once the page is shown.
        return render(request, "dashboard/usage.html#charts", _charts_context(membership.team))
    return _page(request, membership)


@login_required
@require_GET
def usage_chart(request: HttpRequest, name: str) -> HttpResponse:
    """One chart as an SVG image (shown by ``<img>``, so its own styles apply)."""
    team = require_membership(request).team
    chart = charts.CHARTS[name](team, usage.last_days())
    response = HttpResponse(chart.svg(), content_type="image/svg+xml; charset=utf-8")
    response["Content-Security-Policy"] = SVG_CSP
    response["Cache-Control"] = "private, max-age=60"
    return response


@login_required
@require_POST
def price_save(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request, Role.ADMIN)
    if posted_for_other_team(request, membership):
        return redirect("usage")
    form = PriceForm(request.POST)
    if not form.is_valid():
        return _page(request, membership, price_form=form, status=400)
    data = form.cleaned_data
    try:
        price, created = price_set(
            team=membership.team,
            provider=data["provider"],
            model=data["model"],
            input_per_mtok=data["input_per_mtok"],
            output_per_mtok=data["output_per_mtok"],
            batch_input_per_mtok=data["batch_input_per_mtok"],
            batch_output_per_mtok=data["batch_output_per_mtok"],
            actor=request.user,
        )
    except PriceError as exc:
        form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        return _page(request, membership, price_form=form, status=400)
    what = "set" if created else "updated"
    messages.success(
        request,
        f"Price for {price.model} on {price.get_provider_display()} {what}; "
        "jobs saved from now on use it.",
    )
    return redirect("usage")


@login_required
@require_POST
def price_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    price, _ = access.object_for(
        request.user, Price.objects.select_related("team"), role=Role.ADMIN, pk=pk
    )
    price_delete(price, actor=request.user)
    messages.success(request, f"{price.model} on {price.get_provider_display()} has no price now.")
    return redirect("usage")


@login_required
@require_POST
def budget_save(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request, Role.ADMIN)
    if posted_for_other_team(request, membership):
        return redirect("usage")
    form = BudgetForm(request.POST)
    if not form.is_valid():
        return _page(request, membership, budget_form=form, status=400)
    try:
        value = team_set_budget(
            team=membership.team, budget=form.cleaned_data["monthly_budget_usd"], actor=request.user
        )
    except PriceError as exc:
        form.add_error("monthly_budget_usd", exc.message)
        return _page(request, membership, budget_form=form, status=400)
    messages.success(
        request,
        "No monthly budget now."
        if value is None
        else f"Monthly budget set to {cost.money(value)}.",
    )
    return redirect("usage")
