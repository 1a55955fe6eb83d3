"""What jobs cost: tokens from usage or estimated, the estimate before saving
(pasted prompts and a dataset's rendered rows alike), the actual cost when a
job ends (one job, or a poll round's many), and the monthly budget."""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from dashboard.accounts.prices import PriceError, amount, price_set, team_set_budget
from dashboard.core import clock
from dashboard.jobs import cost, worker
from dashboard.jobs.serialize import job_json
from dashboard.jobs.services import job_cancel, job_retry, job_transition
from dashboard.models import Item, Job, Price, Team
from providers import JobSpec
from tests.conftest import FakeClock, finish_items, make_credential, make_job, use_clock
from tests.jobs.test_engine_providers import Recorder

pytestmark = pytest.mark.django_db

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def price(team: Team, provider: str, model: str, given: str, taken: str) -> Price:
    return Price.objects.create(
        team=team,
        provider=provider,
        model=model,
        input_per_mtok=Decimal(given),
        output_per_mtok=Decimal(taken),
    )


def run(job: Job) -> Job:
    while worker.advance_job(job.pk) == "deferred":
        Job.objects.filter(pk=job.pk).update(next_check_at=None)
    job.refresh_from_db()
    return job


# --- tokens ----------------------------------------------------------------------------------


def test_usage_reported_by_the_provider_wins_over_the_estimate(team: Team, sims: Any) -> None:
    """The OpenAI-compatible simulator counts words; the estimate would count
    characters / 4. The job's tokens and cost are the reported ones."""
    sim = sims.get("openai")
    credential = make_credential(team, "openai", base_url=sim.base_url)
    price(team, "openai", MODEL, "2", "10")
    prompt = "one two three four five six seven eight nine ten eleven twelve"
    job = run(make_job(credential, [prompt], model=MODEL, max_tokens=8))

    item = job.items.get()
    assert job.status == "completed", job.error
    assert item.tokens_in == len(prompt.split()) != cost.estimate_tokens(prompt)
    assert item.tokens_estimated is False and job.tokens_estimated is False
    expected = (Decimal(item.tokens_in) * 2 + Decimal(item.tokens_out) * 10) / 1_000_000
    assert job.cost_actual == expected.quantize(Decimal("0.000001")) > 0
    assert job_json(job)["cost"] == {
        "estimated": float(job.cost_estimated),
        "actual": float(expected),
    }


def test_without_usage_the_tokens_are_estimated_and_marked(team: Team, sims: Any) -> None:
    credential = make_credential(team, "together", base_url=sims.get("together").base_url)
    price(team, "together", "test-model", "1", "1")
    job = run(make_job(credential, ["x" * 40], max_tokens=5))

    item = job.items.get()
    assert item.tokens_in == 10 and item.tokens_estimated is True
    assert job.tokens_estimated is True
    assert job.cost_actual == Decimal(10 + item.tokens_out) / 1_000_000


def test_an_unpriced_model_has_no_cost_never_zero(team: Team, sims: Any) -> None:
    credential = make_credential(team, "together", base_url=sims.get("together").base_url)
    price(team, "together", "another-model", "1", "1")  # a price, but not for this model
    job = run(make_job(credential, ["hello"]))

    assert job.status == "completed"
    assert (job.cost_estimated, job.cost_actual, job.cost_so_far) == (None, None, None)
    assert job_json(job)["cost"] == {"estimated": None, "actual": None}
    assert cost.money(job.cost_so_far) == "no price set"


# --- the estimate ----------------------------------------------------------------------------


def test_the_estimate_counts_prompts_max_tokens_and_the_price(team: Team) -> None:
    price(team, "together", "m", "3", "15")
    prompts = ["a" * 8, "b" * 20]  # 2 and 5 tokens

    answer = cost.estimate(team, "together", "m", prompts, 100)

    cost_usd = (7 * 3 + 200 * 15) / 1_000_000
    batch_usd = float(Decimal(7 * 3 + 200 * 15) / 2 / 1_000_000)
    assert answer == {
        "items": 2,
        "tokens_in": 7,
        "tokens_out_max": 200,
        "cost": cost_usd,
        "cost_online": cost_usd,
        "cost_batch": float(Decimal(str(batch_usd)).quantize(Decimal("0.000001"))),
    }
    unpriced = cost.estimate(team, "together", "other", prompts, 100)
    assert unpriced["cost"] is None and unpriced["tokens_in"] == 7
    assumed = cost.estimate_of(team, "together", "m", prompts, None)
    assert assumed.max_tokens_assumed and assumed.tokens_out_max == 2 * cost.DEFAULT_MAX_TOKENS


