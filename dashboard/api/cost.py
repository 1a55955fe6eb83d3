"""Cost: the team's usage this month, its monthly budget and its prices
(team admins change them; everyone in the team reads them)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest
from ninja import Query, Router, Status

from dashboard.accounts import access
from dashboard.accounts.prices import PriceError, price_set, team_set_budget
from dashboard.jobs import cost, usage
from dashboard.models import Membership, Price, Role

from .auth import ADMIN_WRITES
from .errors import FieldErrors, invalid
from .schemas import MAX_ID, BudgetIn, BudgetOut, Error, PriceIn, PriceOut, UsageOut
from .scope import membership_for_create

router = Router()


def team_membership(user: Any, team: int | None) -> Membership:
    """The caller's membership in ``team`` (or their first team): a 400 on
    ``team`` when it is not one of theirs."""
    errors = FieldErrors()
    membership = membership_for_create(user, team, errors)
    errors.raise_if_any()
    assert membership is not None
    return membership


def price_json(price: Price) -> dict[str, Any]:
    return {
        "id": price.pk,
        "team": price.team_id,
        "provider": price.provider,
        "model": price.model,
        "input_per_mtok": float(price.input_per_mtok),
        "output_per_mtok": float(price.output_per_mtok),
        "batch_input_per_mtok": cost.usd(price.batch_input_per_mtok),
        "batch_output_per_mtok": cost.usd(price.batch_output_per_mtok),
        "updated_at": price.updated_at,
    }


@router.get("/usage", response={200: UsageOut, (400, 401): Error}, url_name="api_usage")
def get_usage(
    request: HttpRequest,
    team: int | None = Query(None, ge=1, le=MAX_ID, description="One of your teams' ids."),
) -> Any:
    """This month (site time zone) for your team: the budget, what is spent
    or committed, and per provider its jobs, items, failures, cost and
    latency percentiles."""
    membership = team_membership(request.auth, team)
    status = cost.budget_status(membership.team)
    return {
        "month": status.month,
        "team": membership.team_id,
        "budget": cost.usd(status.budget),
        "spent": float(status.spent),
        "by_provider": [
            {
                **row,
                **{name: cost.usd(row[name]) for name in ("cost", "cost_online", "cost_batch")},
            }
            for row in usage.month_usage(membership.team)
        ],
    }


@router.put(
    "/budget",
    response={200: BudgetOut, (400, 401, 403, 413): Error},
    url_name="api_budget",
    auth=ADMIN_WRITES,
)
def put_budget(request: HttpRequest, payload: BudgetIn) -> Any:
    """Set the team's monthly budget in USD, or null for none (team admins).
    A job whose estimate would pass it is refused with a 409; running jobs go on."""
    membership = access.require_role(team_membership(request.auth, payload.team), Role.ADMIN)
    try:
        value = team_set_budget(
            team=membership.team, budget=payload.monthly_usd, actor=request.auth, via="api"
        )
    except PriceError as exc:
        raise invalid({exc.field: [exc.message]}) from None
    return {"monthly_usd": cost.usd(value)}


@router.get("/prices", response={200: list[PriceOut], (400, 401): Error}, url_name="api_prices")
def list_prices(
    request: HttpRequest,
    team: int | None = Query(None, ge=1, le=MAX_ID, description="One of your teams' ids."),
) -> Any:
    """Your teams' prices (USD per million tokens), by provider and model."""
    prices = access.visible(Price.objects.all(), request.auth).order_by(
        "team_id", "provider", "model"
    )
    if team is not None:
        prices = prices.filter(team_id=team)
    return [price_json(price) for price in prices]


@router.post(
    "/prices",
    response={201: PriceOut, (400, 401, 403, 413): Error},
    url_name="api_prices",
    auth=ADMIN_WRITES,
)
def create_price(request: HttpRequest, payload: PriceIn) -> Any:
    """Set a model's price (team admins): USD per million input and output
    tokens, and optionally the batch API's (unset: half the online price).
    Setting it again replaces it (batch prices left out are unset again);
    jobs keep the price they were saved with."""
    membership = access.require_role(team_membership(request.auth, payload.team), Role.ADMIN)
    try:
        with transaction.atomic():
            price, _ = price_set(
                team=membership.team,
                provider=payload.provider,
                model=payload.model,
                input_per_mtok=payload.input_per_mtok,
                output_per_mtok=payload.output_per_mtok,
                batch_input_per_mtok=payload.batch_input_per_mtok,
                batch_output_per_mtok=payload.batch_output_per_mtok,
                actor=request.auth,
                via="api",
            )
    except PriceError as exc:
        raise invalid({exc.field: [exc.message]}) from None
    return Status(201, price_json(price))
