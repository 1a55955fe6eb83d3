"""What batch mode costs: a price's batch prices (half the online ones when
unset), estimates in both modes side by side, a batch job's actual cost at
the price it was saved with, and the usage figures split by mode (each still
one aggregate query)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard.accounts.prices import PriceError, price_set
from dashboard.jobs import cost, usage
from dashboard.jobs.services import job_create, job_transition
from dashboard.models import Job, Price, Team
from dashboard.web import charts
from providers import JobSpec
from tests.conftest import finish_items, make_credential, make_job

pytestmark = pytest.mark.django_db


def price(team: Team, given: str = "3", taken: str = "15", **batch: str) -> Price:
    return Price.objects.create(
        team=team,
        provider="openai",
        model="m",
        input_per_mtok=Decimal(given),
        output_per_mtok=Decimal(taken),
        **{name: Decimal(value) for name, value in batch.items()},
    )


# --- batch prices -------------------------------------------------------------------------------


def test_batch_prices_default_to_half_the_online_ones(team: Team) -> None:
    online = price(team, "3", "15.000001")

    assert cost.mode_rates(online, "online") == (Decimal("3"), Decimal("15.000001"))
    # Half, kept to the columns' six decimals (rounded half up).
    assert cost.mode_rates(online, "batch") == (Decimal("1.5"), Decimal("7.500001"))
    assert cost.mode_rates(None, "batch") is None


def test_explicit_batch_prices_are_used_each_on_its_own(team: Team) -> None:
    both = price(team, "3", "15", batch_input_per_mtok="1", batch_output_per_mtok="4")
    assert cost.mode_rates(both, "batch") == (Decimal("1"), Decimal("4"))
    both.batch_output_per_mtok = None  # only the input set: the output is half
    assert cost.mode_rates(both, "batch") == (Decimal("1"), Decimal("7.5"))
    both.batch_input_per_mtok = Decimal(0)  # zero is a price, not "unset"
    assert cost.mode_rates(both, "batch") == (Decimal("0"), Decimal("7.5"))


def test_the_estimate_gives_both_modes_and_the_asked_one_as_cost(team: Team) -> None:
    price(team, "2", "10", batch_input_per_mtok="1", batch_output_per_mtok="2")
    prompts = ["a" * 40, "b" * 8]  # 10 and 2 tokens

    online = cost.estimate_of(team, "openai", "m", prompts, 10)
    batch = cost.estimate_of(team, "openai", "m", prompts, 10, mode="batch")

    assert online.cost_online == Decimal(12 * 2 + 20 * 10) / 1_000_000
    assert online.cost_batch == Decimal(12 * 1 + 20 * 2) / 1_000_000
    assert (online.cost, batch.cost) == (online.cost_online, online.cost_batch)
    assert (batch.cost_online, batch.cost_batch) == (online.cost_online, online.cost_batch)
    assert batch.rates == (Decimal(1), Decimal(2)) and online.rates == (Decimal(2), Decimal(10))
    assert batch.as_json() == {
        "items": 2,
        "tokens_in": 12,
        "tokens_out_max": 20,
        "cost": float(online.cost_batch),
        "cost_online": float(online.cost_online),
        "cost_batch": float(online.cost_batch),
    }
    unpriced = cost.estimate_of(team, "openai", "other", prompts, 10, mode="batch")
    assert (unpriced.cost, unpriced.cost_online, unpriced.cost_batch) == (None, None, None)


def test_price_set_keeps_batch_prices_and_unsets_them_again(team: Team, alice: User) -> None:
    saved, _ = price_set(
        team=team,
        provider="openai",
        model="m",
        input_per_mtok="2",
        output_per_mtok="8",
        batch_input_per_mtok="0.9",
        batch_output_per_mtok=3.3,
        actor=alice,
    )
    assert (saved.batch_input_per_mtok, saved.batch_output_per_mtok) == (
        Decimal("0.9"),
        Decimal("3.3"),
    )
    event = team.audit_events.get(action="price.set")
    assert event.details["batch_input_per_mtok"] == "0.900000"

    again, created = price_set(
        team=team, provider="openai", model="m", input_per_mtok=2, output_per_mtok=8, actor=alice
    )
    assert not created and again.batch_input_per_mtok is None
    assert again.batch_output_per_mtok is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [("-1", "zero or more"), ("inf", "finite"), ("NaN", "finite"), ("x", "number")],
)
def test_bad_batch_prices_are_refused_naming_the_field(
    team: Team, alice: User, value: str, problem: str
) -> None:
    with pytest.raises(PriceError) as refused:
        price_set(
            team=team,
            provider="openai",
            model="m",
            input_per_mtok=1,
            output_per_mtok=1,
            batch_output_per_mtok=value,
            actor=alice,
        )
    assert refused.value.field == "batch_output_per_mtok"
    assert problem in refused.value.message
    assert not Price.objects.exists()


# --- a batch job's actual cost ------------------------------------------------------------------


def test_a_batch_job_keeps_the_batch_price_and_its_actual_cost_uses_it(
    team: Team, alice: User
) -> None:
    price(team, "2", "10")  # no batch price: half
    credential = make_credential(team, "openai")
    job = job_create(
        team=team,
        credential=credential,
        spec=JobSpec(prompts=["a" * 40], model="m", max_tokens=10),
        user=alice,
        mode="batch",
    )
    assert job.mode == "batch"
    assert (job.price_input_per_mtok, job.price_output_per_mtok) == (Decimal(1), Decimal(5))
    assert job.cost_estimated == Decimal(10 * 1 + 10 * 5) / 1_000_000

    finish_items(job, ["out"])
    job.items.update(tokens_in=100, tokens_out=20)
    Job.objects.filter(pk=job.pk).update(tokens_in=100, tokens_out=20)
    job_transition(job.pk, "completed")
    job.refresh_from_db()

    assert job.cost_actual == Decimal(100 * 1 + 20 * 5) / 1_000_000


# --- usage by mode ------------------------------------------------------------------------------


def ended(team: Team, user: User, *, mode: str, usd: str) -> Job:
    job = make_job(make_credential(team, "openai"), ["x"], user=user, model="m")
    Job.objects.filter(pk=job.pk).update(mode=mode)
    job_transition(job.pk, "completed")
    Job.objects.filter(pk=job.pk).update(cost_actual=Decimal(usd))
    return job


def test_usage_splits_spend_by_mode_in_one_query_each(team: Team, alice: User) -> None:
    ended(team, alice, mode="online", usd="0.40")
    ended(team, alice, mode="batch", usd="0.10")
    ended(team, alice, mode="batch", usd="0.05")
    period = usage.last_days()

    with CaptureQueriesContext(connection) as queries:
        spent = usage.spend_per_day(team, period)
    assert len(queries) == 1
    assert [sum(days.values()) for days in (spent["online"], spent["batch"])] == [
        Decimal("0.40"),
        Decimal("0.15"),
    ]

    with CaptureQueriesContext(connection) as queries:
        rows = usage.by_provider(team, period)
    assert len(queries) == 1
    assert [
        (r["provider"], r["jobs"], r["jobs_batch"], r["cost"], r["cost_online"], r["cost_batch"])
        for r in rows
    ] == [("openai", 3, 2, Decimal("0.55"), Decimal("0.40"), Decimal("0.15"))]

    with CaptureQueriesContext(connection) as queries:
        chart = charts.spend_chart(team, period)
        chart.svg()
    assert len(queries) == 1
    assert chart.headers == ["Day", "Online", "Batch", "All"]
    today = [row for row in chart.rows if row[1] != "—"]
    assert today and today[0][1:] == ["$0.4000", "$0.1500", "$0.5500"]
    assert "$0.1500 of it in batch mode" in chart.summary


def test_a_provider_with_only_online_jobs_has_no_batch_cost(team: Team, alice: User) -> None:
    ended(team, alice, mode="online", usd="0.40")
    (row,) = usage.month_usage(team)
    assert (row["jobs_batch"], row["cost_online"], row["cost_batch"]) == (0, Decimal("0.40"), None)
