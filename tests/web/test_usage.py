"""The cost pages: usage (charts with their tables, spend against the budget,
prices), the new-job form's estimate and budget refusal, a job's cost, the
history's cost column, filter and export, and the chart queries' count."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dashboard.datasets.parsing import Limits, read_records
from dashboard.datasets.services import dataset_create
from dashboard.jobs import usage
from dashboard.jobs.services import job_transition
from dashboard.management.demo_history import seed_demo_history
from dashboard.models import Item, Job, Price, Team
from dashboard.web import charts
from tests.conftest import finish_items, make_credential, make_job, make_team, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client: Any, alice: Any, team: Any) -> Any:
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(client: Any, bob: Any, team: Any) -> Any:
    client.force_login(bob)
    return client


def page(response: Any) -> str:
    return response.content.decode()


def priced(team: Team, model: str = "m", given: str = "1000", taken: str = "1000") -> Price:
    return Price.objects.create(
        team=team, provider="together", model=model, input_per_mtok=given, output_per_mtok=taken
    )


# --- the usage page and its charts ------------------------------------------------------------


def test_the_usage_page_shows_four_charts_with_their_tables(
    alice_client: Any, team: Team, alice: Any
) -> None:
    for provider in ("together", "openai", "lamini"):
        make_credential(team, provider)
    seed_demo_history(team, jobs=40, user=alice)

    html = page(alice_client.get(reverse("usage")))

    for name in charts.CHARTS:
        assert f'src="{reverse(f"usage_chart_{name}")}"' in html
    assert html.count('<table class="chart-numbers">') == 4
    assert "Jobs per day, by provider" in html and "Spend per day (USD)" in html
    assert "the numbers are in the table that follows" in html
    assert "demo data" in html and "setup_demo" in html


def test_each_chart_is_an_svg_image_with_no_script_and_nothing_to_fetch(
    alice_client: Any, team: Team, alice: Any
) -> None:
    job = make_job(make_credential(team), ["x"], user=alice, model="<script>alert(1)</script>")
    finish_items(job, ["y"])
    job.items.update(latency_ms=250)
    job_transition(job.pk, "completed")
    for name in charts.CHARTS:
        response = alice_client.get(reverse(f"usage_chart_{name}"))
        svg = page(response)
        assert response["Content-Type"] == "image/svg+xml; charset=utf-8"
        assert "script-src" not in response["Content-Security-Policy"]
        assert svg.startswith("<svg") and "<script" not in svg and "xml-stylesheet" not in svg
        assert not re.search(r"(href|src)=", svg), name
    latency = page(alice_client.get(reverse("usage_chart_latency")))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in latency


def test_every_chart_costs_one_query_whatever_the_number_of_jobs(team: Team) -> None:
    """100 jobs, then 2,000: each chart reads the same number of queries
    (one), and so do the usage page and each SVG view."""
    other = make_team("Other")
    seed_demo_history(team, jobs=100, seed=1)
    seed_demo_history(other, jobs=2000, seed=2)
    counts: dict[str, list[int]] = {}
    for subject in (team, other):
        period = usage.last_days()
        for name, build in charts.CHARTS.items():
            with CaptureQueriesContext(connection) as queries:
                build(subject, period).svg()
            counts.setdefault(name, []).append(len(queries))
        with CaptureQueriesContext(connection) as queries:
            usage.month_usage(subject)
        counts.setdefault("month_usage", []).append(len(queries))
    assert Job.objects.filter(team=other).count() == 2000
    assert all(first == second for first, second in counts.values()), counts
    assert {name: n[0] for name, n in counts.items()} == {
        "jobs": 1,
        "failures": 1,
        "latency": 1,
        "spend": 1,
        "month_usage": 2,
    }


def test_the_page_s_queries_do_not_grow_with_the_jobs(client: Any, team: Team) -> None:
    counts = []
    for size in (100, 2000):
        subject = make_team(f"T{size}")
        admin = make_user(f"admin{size}")
        subject.memberships.create(user=admin, role="admin")
        seed_demo_history(subject, jobs=size, seed=size)
        client.force_login(admin)
        client.get(reverse("usage"))  # warm the template cache
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse("usage")).status_code == 200
        counts.append(len(queries))
        with CaptureQueriesContext(connection) as queries:
            client.get(reverse("usage_chart_latency"))
        counts.append(len(queries))
    assert counts[0] == counts[2] and counts[1] == counts[3], counts


def test_the_home_page_loads_the_charts_panel(alice_client: Any) -> None:
    home = page(alice_client.get(reverse("home")))
    assert f'hx-get="{reverse("usage")}" hx-trigger="load"' in home
    panel = page(alice_client.get(reverse("usage"), headers={"HX-Request": "true"}))
    assert panel.lstrip().startswith('<section class="card charts" id="usage-charts"')
    assert "<html" not in panel


def test_spent_against_the_budget_and_no_price_set(
    alice_client: Any, team: Team, alice: Any
) -> None:
    priced(team)
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=Decimal("2"))
    job = make_job(make_credential(team), ["a" * 400], user=alice, model="m", max_tokens=100)
    finish_items(job, ["b" * 400])
    job_transition(job.pk, "completed")  # 100 + 100 tokens: $0.20
    make_job(make_credential(team, "lamini"), ["x"], user=alice, model="unpriced")

    html = page(alice_client.get(reverse("usage")))

    assert "<strong>$0.2000</strong> of <strong>$2.00</strong> monthly budget" in html
    assert "$1.80 left" in html and 'data-progress="10"' in html
    assert re.search(r"Lamini</th><td>1</td><td>1</td><td>0</td><td>no price set</td>", html)


# --- prices and the budget on the page ------------------------------------------------------------


def test_admins_set_and_remove_prices_members_only_read(
    alice_client: Any, team: Team, bob: Any
) -> None:
    body = {
        "provider": "together",
        "model": "m",
        "input_per_mtok": "0.5",
        "output_per_mtok": "1.5",
    }
    response = alice_client.post(reverse("price_save"), body, follow=True)
    assert "Price for m on Together set" in page(response)
    price = Price.objects.get()
    assert (price.input_per_mtok, price.output_per_mtok) == (Decimal("0.5"), Decimal("1.5"))
    bad = alice_client.post(reverse("price_save"), {**body, "input_per_mtok": "-1"})
    assert bad.status_code == 400 and "greater than or equal to 0" in page(bad)

    alice_client.force_login(bob)
    assert alice_client.post(reverse("price_save"), body).status_code == 403
    assert alice_client.post(reverse("price_delete", args=[price.pk])).status_code == 403
    html = page(alice_client.get(reverse("usage")))
    assert "Set a price" not in html and "$0.5" in html


def test_admins_set_the_budget_on_the_page(alice_client: Any, team: Team) -> None:
    response = alice_client.post(reverse("budget_save"), {"monthly_budget_usd": "99.50"})
    assert response.status_code == 302
    team.refresh_from_db()
    assert team.monthly_budget_usd == Decimal("99.50")
    alice_client.post(reverse("budget_save"), {"monthly_budget_usd": ""})
    team.refresh_from_db()
    assert team.monthly_budget_usd is None


# --- the new-job form ---------------------------------------------------------------------------


def test_the_new_job_form_shows_a_live_estimate(alice_client: Any, team: Team) -> None:
    credential = make_credential(team)
    priced(team, "m", "2", "6")
    form = page(alice_client.get(reverse("job_new")))
    assert 'id="job-estimate"' in form and 'hx-post="/jobs/estimate"' in form
    assert form.index('id="job-estimate"') < form.index("Submit job")

    data = {
        "credential": credential.pk,
        "model": "m",
        "prompts": "a" * 40 + "\n" + "b" * 40,
        "split": "lines",
        "max_tokens": "100",
    }
    html = page(alice_client.post(reverse("job_estimate"), data))

    assert "<strong>2</strong> prompts" in html and "<strong>20</strong> input tokens" in html
    assert "up to <strong>200</strong> output tokens" in html
    assert "Cost: up to <strong>$0.0012</strong>" in html  # (20·2 + 200·6) / 10⁶
    unpriced = page(alice_client.post(reverse("job_estimate"), {**data, "model": "free"}))
    assert "<strong>no price set</strong>" in unpriced and "$0" not in unpriced
    empty = page(alice_client.post(reverse("job_estimate"), {**data, "prompts": ""}))
    assert "to see what the job may cost" in empty and "hx-post" not in empty


def test_the_estimate_of_a_dataset_job_counts_its_rendered_rows(
    alice_client: Any, team: Team, alice: Any
) -> None:
    credential = make_credential(team)
    priced(team, "m", "2", "6")
    rows = read_records([{"q": "a" * 36}, {"q": "b" * 36}, {"q": "c" * 36}], Limits.from_settings())
    dataset = dataset_create(team=team, name="qs", rows=rows, user=alice)
    data = {
        "credential": credential.pk,
        "model": "m",
        "prompts": "",
        "dataset": dataset.pk,
        "prompt_template": "Q: {q}",
        "max_tokens": "10",
    }
    html = page(alice_client.post(reverse("job_estimate"), data))
    assert "<strong>3</strong> prompts" in html and "<strong>30</strong> input tokens" in html
    wrong = page(alice_client.post(reverse("job_estimate"), {**data, "prompt_template": "{nope}"}))
    assert "a template that fits the dataset" in wrong and "nope" in wrong


def test_the_estimate_warns_before_the_budget_refuses(
    alice_client: Any, team: Team, alice: Any
) -> None:
    credential = make_credential(team)
    priced(team)
    Team.objects.filter(pk=team.pk).update(monthly_budget_usd=Decimal("0.30"))
    data = {"credential": credential.pk, "model": "m", "prompts": "a" * 400, "split": "single"}
    data["max_tokens"] = "400"  # $0.50
    warning = page(alice_client.post(reverse("job_estimate"), data))
    assert "Over budget" in warning and "will be refused" in warning

    response = alice_client.post(reverse("job_new"), data)

    assert response.status_code == 409
    assert "budget" in page(response) and "$0.30" in page(response)
    assert not Job.objects.exists() and not Item.objects.exists()
    assert not team.audit_events.exists()


def test_members_only_estimate(client: Any, team: Team) -> None:
    viewer = make_user("vera")
    team.memberships.create(user=viewer, role="viewer")
    client.force_login(viewer)
    assert client.post(reverse("job_estimate"), {"prompts": "x"}).status_code == 403


# --- a job's cost, and the history -------------------------------------------------------------


def test_a_job_shows_estimated_and_actual_cost_and_estimated_tokens(
    alice_client: Any, team: Team, alice: Any
) -> None:
    priced(team)
    job = make_job(make_credential(team), ["a" * 40], user=alice, model="m", max_tokens=10)
    running = page(alice_client.get(reverse("job_detail", args=[job.pk])))
    assert "Estimated cost</dt><dd>$0.0200" in running and "Cost so far</dt><dd>$0.00" in running
    finish_items(job, ["b" * 8])
    job_transition(job.pk, "completed")

    html = page(alice_client.get(reverse("job_detail", args=[job.pk])))

    assert 'Actual cost</dt><dd>$0.0120 <span class="muted small">(from estimated tokens)' in html
    assert "estimated tokens</abbr>" in html
    unpriced = make_job(make_credential(team), ["x"], user=alice, model="free")
    assert "no price set" in page(alice_client.get(reverse("job_detail", args=[unpriced.pk])))


def test_the_history_shows_filters_and_exports_cost(
    alice_client: Any, team: Team, alice: Any
) -> None:
    priced(team)
    credential = make_credential(team)
    cheap = make_job(credential, ["a" * 4], user=alice, model="m", max_tokens=1)  # $0.002 est.
    dear = make_job(credential, ["a" * 4000], user=alice, model="m", max_tokens=1000)  # $2.00
    free = make_job(credential, ["x"], user=alice, model="free")
    for job in (cheap, dear, free):
        job_transition(job.pk, "cancelled")
    Job.objects.filter(pk=dear.pk).update(cost_actual=Decimal("1.5"))

    html = page(alice_client.get(reverse("job_list")))
    assert "<th>Cost</th>" in html and "$1.50" in html and "no price set" in html

    filtered = page(alice_client.get(reverse("job_list"), {"cost_min": "1"}))
    assert f"#{dear.pk}<" in filtered and f"#{cheap.pk}<" not in filtered
    assert f"#{free.pk}<" not in filtered
    bad = page(alice_client.get(reverse("job_list"), {"cost_min": "2", "cost_max": "1"}))
    assert "The upper cost is below the lower one" in bad

    export = alice_client.get(reverse("job_export_csv"), {"cost_max": "5"})
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert {row["id"]: row["cost_actual_usd"] for row in rows} == {
        str(dear.pk): "1.5",
        str(cheap.pk): "0.0",
    }
    assert rows[0]["cost_estimated_usd"] == "2.0" and rows[0]["tokens_estimated"] == "False"
