"""``setup_demo`` seeds a showcase so every page a newcomer opens has content:
a dataset with an ``expected`` column, a scored two-target comparison with its
judge, ratings and significance, a rerun to diff, a batch job with its remote
batches, a job with cached rows and a rate-limited credential; marked as demo,
written once, and the pages read them as they read real jobs."""

from __future__ import annotations

import time
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models import Count, Q, Sum
from django.test import Client

from dashboard.evals.scores import scores_summary
from dashboard.management.demo_history import NOTE
from dashboard.management.demo_showcase import COMPARISON, DATASET
from dashboard.models import (
    BatchChunk,
    Comparison,
    Credential,
    Dataset,
    DatasetRow,
    Item,
    ItemScore,
    Job,
    JobEvent,
    Rating,
    RowNote,
    Team,
    tokens_cost,
)

pytestmark = pytest.mark.django_db

MODELS = (
    Dataset,
    DatasetRow,
    Comparison,
    Job,
    Item,
    ItemScore,
    Rating,
    RowNote,
    BatchChunk,
    JobEvent,
)


def setup_demo(*args: str) -> str:
    out = StringIO()
    call_command("setup_demo", *args, stdout=out)
    return out.getvalue()


def showcase() -> dict[str, Any]:
    team = Team.objects.get(name="Demo")
    dataset = Dataset.objects.get(team=team, name=DATASET)
    comparison = Comparison.objects.get(team=team, name=COMPARISON)
    strong, weak = comparison.jobs.order_by("id")
    return {
        "team": team,
        "dataset": dataset,
        "comparison": comparison,
        "strong": strong,
        "weak": weak,
        "rerun": Job.objects.get(dataset=dataset, comparison=None, judge_of=None),
        "batch": Job.objects.get(team=team, mode=Job.Mode.BATCH),
        "cached": Job.objects.get(team=team, cache=True),
        "together": Credential.objects.get(team=team, provider="together"),
    }


def demo_client() -> Client:
    client = Client()
    assert client.login(username="demo", password="demo")
    return client


def test_setup_demo_seeds_the_showcase_marked_as_demo_once() -> None:
    assert "Demo showcase" in setup_demo("--history-jobs", "0")
    seen = showcase()
    dataset = seen["dataset"]
    assert dataset.columns == ["question", "expected"] and dataset.row_count == 12
    assert dataset.rows.count() == 12
    assert dataset.rows.get(index=0).data == {
        "question": "What is the capital of France?",
        "expected": "Paris",
    }
    team_jobs = Job.objects.filter(team=seen["team"])
    assert team_jobs.count() == 8 and not team_jobs.filter(demo=False).exists()
    assert (
        JobEvent.objects.filter(job__team=seen["team"], message__startswith="Demo data").count()
        == 8
    )

    # The comparison: two scored targets, each judged by a judge job of its own.
    strong, weak = seen["strong"], seen["weak"]
    assert [s["type"] for s in strong.scorers] == ["icontains", "length", "judge"]
    rates = {s["name"]: s["passed"] for s in scores_summary(strong)}
    assert rates == {"names the capital": 11, "short answer": 12, "judge": 11}
    rates = {s["name"]: s["passed"] for s in scores_summary(weak)}
    assert rates == {"names the capital": 4, "short answer": 7, "judge": 5}
    for target in (strong, weak):
        judge = Job.objects.get(judge_of=target)
        assert judge.judge_scorer == "judge" and judge.items_valid == 12
        assert judge.items.filter(source_index__isnull=False).count() == 12
        assert judge.items.first().output.keys() == {"pass", "score", "reason"}
    assert Rating.objects.filter(job__comparison=seen["comparison"]).count() == 6
    assert seen["comparison"].notes.count() == 1

    # The batch job's two ended batches, one row expired.
    batch = seen["batch"]
    chunks = list(batch.chunks.order_by("number"))
    assert [(c.state, c.provider_status, c.requests) for c in chunks] == [
        ("ended", "completed", 10),
        ("ended", "completed", 10),
    ]
    assert all(c.remote_id.startswith("batch_demo") and c.ended_at for c in chunks)
    assert (batch.items_completed, batch.items_failed) == (19, 1)
    # Batch rows are billed at the batch price (half of online by default).
    assert batch.price_input_per_mtok == strong.price_input_per_mtok / 2

    # Cached rows answer from an earlier job's completed items, at no cost.
    cached = seen["cached"]
    hits = cached.items.filter(cached_from__isnull=False)
    assert hits.count() == 12 and not hits.filter(tokens_in__gt=0).exists()
    for item in hits.select_related("cached_from"):
        assert item.request_hash == item.cached_from.request_hash != ""
        assert item.cached_from.status == "completed" and item.cached_from.job.demo

    assert (seen["together"].requests_per_minute, seen["together"].tokens_per_minute) == (
        600,
        200_000,
    )

    # Every job's counters, tokens and cost say what its items say.
    for job in team_jobs.annotate(
        n=Count("items"),
        done=Count("items", filter=Q(items__status="completed")),
        failed=Count("items", filter=Q(items__status="failed")),
        t_in=Sum("items__tokens_in"),
        t_out=Sum("items__tokens_out"),
    ):
        assert (job.n, job.done, job.failed) == (
            job.progress_total,
            job.items_completed,
            job.items_failed,
        ), job
        assert (job.t_in, job.t_out) == (job.tokens_in, job.tokens_out), job
        assert job.progress_done == job.n and job.status == "completed" and job.finished_at
        assert job.cost_actual == tokens_cost(
            job.tokens_in, job.tokens_out, job.price_input_per_mtok, job.price_output_per_mtok
        )
        assert job.cost_actual is not None and job.cost_actual > 0, job

    # Idempotent: a second run writes nothing.
    counts = {model: model.objects.count() for model in MODELS}
    assert "Demo showcase" not in setup_demo("--history-jobs", "0")
    assert {model: model.objects.count() for model in MODELS} == counts