def test_an_estimate_for_a_dataset_job_is_the_same_call_on_its_rendered_rows(
    team: Team, alice: User
) -> None:
    """A dataset job's prompts are its rows through the template: the estimate
    of those rendered prompts is what the saved job records."""
    price(team, "together", "m", "0.5", "1.5")
    rows = [{"name": f"Person {i}", "bio": "x" * (i % 50)} for i in range(3000)]
    template = "Summarise {name} in one line: {bio}"
    prompts = [template.format(**row) for row in rows]

    answer = cost.estimate(team, "together", "m", iter(prompts), 64)

    assert answer["items"] == 3000
    assert answer["tokens_in"] == sum(cost.estimate_tokens(p) for p in prompts)
    assert answer["tokens_out_max"] == 3000 * 64
    job = make_job(make_credential(team), prompts, user=alice, model="m", max_tokens=64)
    assert float(job.cost_estimated) == pytest.approx(answer["cost"])


def test_the_system_prompt_and_the_question_count_on_every_item(team: Team) -> None:
    spec = JobSpec(model="m", prompts=["a" * 4, "b" * 4], system_prompt="s" * 40, max_tokens=1)
    assert cost.spec_estimate(team, "together", spec).tokens_in == 2 * (1 + 10)


def test_a_job_keeps_the_price_it_was_saved_with(team: Team, alice: User) -> None:
    price(team, "together", "m", "1", "2")
    job = make_job(make_credential(team), ["hello"], user=alice, model="m", max_tokens=10)
    Price.objects.filter(team=team).update(input_per_mtok=100, output_per_mtok=200)
    finish_items(job, ["abcd"])
    job_transition(job.pk, "running")
    assert job_transition(job.pk, "completed")

    job.refresh_from_db()
    assert (job.price_input_per_mtok, job.price_output_per_mtok) == (1, 2)
    assert job.cost_actual == Decimal(2 * 1 + 1 * 2) / 1_000_000


def test_a_cancelled_job_costs_what_its_finished_items_used(team: Team, alice: User) -> None:
    price(team, "together", "m", "1000", "1000")
    job = make_job(make_credential(team), ["a" * 40, "b" * 40], user=alice, model="m")
    finish_items(job, ["c" * 8])  # the first item: 10 + 2 tokens
    assert job_cancel(job)
    job.refresh_from_db()
    assert job.status == "cancelled" and job.cost_actual == Decimal("0.012")


def test_a_poll_round_writes_the_cost_of_every_job_it_ends(
    team: Team, sims: Any, sim_clock: FakeClock
) -> None:
    sim = use_clock(sims.get("mymagic"), sim_clock, step_seconds=1.0)
    credential = make_credential(team, "mymagic", base_url=sim.base_url)
    price(team, "mymagic", "llama3_70b", "4", "8")
    job = make_job(credential, ["Paris", "Rome"], model="llama3_70b", question="Q?", max_tokens=20)

    job = Recorder(credential, sim_clock).run(job)

    assert job.status == "completed"
    assert job.cost_actual == cost.tokens_cost(job.tokens_in, job.tokens_out, 4, 8) > 0


# --- amounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "problem"),
    [("-1", "zero or more"), ("nan", "finite"), ("abc", "number"), ("1e9", "at most")],
)
def test_amounts_are_refused_with_a_reason(value: str, problem: str) -> None:
    with pytest.raises(PriceError, match=problem):
        amount(value, "x", maximum=Decimal(1000), places=2)


def test_amounts_are_rounded_to_their_places() -> None:
    assert amount(0.1 + 0.2, "x", maximum=Decimal(10), places=6) == Decimal("0.3")


def test_setting_a_price_twice_updates_it_and_is_audited(team: Team, alice: User) -> None:
    first, created = price_set(
        team=team,
        provider="together",
        model=" m ",
        input_per_mtok="1",
        output_per_mtok=2,
        actor=alice,
    )
    again, created_again = price_set(
        team=team,
        provider="together",
        model="m",
        input_per_mtok="3",
        output_per_mtok=4,
        actor=alice,
    )
    assert created and not created_again and first.pk == again.pk
    assert (again.model, again.input_per_mtok, again.output_per_mtok) == ("m", 3, 4)
    assert team.audit_events.filter(action="price.set").count() == 2


