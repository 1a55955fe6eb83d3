"""A team's money settings as services: prices per provider and model, and the
monthly budget. Team admins change them (the pages and the API check the
role); every change is audited."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from django.db import transaction

from dashboard.core import clock
from dashboard.models import Price, Team
from providers import PROVIDERS

from .audit import audit

#: USD per million tokens: the columns hold six decimals, below a million.
MAX_PRICE = Decimal("100000")
#: USD a month: the column holds two decimals, below ten billion.
MAX_BUDGET = Decimal("1000000000")


class PriceError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def amount(value: Any, field: str, *, maximum: Decimal, places: int) -> Decimal:
    """A non-negative, finite amount no more than ``maximum``, rounded to
    ``places`` decimals (a float's 0.30000000000000004 is 0.3)."""
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise PriceError("Must be a number.", field) from None
    if not number.is_finite():
        raise PriceError("Must be a finite number.", field)
    if number < 0:
        raise PriceError("Must be zero or more.", field)
    if number > maximum:
        raise PriceError(f"Must be at most {maximum:,}.", field)
    return number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def price_set(
    *,
    team: Team,
    provider: str,
    model: str,
    input_per_mtok: Any,
    output_per_mtok: Any,
    actor: Any,
    via: str = "",
    batch_input_per_mtok: Any = None,
    batch_output_per_mtok: Any = None,
) -> tuple[Price, bool]:
    """Set the team's price for a model (USD per million input and output
    tokens, and optionally the batch API's: None leaves a batch price unset,
    which is half the online one); returns the price and whether it is new.
    Jobs keep the price they were saved with."""
    if provider not in PROVIDERS:
        raise PriceError(f"Unknown provider; one of {', '.join(PROVIDERS)}.", "provider")
    model = (model or "").strip()
    if not model:
        raise PriceError("Name the model, exactly as jobs name it.", "model")
    if len(model) > Price._meta.get_field("model").max_length:
        raise PriceError("At most 200 characters.", "model")
    prices = {
        "input_per_mtok": amount(input_per_mtok, "input_per_mtok", maximum=MAX_PRICE, places=6),
        "output_per_mtok": amount(output_per_mtok, "output_per_mtok", maximum=MAX_PRICE, places=6),
        **{
            name: None if value is None else amount(value, name, maximum=MAX_PRICE, places=6)
            for name, value in (
                ("batch_input_per_mtok", batch_input_per_mtok),
                ("batch_output_per_mtok", batch_output_per_mtok),
            )
        },
    }
    with transaction.atomic():
        price, created = Price.objects.update_or_create(
            team=team,
            provider=provider,
            model=model,
            defaults={**prices, "updated_by": actor, "updated_at": clock.now()},
        )
        audit(
            actor,
            team,
            "price.set",
            f"{provider} {model}",
            **{name: None if value is None else str(value) for name, value in prices.items()},
            **_via(via),
        )
    return price, created


def price_delete(price: Price, *, actor: Any, via: str = "") -> None:
    """The model has no price again: its new jobs show "no price set"."""
    with transaction.atomic():
        audit(actor, price.team, "price.deleted", f"{price.provider} {price.model}", **_via(via))
        price.delete()


def team_set_budget(*, team: Team, budget: Any, actor: Any, via: str = "") -> Decimal | None:
    """Set (or with None, remove) the team's monthly budget in USD. Running
    jobs go on whatever it becomes; it refuses new jobs only."""
    value = (
        None if budget is None else amount(budget, "monthly_usd", maximum=MAX_BUDGET - 1, places=2)
    )
    with transaction.atomic():
        old = (
            Team.objects.select_for_update()
            .values_list("monthly_budget_usd", flat=True)
            .get(pk=team.pk)
        )
        if old != value:
            Team.objects.filter(pk=team.pk).update(monthly_budget_usd=value)
            audit(
                actor,
                team,
                "team.budget_changed",
                team,
                old=None if old is None else str(old),
                new=None if value is None else str(value),
                **_via(via),
            )
    team.monthly_budget_usd = value
    return value


def _via(via: str) -> dict[str, str]:
    return {"via": via} if via else {}
