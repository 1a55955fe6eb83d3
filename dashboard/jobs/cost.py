"""What jobs cost: the estimate before a job is saved, the actual cost when it
ends, and the team's monthly budget.

Money is ``Decimal`` USD here and on the rows (floats only on the way out, in
``as_json``/``job_cost``). A model the team has not priced has no cost: None,
shown as "no price set", never $0. Tokens are the provider's usage where it
reports one, else about four characters a token (``items.estimate_tokens``),
marked as estimates wherever shown.

Other code calls :func:`estimate` (any list of rendered prompts: pasted ones,
a dataset's rows through its template, a comparison's target) and
:func:`job_cost`; :func:`budget_check` runs inside ``job_create``.

A job runs ``online`` (one call per item) or in ``batch`` mode (the
provider's batch API): a price may set batch prices of its own, else a batch
token costs half the online one (:func:`mode_rates`). An estimate gives both
modes side by side, and its ``cost`` is the asked mode's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db.models import Case, DecimalField, ExpressionWrapper, F, Q, Sum, Value, When
from django.db.models.functions import Cast, Coalesce
from django.utils import timezone

from dashboard.core import clock
from dashboard.models import MTOK, Job, Price, Team, tokens_cost
from dashboard.status import JOB_ACTIVE
from providers import JobSpec

from .items import estimate_tokens

#: Output tokens assumed per item when the job sets no max_tokens (the
#: estimate says so): an upper bound needs some number, and providers'
#: own defaults range from 10 (MyMagic) to the model's context.
DEFAULT_MAX_TOKENS = 512

#: The cost columns' type, for expressions the database computes.
COST_FIELD = DecimalField(max_digits=20, decimal_places=6)

#: The job modes (``Job.Mode``'s values), and the share of the online price a
#: batch token costs when the price sets no batch price of its own.
ONLINE, BATCH = "online", "batch"
MODES = (ONLINE, BATCH)
BATCH_SHARE = Decimal("0.5")
#: The price columns' precision (six decimals).
PRICE_QUANTUM = Decimal("0.000001")


class BudgetExceeded(ValueError):
    """A job whose estimate would take its team past the monthly budget.
    A ValueError, so the services' callers that turn refusals into a 409 or
    a message on the page (retry, for one) do so for this too."""


def mode_rates(price: Price | None, mode: str = ONLINE) -> tuple[Decimal, Decimal] | None:
    """USD per million input and output tokens in ``mode`` at ``price``: the
    online prices, or for a batch the price's batch prices, each one unset
    being half its online price (six decimals, as the columns keep them).
    None without a price. These are what a job keeps as its price."""
    if price is None:
        return None
    if mode != BATCH:
        return price.input_per_mtok, price.output_per_mtok
    return (
        _batch_rate(price.batch_input_per_mtok, price.input_per_mtok),
        _batch_rate(price.batch_output_per_mtok, price.output_per_mtok),
    )


def _batch_rate(explicit: Decimal | None, online: Decimal) -> Decimal:
    if explicit is not None:
        return explicit
    return (Decimal(online) * BATCH_SHARE).quantize(PRICE_QUANTUM, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Estimate:
    items: int
    tokens_in: int
    tokens_out_max: int
    #: USD in the asked mode; None when the team has no price for the model.
    cost: Decimal | None
    price: Price | None
    #: Output tokens per item counted in ``tokens_out_max``.
    max_tokens: int
    #: True when the job sets no max_tokens and DEFAULT_MAX_TOKENS was assumed.
    max_tokens_assumed: bool
    #: The asked mode (``cost`` is its), and each mode's cost (None unpriced).
    mode: str = ONLINE
    cost_online: Decimal | None = None
    cost_batch: Decimal | None = None
    #: Each mode's USD per million input and output tokens (None unpriced).
    online_rates: tuple[Decimal, Decimal] | None = None
    batch_rates: tuple[Decimal, Decimal] | None = None

    @property
    def rates(self) -> tuple[Decimal, Decimal] | None:
        """The asked mode's USD per million input and output tokens: the
        price the job keeps (None without a price)."""
        return self.batch_rates if self.mode == BATCH else self.online_rates

    @property
    def batch_saving(self) -> Decimal | None:
        """What batch mode saves against online, in USD (None unpriced)."""
        if self.cost_online is None or self.cost_batch is None:
            return None
        return self.cost_online - self.cost_batch

    def as_json(self) -> dict[str, Any]:
        """DESIGN's ``{"items", "tokens_in", "tokens_out_max", "cost",
        "cost_online", "cost_batch"}`` (``cost``: the asked mode's)."""
        return {
            "items": self.items,
            "tokens_in": self.tokens_in,
            "tokens_out_max": self.tokens_out_max,
            "cost": usd(self.cost),
            "cost_online": usd(self.cost_online),
            "cost_batch": usd(self.cost_batch),
        }


def usd(amount: Decimal | None) -> float | None:
    return None if amount is None else float(amount)


def price_for(team: Team | int, provider: str, model: str) -> Price | None:
    team_id = team.pk if isinstance(team, Team) else team
    return Price.objects.filter(team_id=team_id, provider=provider, model=model).first()


def estimate_of(
    team: Team | int,
    provider: str,
    model: str,
    prompts: Iterable[str],
    max_tokens: int | None,
    *,
    per_item: str = "",
    mode: str = ONLINE,
) -> Estimate:
    """The estimate for these rendered prompts: their tokens (plus ``per_item``,
    text sent with every prompt: a system prompt, MyMagic's question), up to
    ``max_tokens`` out per item, at the team's price for the model, in both
    modes (``cost`` is ``mode``'s)."""
    extra = estimate_tokens(per_item) if per_item else 0
    items = tokens_in = 0
    for prompt in prompts:
        items += 1
        tokens_in += estimate_tokens(prompt) + extra
    per_item_out = max_tokens if max_tokens else DEFAULT_MAX_TOKENS
    tokens_out_max = items * per_item_out
    price = price_for(team, provider, model)
    rates = {each: mode_rates(price, each) for each in MODES}
    costs = {
        each: None if rates[each] is None else tokens_cost(tokens_in, tokens_out_max, *rates[each])
        for each in MODES
    }
    mode = BATCH if mode == BATCH else ONLINE
    return Estimate(
        items=items,
        tokens_in=tokens_in,
        tokens_out_max=tokens_out_max,
        cost=costs[mode],
        price=price,
        max_tokens=per_item_out,
        max_tokens_assumed=not max_tokens,
        mode=mode,
        cost_online=costs[ONLINE],
        cost_batch=costs[BATCH],
        online_rates=rates[ONLINE],
        batch_rates=rates[BATCH],
    )


def estimate(
    team: Team | int,
    provider: str,
    model: str,
    prompts: Iterable[str],
    max_tokens: int | None,
    *,
    mode: str = ONLINE,
) -> dict[str, Any]:
    """``{"items", "tokens_in", "tokens_out_max", "cost", "cost_online",
    "cost_batch"}`` for any list of rendered prompts (costs: USD as floats,
    None without a price; ``cost``: ``mode``'s)."""
    return estimate_of(team, provider, model, prompts, max_tokens, mode=mode).as_json()


def spec_estimate(team: Team | int, provider: str, spec: JobSpec, mode: str = ONLINE) -> Estimate:
    """The estimate of a job spec: its prompts, with the system prompt and the
    question counted on every one, in both modes; ``cost`` is ``mode``'s, and
    in ``mode="batch"`` ``price`` is the batch one, which a batch job keeps."""
    per_item = "\n".join(part for part in (spec.system_prompt, spec.question) if part)
    found = estimate_of(
        team, provider, spec.model, spec.prompts, spec.max_tokens, per_item=per_item, mode=mode
    )
    if found.mode != BATCH or found.price is None:
        return found
    return replace(found, price=batch_price(found.price))


def batch_price(price: Price) -> Price:
    """The price of a batch item, as an unsaved Price: the batch prices where
    set, else half the online ones (:func:`mode_rates`)."""
    rates = mode_rates(price, BATCH)
    assert rates is not None
    return Price(
        team_id=price.team_id,
        provider=price.provider,
        model=price.model,
        input_per_mtok=rates[0],
        output_per_mtok=rates[1],
    )


def job_cost(job: Job) -> dict[str, float | None]:
    """``{"estimated", "actual"}`` in USD: the estimate made when the job was
    saved, and the cost of its items' tokens (final once the job ended, so
    far while it runs). Both None when the model had no price."""
    return {"estimated": usd(job.cost_estimated), "actual": usd(job.cost_so_far)}


def actual_cost_expression() -> Case:
    """``cost_actual`` computed by the database from the row's own token sums
    and price, for the UPDATE that ends a job (one statement for one job or
    a poll round's many). Null without a price."""
    tokens_in = Cast("tokens_in", DecimalField(max_digits=20, decimal_places=0))
    tokens_out = Cast("tokens_out", DecimalField(max_digits=20, decimal_places=0))
    # Times a millionth, not divided by a million: SQLite keeps whole numbers
    # in decimal columns and would divide them as integers.
    cost = ExpressionWrapper(
        (tokens_in * F("price_input_per_mtok") + tokens_out * F("price_output_per_mtok"))
        * Value(1 / MTOK),
        output_field=COST_FIELD,
    )
    return Case(
        When(Q(price_input_per_mtok__isnull=False), then=cost),
        default=Value(None, output_field=COST_FIELD),
        output_field=COST_FIELD,
    )


# --- the monthly budget ----------------------------------------------------------------


def site_zone() -> tzinfo:
    """settings.TIME_ZONE: the team's months and days, whatever time zone a
    request may have activated for its user (a budget must not depend on who
    submits)."""
    return timezone.get_default_timezone()


def month_start(at: datetime | None = None) -> datetime:
    """Midnight of the first of the month in settings.TIME_ZONE (the team's
    month), as an aware datetime."""
    local = timezone.localtime(at or clock.now(), site_zone())
    return timezone.make_aware(datetime(local.year, local.month, 1), site_zone())


def month_after(start: datetime) -> datetime:
    local = timezone.localtime(start, site_zone())
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return timezone.make_aware(datetime(year, month, 1), site_zone())


def month_spent(team: Team | int, at: datetime | None = None) -> Decimal:
    """What the month's jobs (by the day they were saved) cost: the actual
    cost of those that ended, and the estimate of those still running (they
    may still spend it). Unpriced jobs count nothing: their cost is unknown."""
    start = month_start(at)
    team_id = team.pk if isinstance(team, Team) else team
    zero = Value(Decimal(0), output_field=COST_FIELD)
    spent = Job.objects.filter(
        team_id=team_id, created_at__gte=start, created_at__lt=month_after(start)
    ).aggregate(
        spent=Sum(
            Case(
                When(status__in=list(JOB_ACTIVE), then=Coalesce("cost_estimated", zero)),
                default=Coalesce("cost_actual", zero),
                output_field=COST_FIELD,
            )
        )
    )["spent"]
    return Decimal(spent or 0).quantize(Decimal("0.000001"))


@dataclass(frozen=True)
class BudgetStatus:
    month: str  # "2025-06"
    month_label: str  # "June 2025"
    budget: Decimal | None
    spent: Decimal

    @property
    def left(self) -> Decimal | None:
        return None if self.budget is None else self.budget - self.spent

    @property
    def percent(self) -> int:
        if not self.budget:
            return 100 if self.budget is not None and self.spent > 0 else 0
        return int(min(100, self.spent * 100 / self.budget))

    @property
    def over(self) -> bool:
        return self.budget is not None and self.spent > self.budget


def budget_status(team: Team, at: datetime | None = None) -> BudgetStatus:
    start = timezone.localtime(month_start(at), site_zone())
    return BudgetStatus(
        month=f"{start:%Y-%m}",
        month_label=f"{start:%B %Y}",
        budget=team.monthly_budget_usd,
        spent=month_spent(team, at),
    )


def budget_check(team: Team, cost: Decimal | None, *, lock: bool = True) -> None:
    """Raise BudgetExceeded when ``cost`` would take the team past its monthly
    budget. Inside a transaction, ``lock`` first takes the row of a team that
    has a budget (FOR NO KEY UPDATE on PostgreSQL: two submissions at once
    queue there, so they cannot both fit in what is left, while the rows
    workers insert that refer to the team are not held up), and reads the
    budget there, fresh."""
    rows = Team.objects.filter(pk=team.pk)
    budget = rows.values_list("monthly_budget_usd", flat=True).first()
    if budget is None:
        return
    if lock:
        budget = (
            rows.select_for_update(no_key=True).values_list("monthly_budget_usd", flat=True).first()
        )
        if budget is None:
            return
    spent = month_spent(team)
    if spent + (cost or 0) <= budget:
        return
    month = f"{timezone.localtime(clock.now(), site_zone()):%B %Y}"
    left = max(Decimal(0), budget - spent)
    what = (
        f"This job's estimated cost of {money(cost)} would take {team.name} past"
        if cost
        else f"{team.name} is already past"
    )
    raise BudgetExceeded(
        f"{what} its monthly budget of {money(budget)} ({money(spent)} spent or committed "
        f"in {month}, {money(left)} left). Submit fewer prompts or a lower max tokens, "
        "or ask a team admin to raise the budget."
    )


def money(amount: Decimal | float | None) -> str:
    """$1,234.56; four decimals below a dollar and six below a hundredth of a
    cent, so a small job never reads $0.00. None: "no price set"."""
    if amount is None:
        return "no price set"
    value = Decimal(str(amount))
    if not value or abs(value) >= 1:
        return f"${value:,.2f}"
    if abs(value) >= Decimal("0.0001"):
        return f"${value:,.4f}"
    return f"${value:,.6f}"