def test_the_showcase_is_fast_and_comes_in_either_order_with_the_history() -> None:
    started = time.monotonic()
    assert "Demo showcase" in setup_demo("--history-jobs", "0")
    assert time.monotonic() - started < 5
    # The history asked for later still comes, once; the showcase is not written again.
    assert "Demo history: 150" in setup_demo()
    out = setup_demo()
    assert "Demo history" not in out and "Demo showcase" not in out
    assert Job.objects.filter(team__name="Demo").count() == 158


def test_a_demo_with_its_history_only_gets_the_showcase() -> None:
    """A database seeded before the showcase existed (history, no showcase)."""
    setup_demo()
    Dataset.objects.filter(name=DATASET).delete()  # as if it never was
    Comparison.objects.filter(name=COMPARISON).delete()
    Job.objects.filter(team__name="Demo").exclude(events__message=NOTE).delete()
    out = setup_demo()
    assert "Demo showcase" in out and "Demo history" not in out
    assert Job.objects.filter(team__name="Demo").count() == 158


def test_the_pages_show_the_showcase() -> None:
    setup_demo("--history-jobs", "0")
    seen = showcase()
    client = demo_client()

    page = client.get(f"/comparisons/{seen['comparison'].pk}/").content.decode()
    assert 'id="comparison-scores"' in page and 'id="significance"' in page
    # icontains: 8 rows only the first target passes, 1 only the second: p = 20/512.
    assert "0.0391" in page and "difference is more than chance" in page
    # The judge against the reviewers: 5 of 6 cells agree, kappa 0.67.
    assert 'id="agreement"' in page and "83.3 %" in page and "0.67" in page
    assert "1 cell where judge and the reviewers disagree" in page

    rerun, weak = seen["rerun"], seen["weak"]
    page = client.get(f"/jobs/{rerun.pk}/diff", {"against": weak.pk}).content.decode()
    assert "names the capital: regression" in page and "names the capital: improvement" in page
    assert "changed</span>" in page
    page = client.get(
        f"/jobs/{rerun.pk}/diff", {"against": weak.pk, "only": "regressions"}
    ).content.decode()
    assert page.count("names the capital: regression") == 1  # Switzerland: Bern, then Zürich

    batch = seen["batch"]
    page = client.get(f"/jobs/{batch.pk}/").content.decode()
    assert 'id="job-chunks"' in page and page.count('data-state="ended"') == 2
    for chunk in batch.chunks.all():
        assert chunk.remote_id in page
    assert "expired: the provider" in page and "demo data" in page

    cached = seen["cached"]
    source = Item.objects.filter(pk__in=cached.items.values("cached_from")).aggregate(
        i=Sum("tokens_in"), o=Sum("tokens_out")
    )
    saved = tokens_cost(
        source["i"], source["o"], cached.price_input_per_mtok, cached.price_output_per_mtok
    )
    page = client.get(f"/jobs/{cached.pk}/").content.decode()
    assert f"12 rows from the cache, ${saved:.4f} saved" in page and saved > 0

    page = client.get(f"/jobs/{seen['strong'].pk}/").content.decode()
    assert "Judged by" in page and "12 of 12 judged" in page

    page = client.get("/credentials/").content.decode()
    assert "0 of 600 requests this minute" in page and "of 200000 tokens this minute" in page
    assert "Last held back" in page

    page = client.get(f"/datasets/{seen['dataset'].pk}/").content.decode()
    assert "What is the capital of France?" in page and "expected" in page

    # Every seeded job reaches its page, and the lists and exports read them as real ones.
    for job in Job.objects.filter(team=seen["team"]):
        response = client.get(f"/jobs/{job.pk}/")
        assert response.status_code == 200 and "demo data" in response.content.decode(), job
    for url, shown in (
        ("/comparisons/", COMPARISON),
        ("/datasets/", DATASET),
        ("/jobs/", 'title="Run through the provider\'s batch API">batch'),
        ("/usage/", "demo data"),
    ):
        assert shown in client.get(url).content.decode(), url
    export = client.get(f"/comparisons/{seen['comparison'].pk}/export.csv")
    text = b"".join(export.streaming_content).decode()
    assert export.status_code == 200 and "Paris" in text and "Bonn" in text
