"""DESIGN's cost rows: POST /jobs with dry_run and the budget's 409, GET
/usage, PUT /budget, POST and GET /prices; malformed bodies included."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from dashboard.jobs.services import job_transition
from dashboard.models import Item, Job, Price, Team
from tests.api.conftest import Api, assert_error
from tests.conftest import finish_items, make_credential, make_job

pytestmark = pytest.mark.django_db


def set_price(team: Team, model: str = "m", given: str = "1000", taken: str = "1000") -> Price:
    return Price.objects.create(
        team=team,
        provider="together",
        model=model,
        input_per_mtok=Decimal(given),
        output_per_mtok=Decimal(taken),
    )


# --- dry run and the budget ------------------------------------------------------------------


def test_a_dry_run_answers_the_estimate_and_saves_nothing(bob_api: Api, team: Team) -> None:
    credential = make_credential(team)
    set_price(team, "m", "2", "4")
    body = {
        "credential": credential.pk,
        "model": "m",
        "prompts": ["a" * 40, "b" * 8],
        "max_tokens": 10,
    }

    response = bob_api.post("jobs", {**body, "dry_run": True})

    assert response.status_code == 200, response.content
    cost = (12 * 2 + 20 * 4) / 1_000_000
    assert response.json() == {
        "estimate": {
            "items": 2,
            "tokens_in": 12,
            "tokens_out_max": 20,
            "cost": cost,
            "cost_online": cost,
            "cost_batch": cost / 2,
        }
    }
    assert not Job.objects.exists() and not team.audit_events.exists()
    unpriced = bob_api.post("jobs", {**body, "model": "other", "dry_run": True}).json()
    assert unpriced["estimate"]["cost"] is None


def test_a_dry_run_is_refused_like_the_job_would_be(bob_api: Api, team: Team) -> None:
    credential = make_credential(team)
    body = {"credential": credential.pk, "model": "m", "prompts": [" "], "dry_run": True}
    assert_error(bob_api.post("jobs", body), 400, "prompts")
    assert_error(bob_api.post("jobs", {**body, "dry_run": "yes"}), 400, "dry_run")


def test_a_job_past_the_budget_is_a_409_that_says_budget_and_saves_nothing(
    bob_api: Api, team: Team
) -> None:
    credential = make_credential(team)
    set_price(team)
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=Decimal("0.50"))
    body = {"credential": credential.pk, "model": "m", "prompts": ["a" * 400], "max_tokens": 400}
    assert bob_api.post("jobs", body).status_code == 201  # $0.50: exactly the budget
    jobs, items, audits = Job.objects.count(), Item.objects.count(), team.audit_events.count()

    refused = assert_error(bob_api.post("jobs", body), 409)

    assert "budget" in refused["error"] and "$0.50" in refused["error"]
    assert (Job.objects.count(), Item.objects.count()) == (jobs, items)
    assert team.audit_events.count() == audits
    dry = bob_api.post("jobs", {**body, "dry_run": True})
    assert dry.status_code == 200  # a dry run only tells


def test_a_retry_past_the_budget_is_a_409(bob_api: Api, team: Team, bob: Any) -> None:
    set_price(team)
    job = make_job(make_credential(team), ["a" * 400], user=bob, model="m", max_tokens=400)
    job_transition(job.pk, "failed")
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=Decimal("0.40"))
    body = assert_error(bob_api.post(f"jobs/{job.pk}/retry"), 409)
    assert "budget" in body["error"] and not job.retries.exists()


def test_the_job_answer_carries_its_cost(bob_api: Api, team: Team, bob: Any) -> None:
    set_price(team, "m", "1000", "1000")
    job = make_job(make_credential(team), ["a" * 40], user=bob, model="m", max_tokens=10)
    finish_items(job, ["b" * 8])
    running = bob_api.get(f"jobs/{job.pk}").json()["cost"]
    assert running == {"estimated": 0.02, "actual": 0.012}  # 10 + 10 max; 10 + 2 so far
    job_transition(job.pk, "completed")
    assert bob_api.get(f"jobs/{job.pk}").json()["cost"] == {"estimated": 0.02, "actual": 0.012}
    listed = bob_api.get("jobs").json()["results"][0]["cost"]
    assert listed == {"estimated": 0.02, "actual": 0.012}


# --- usage -----------------------------------------------------------------------------------


def test_usage_gives_the_month_budget_spent_and_providers(
    bob_api: Api, team: Team, bob: Any
) -> None:
    set_price(team)
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=Decimal("12.5"))
    job = make_job(make_credential(team), ["a" * 40, "b"], user=bob, model="m", max_tokens=10)
    finish_items(job, ["c" * 8], {1: "boom"})
    job.items.filter(index=0).update(latency_ms=120)
    job_transition(job.pk, "completed")
    make_job(make_credential(team, "lamini"), ["x"], user=bob, model="free")  # unpriced, running

    answer = bob_api.get("usage").json()

    assert answer["month"] == Job.objects.get(pk=job.pk).created_at.strftime("%Y-%m")
    assert (answer["team"], answer["budget"], answer["spent"]) == (team.pk, 12.5, 0.012)
    assert answer["by_provider"] == [
        {
            "provider": "lamini",
            "jobs": 1,
            "items": 1,
            "failed": 0,
            "cost": None,
            "jobs_batch": 0,
            "cost_online": None,
            "cost_batch": None,
            "latency_ms_p50": None,
            "latency_ms_p95": None,
        },
        {
            "provider": "together",
            "jobs": 1,
            "items": 2,
            "failed": 1,
            "cost": 0.012,
            "jobs_batch": 0,
            "cost_online": 0.012,
            "cost_batch": None,
            "latency_ms_p50": 120,
            "latency_ms_p95": 120,
        },
    ]


def test_usage_is_the_caller_s_team_and_no_other(
    charlie_api: Api, alice_api: Api, team: Team, other_team: Team, alice: Any
) -> None:
    make_job(make_credential(team), ["x"], user=alice)
    assert charlie_api.get("usage").json()["by_provider"] == []
    assert_error(charlie_api.get(f"usage?team={team.pk}"), 400, "team")
    assert alice_api.get(f"usage?team={team.pk}").json()["by_provider"][0]["jobs"] == 1
    assert_error(alice_api.get("usage?team=0"), 400, "team")


# --- budget ----------------------------------------------------------------------------------


def test_admins_set_and_clear_the_budget(alice_api: Api, team: Team) -> None:
    response = alice_api.call("PUT", "budget", {"monthly_usd": 250.255})
    assert response.status_code == 200 and response.json() == {"monthly_usd": 250.26}
    team.refresh_from_db()
    assert team.monthly_budget_usd == Decimal("250.26")
    assert alice_api.call("PUT", "budget", {"monthly_usd": None}).json() == {"monthly_usd": None}
    team.refresh_from_db()
    assert team.monthly_budget_usd is None
    assert team.audit_events.filter(action="team.budget_changed").count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "monthly_usd"),
        ({"monthly_usd": -1}, "monthly_usd"),
        ({"monthly_usd": "100"}, "monthly_usd"),
        ({"monthly_usd": True}, "monthly_usd"),
        ({"monthly_usd": 1e12}, "monthly_usd"),
        ({"monthly_usd": 5, "extra": 1}, "extra"),
        ({"monthly_usd": 5, "team": 999999}, "team"),
    ],
)
def test_malformed_budgets_are_a_400(alice_api: Api, body: dict[str, Any], field: str) -> None:
    assert_error(alice_api.call("PUT", "budget", body), 400, field)


def test_a_budget_body_that_is_not_json_is_a_400(alice_api: Api) -> None:
    assert_error(alice_api.call("PUT", "budget", raw="{nope"), 400)
    assert_error(alice_api.call("PUT", "budget", raw='{"monthly_usd": NaN}'), 400)


def test_members_may_not_set_the_budget(bob_api: Api, viewer_api: Api, team: Team) -> None:
    assert_error(bob_api.call("PUT", "budget", {"monthly_usd": 5}), 403)
    assert_error(viewer_api.call("PUT", "budget", {"monthly_usd": 5}), 403)
    team.refresh_from_db()
    assert team.monthly_budget_usd is None


def test_the_budget_takes_put_only(alice_api: Api) -> None:
    assert_error(alice_api.post("budget", {"monthly_usd": 5}), 405)


# --- prices ----------------------------------------------------------------------------------


def test_admins_set_prices_and_everyone_in_the_team_reads_them(
    alice_api: Api, viewer_api: Api, charlie_api: Api, team: Team
) -> None:
    body = {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_per_mtok": 0.15,
        "output_per_mtok": 0.6,
    }
    created = alice_api.post("prices", body)
    assert created.status_code == 201, created.content
    answer = created.json()
    assert {k: answer[k] for k in body} == body and answer["team"] == team.pk
    again = alice_api.post("prices", {**body, "output_per_mtok": 0.8})
    assert again.status_code == 201 and again.json()["id"] == answer["id"]

    listed = viewer_api.get("prices").json()
    assert [(p["model"], p["output_per_mtok"]) for p in listed] == [("gpt-4o-mini", 0.8)]
    assert charlie_api.get("prices").json() == []
    assert team.audit_events.filter(action="price.set").count() == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "m", "input_per_mtok": 1, "output_per_mtok": 1}, "provider"),
        ({"provider": "nope", "model": "m", "input_per_mtok": 1, "output_per_mtok": 1}, "provider"),
        ({"provider": "together", "model": "", "input_per_mtok": 1, "output_per_mtok": 1}, "model"),
        (
            {"provider": "together", "model": "  ", "input_per_mtok": 1, "output_per_mtok": 1},
            "model",
        ),
        (
            {"provider": "together", "model": "m" * 201, "input_per_mtok": 1, "output_per_mtok": 1},
            "model",
        ),
        (
            {"provider": "together", "model": "m", "input_per_mtok": -1, "output_per_mtok": 1},
            "input_per_mtok",
        ),
        (
            {"provider": "together", "model": "m", "input_per_mtok": "1", "output_per_mtok": 1},
            "input_per_mtok",
        ),
        (
            {"provider": "together", "model": "m", "input_per_mtok": 1, "output_per_mtok": 1e9},
            "output_per_mtok",
        ),
        ({"provider": "together", "model": "m", "input_per_mtok": 1}, "output_per_mtok"),
        (
            {
                "provider": "together",
                "model": "m",
                "input_per_mtok": 1,
                "output_per_mtok": 1,
                "x": 1,
            },
            "x",
        ),
    ],
)
def test_malformed_prices_are_a_400(alice_api: Api, body: dict[str, Any], field: str) -> None:
    assert_error(alice_api.post("prices", body), 400, field)
    assert not Price.objects.exists()


def test_members_may_not_set_prices(bob_api: Api) -> None:
    body = {"provider": "together", "model": "m", "input_per_mtok": 1, "output_per_mtok": 1}
    assert_error(bob_api.post("prices", body), 403)
    assert not Price.objects.exists()


# --- batch prices and both modes' estimates ---------------------------------------------------


def test_prices_take_optional_batch_prices_and_list_them(alice_api: Api, team: Team) -> None:
    body = {"provider": "openai", "model": "m", "input_per_mtok": 2, "output_per_mtok": 8}
    plain = alice_api.post("prices", body)
    assert plain.status_code == 201, plain.content
    assert (plain.json()["batch_input_per_mtok"], plain.json()["batch_output_per_mtok"]) == (
        None,
        None,
    )

    both = alice_api.post(
        "prices", {**body, "batch_input_per_mtok": 0.9, "batch_output_per_mtok": 3.5}
    )
    assert both.status_code == 201, both.content
    listed = alice_api.get("prices").json()
    assert [(p["batch_input_per_mtok"], p["batch_output_per_mtok"]) for p in listed] == [(0.9, 3.5)]
    saved = Price.objects.get()
    assert (saved.batch_input_per_mtok, saved.batch_output_per_mtok) == (
        Decimal("0.9"),
        Decimal("3.5"),
    )


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"batch_input_per_mtok": -0.5}, "batch_input_per_mtok"),
        ({"batch_output_per_mtok": "1"}, "batch_output_per_mtok"),
        ({"batch_output_per_mtok": 1e9}, "batch_output_per_mtok"),
        ({"batch_input_per_mtok": True}, "batch_input_per_mtok"),
    ],
)
def test_malformed_batch_prices_are_a_400_naming_the_field(
    alice_api: Api, extra: dict[str, Any], field: str
) -> None:
    body = {"provider": "openai", "model": "m", "input_per_mtok": 1, "output_per_mtok": 1}
    assert_error(alice_api.post("prices", {**body, **extra}), 400, field)
    assert not Price.objects.exists()


def test_non_finite_batch_prices_are_a_400(alice_api: Api) -> None:
    body = '{"provider": "openai", "model": "m", "input_per_mtok": 1, "output_per_mtok": 1, '
    for raw in ("NaN", "Infinity", '"NaN"', "1e400"):
        response = alice_api.call("POST", "prices", raw=body + f'"batch_input_per_mtok": {raw}}}')
        answer = assert_error(response, 400)
        # NaN and Infinity are not JSON: the body is refused as such; a string
        # or a number too big for a float is refused on the field.
        assert "batch_input_per_mtok" in answer["fields"] or "not valid JSON" in answer["error"]
    assert not Price.objects.exists()


def test_a_dry_run_gives_both_modes_and_cost_is_the_asked_one(bob_api: Api, team: Team) -> None:
    credential = make_credential(team, "openai")
    Price.objects.create(
        team=team,
        provider="openai",
        model="m",
        input_per_mtok=Decimal(2),
        output_per_mtok=Decimal(4),
        batch_output_per_mtok=Decimal(1),
    )
    body = {"credential": credential.pk, "model": "m", "prompts": ["a" * 40], "max_tokens": 10}
    online = (10 * 2 + 10 * 4) / 1_000_000
    batch = (10 * 1 + 10 * 1) / 1_000_000  # input half of 2, output the batch price

    asked_online = bob_api.post("jobs", {**body, "dry_run": True})
    asked_batch = bob_api.post("jobs", {**body, "mode": "batch", "dry_run": True})

    assert asked_online.status_code == 200, asked_online.content
    assert asked_online.json()["estimate"] == {
        "items": 1,
        "tokens_in": 10,
        "tokens_out_max": 10,
        "cost": online,
        "cost_online": online,
        "cost_batch": batch,
    }
    assert asked_batch.status_code == 200, asked_batch.content
    assert asked_batch.json()["estimate"]["cost"] == batch
    assert asked_batch.json()["estimate"]["cost_online"] == online
    assert not Job.objects.exists()