# --- the budget ------------------------------------------------------------------------------


def test_a_job_past_the_budget_is_refused_and_nothing_is_saved(team: Team, alice: User) -> None:
    price(team, "together", "m", "1000", "1000")  # $0.001 a token
    team_set_budget(team=team, budget="1.00", actor=alice)
    credential = make_credential(team)
    kept = make_job(credential, ["a" * 400], user=alice, model="m", max_tokens=400)  # $0.50
    jobs, items = Job.objects.count(), Item.objects.count()

    with pytest.raises(cost.BudgetExceeded, match="budget") as refused:
        make_job(credential, ["b" * 800], user=alice, model="m", max_tokens=400)  # $0.60

    assert "$0.6000" in str(refused.value) and "$1.00" in str(refused.value)
    assert (Job.objects.count(), Item.objects.count()) == (jobs, items)
    make_job(credential, ["c" * 400], user=alice, model="m", max_tokens=400)  # $0.50 fits
    assert cost.month_spent(team) == Decimal("1.000000")
    kept.refresh_from_db()
    assert kept.status == "pending"


def test_a_retry_past_the_budget_is_refused_too(team: Team, alice: User) -> None:
    price(team, "together", "m", "1000", "1000")
    credential = make_credential(team)
    job = make_job(credential, ["a" * 400], user=alice, model="m", max_tokens=400)
    job_transition(job.pk, "failed")
    team_set_budget(team=team, budget="0.10", actor=alice)
    with pytest.raises(ValueError, match="budget"):
        job_retry(job, user=alice)
    assert not job.retries.exists()


def test_running_jobs_are_not_stopped_by_a_budget(team: Team, alice: User, sims: Any) -> None:
    credential = make_credential(team, "together", base_url=sims.get("together").base_url)
    price(team, "together", "test-model", "1000", "1000")
    job = make_job(credential, ["hello there"], user=alice, max_tokens=5)
    team_set_budget(team=team, budget="0", actor=alice)  # now far below what it may spend

    job = run(job)

    assert job.status == "completed" and job.cost_actual > 0
    assert cost.budget_status(team).over


def test_ended_jobs_count_their_actual_cost_running_ones_their_estimate(
    team: Team, alice: User
) -> None:
    price(team, "together", "m", "1000", "1000")
    credential = make_credential(team)
    ended = make_job(credential, ["a" * 40], user=alice, model="m", max_tokens=100)  # est. 0.11
    finish_items(ended, ["b" * 8])  # 10 + 2 tokens: 0.012
    job_transition(ended.pk, "completed")
    make_job(credential, ["a" * 40], user=alice, model="m", max_tokens=100)  # est. 0.11
    make_job(credential, ["unpriced"], user=alice, model="free")
    assert cost.month_spent(team) == Decimal("0.122")


def test_the_month_is_the_site_time_zone_s_month(
    team: Team, alice: User, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job saved at 23:30 on 31 January in New York (04:30 UTC on 1 February)
    is January's; at 00:30 on 1 February local time, February has spent nothing."""
    settings.TIME_ZONE = "America/New_York"
    ny = zoneinfo.ZoneInfo("America/New_York")
    price(team, "together", "m", "1000", "1000")
    team_set_budget(team=team, budget="0.50", actor=alice)
    job = make_job(make_credential(team), ["a" * 400], user=alice, model="m", max_tokens=100)
    Job.objects.filter(pk=job.pk).update(created_at=datetime(2025, 1, 31, 23, 30, tzinfo=ny))

    january = datetime(2025, 1, 31, 23, 45, tzinfo=ny)
    february = datetime(2025, 2, 1, 0, 30, tzinfo=ny)
    assert cost.month_spent(team, january) == Decimal("0.2")
    assert cost.month_spent(team, february) == 0
    with timezone.override("Asia/Tokyo"):  # a user's zone changes nobody's budget
        assert cost.month_spent(team, january) == Decimal("0.2")
        assert cost.month_spent(team, february) == 0
    assert cost.budget_status(team, february).month == "2025-02"
    monkeypatch.setattr(clock, "now", lambda: january)
    with pytest.raises(cost.BudgetExceeded, match="January 2025"):
        make_job(make_credential(team), ["b" * 1000], user=alice, model="m", max_tokens=100)
    monkeypatch.setattr(clock, "now", lambda: february)
    make_job(make_credential(team), ["b" * 1000], user=alice, model="m", max_tokens=100)
