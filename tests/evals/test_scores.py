"""Scores per item and what they add up to: written in the flush that writes
the outputs, one aggregate query whatever the job's size, the Wilson interval
against textbook values, and re-scoring a finished job without a provider
call."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard.evals.scores import job_rescore, score_rows, scores_summary, scores_write, wilson
from dashboard.jobs import worker
from dashboard.jobs.serialize import job_json
from dashboard.jobs.services import job_create
from dashboard.models import Item, ItemScore, Job
from providers import JobSpec
from tests.conftest import job_row, make_credential

pytestmark = pytest.mark.django_db

CHEAP = [
    {"type": "contains", "value": "answer", "name": "says"},
    {"type": "icontains", "value": "ANSWER"},
    {"type": "regex", "value": r"answer [0-9a-f]{8}"},
    {"type": "length", "min": 1, "max": 10},
    {"type": "equals", "value": "no such output", "name": "exact"},
]


def run(job: Job) -> Job:
    while worker.advance_job(job.pk) == "deferred":
        Job.objects.filter(pk=job.pk).update(next_check_at=None)
    job.refresh_from_db()
    return job


@pytest.mark.parametrize(
    ("passed", "n", "low", "high"),
    [(8, 10, 0.490, 0.943), (0, 10, 0.0, 0.278), (50, 100, 0.404, 0.596), (10, 10, 0.722, 1.0)],
)
def test_wilson_against_textbook_values(passed: int, n: int, low: float, high: float) -> None:
    interval = wilson(passed, n)
    assert interval is not None
    assert interval == (pytest.approx(low, abs=5e-4), pytest.approx(high, abs=5e-4))


def test_wilson_of_nothing_is_none() -> None:
    assert wilson(0, 0) is None


def test_scores_are_written_in_the_flush_that_writes_the_outputs(team: Any, sims: Any) -> None:
    """A job on the Together simulator with five cheap scorers and a judge:
    one row per item per cheap scorer, none for the judge, and no statement
    reads the items back to score them (no second pass over the table)."""
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=4)
    judge = {
        "type": "judge",
        "name": "polite",
        "credential": credential.pk,
        "model": "m",
        "rubric": "Polite?",
    }
    job = job_create(
        team=team,
        credential=credential,
        spec=JobSpec(prompts=[f"row {i}" for i in range(30)], model="test-model"),
        scorers=[{**s, "name": s.get("name", s["type"])} for s in CHEAP] + [judge],
    )
    with CaptureQueriesContext(connection) as queries:
        job = run(job)
    assert job.status == "completed" and job.items_completed == 30
    assert ItemScore.objects.filter(job=job).count() == 30 * 5
    assert not ItemScore.objects.filter(scorer="polite").exists()
    item_reads = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith("SELECT") and '"dashboard_item"."output"' in q["sql"]
    ]
    inserts = [
        q for q in queries.captured_queries if 'INSERT INTO "dashboard_itemscore"' in q["sql"]
    ]
    assert inserts and len(inserts) <= len(
        [q for q in queries.captured_queries if 'UPDATE "dashboard_item"' in q["sql"]]
    )  # at most one insert per item write: written with it, not after
    assert all(
        '"index" >' in sql or "status" in sql for sql in item_reads
    )  # the runner's own reads
    summary = {row["name"]: row for row in job_json(job)["scores"]}
    assert summary["says"]["passed"] == 30 and summary["says"]["pass_rate"] == 1.0
    assert summary["exact"]["failed"] == 30 and summary["exact"]["pass_rate"] == 0.0
    assert summary["length"]["failed"] == 30  # the simulator's answers are longer than 10
    assert summary["polite"] == {
        "name": "polite",
        "type": "judge",
        "passed": 0,
        "failed": 0,
        "unscored": 30,
        "pass_rate": None,
        "ci95": None,
    }
    assert summary["exact"]["ci95"] == [0.0, pytest.approx(0.1135, abs=1e-3)]


def test_a_job_without_scorers_sends_nothing(team: Any, sims: Any) -> None:
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url)
    job = run(job_create(team=team, credential=credential, spec=JobSpec(prompts=["a"], model="m")))
    assert job.status == "completed" and not ItemScore.objects.exists()
    assert job_json(job)["scores"] == [] and job_json(job)["scorers"] == []


def scored_job(team: Any, n: int) -> Job:
    job = job_row(team, prompts=[f"p{i}" for i in range(n)], outputs=[f"out {i}" for i in range(n)])
    job.scorers = [
        {"type": "contains", "value": "1", "name": "one"},
        {"type": "valid", "name": "valid"},
    ]
    job.save(update_fields=["scorers"])
    job_rescore(job.pk)
    return job


@pytest.mark.parametrize("n", [10, 1000])
def test_the_summary_is_one_query_at_any_size(
    team: Any, n: int, django_assert_num_queries: Any
) -> None:
    job = scored_job(team, n)
    with django_assert_num_queries(1):
        summary = scores_summary(job)
    one = summary[0]
    expected = sum("1" in f"out {i}" for i in range(n))
    assert (one["passed"], one["failed"], one["unscored"]) == (expected, n - expected, 0)
    assert summary[1]["unscored"] == n  # no schema: every row unscored


def test_verdicts_go_as_many_a_statement_as_the_database_takes(team: Any) -> None:
    """900 completed items with five scorers: their 4,500 verdicts go in one
    INSERT (SQLite takes 32,766 parameters, 4,680 verdicts), written again (a
    re-score) in one more, replacing, not doubling. They were cut at 1,000
    rows: five statements."""
    job = job_row(team, prompts=[f"p{i}" for i in range(900)], outputs=["o"] * 900)
    items = list(Item.objects.filter(job=job).order_by("index"))
    scorers = [{"type": "length", "min": 1, "name": f"s{n}"} for n in range(5)]
    rows = score_rows(job.pk, scorers, items)
    for _ in range(2):
        with CaptureQueriesContext(connection) as captured:
            scores_write(rows)
        inserts = [q for q in captured.captured_queries if q["sql"].startswith("INSERT")]
        assert len(inserts) == 1, len(inserts)
    assert ItemScore.objects.filter(job=job, passed=True).count() == 4500


def test_rescoring_fills_scores_without_a_provider_call(team: Any, sims: Any) -> None:
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url)
    job = run(
        job_create(
            team=team,
            credential=credential,
            spec=JobSpec(prompts=[f"row {i}" for i in range(25)], model="m"),
        )
    )
    calls = sum(sim.requests.values())
    assert calls == 25 and not ItemScore.objects.exists()
    job.scorers = [{"type": "contains", "value": "row 1", "name": "row1"}]
    job.save(update_fields=["scorers"])
    assert job_rescore(job.pk) == 25
    assert sum(sim.requests.values()) == calls  # not one call more
    passed = set(ItemScore.objects.filter(job=job, passed=True).values_list("index", flat=True))
    assert passed == {1, *range(10, 20)}
    # Again: the rows are replaced, not doubled.
    job_rescore(job.pk)
    assert ItemScore.objects.filter(job=job).count() == 25


def test_failed_items_count_as_unscored(team: Any) -> None:
    job = job_row(team, prompts=["a", "b", "c"], outputs=["yes", None, "no"], errors={1: "boom"})
    job.scorers = [{"type": "equals", "value": "yes", "name": "yes"}]
    job.save(update_fields=["scorers"])
    job_rescore(job.pk)
    [row] = scores_summary(job)
    assert (row["passed"], row["failed"], row["unscored"]) == (1, 1, 1)
    assert Item.objects.filter(job=job, scores__isnull=True).count() == 1


def test_exports_have_a_column_per_scorer(team: Any, alice: Any, client: Any) -> None:
    import csv
    import io
    import json

    from django.urls import reverse
    from openpyxl import load_workbook

    client.force_login(alice)
    job = job_row(team, prompts=["a", "b", "c"], outputs=["yes", "no"], errors={2: "boom"})
    job.scorers = [{"type": "equals", "value": "yes", "name": "=yes"}]
    job.save(update_fields=["scorers"])
    job_rescore(job.pk)
    url = reverse("job_items_export", args=[job.pk, "csv"])
    rows = list(csv.reader(io.StringIO(b"".join(client.get(url).streaming_content).decode())))
    assert rows[0][-1] == "score:=yes"
    assert [row[-1] for row in rows[1:]] == ["pass", "fail", ""]
    url = reverse("job_items_export", args=[job.pk, "jsonl"])
    lines = b"".join(client.get(url).streaming_content).splitlines()
    assert [json.loads(line)["scores"] for line in lines] == [
        {"=yes": "pass"},
        {"=yes": "fail"},
        {"=yes": ""},
    ]
    url = reverse("job_items_export", args=[job.pk, "xlsx"])
    sheet = list(
        load_workbook(io.BytesIO(b"".join(client.get(url).streaming_content))).active.iter_rows(
            values_only=True
        )
    )
    assert sheet[0][-1] == "score:=yes" and sheet[1][-1] == "pass"


def test_the_job_page_shows_pass_rates_badges_and_filters(
    team: Any, alice: Any, client: Any
) -> None:
    from django.urls import reverse

    client.force_login(alice)
    job = job_row(team, prompts=["a", "b", "c"], outputs=["yes", "no", "yes"])
    job.scorers = [{"type": "equals", "value": "yes", "name": "<b>exact</b>"}]
    job.save(update_fields=["scorers"])
    job_rescore(job.pk)
    page = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    assert 'id="job-scores"' in page and "67 %" in page  # 2 of 3
    assert "<b>exact</b>" not in page and "&lt;b&gt;exact&lt;/b&gt;" in page  # escaped
    assert page.count("&lt;b&gt;exact&lt;/b&gt;: pass</span>") == 2
    failing = client.get(reverse("job_detail", args=[job.pk]), {"score": "<b>exact</b>:fail"})
    body = failing.content.decode()
    assert 'id="item-1"' in body and 'id="item-0"' not in body and 'id="item-2"' not in body
    bad = client.get(reverse("job_detail", args=[job.pk]), {"score": "nobody:fail"})
    assert bad.status_code == 200 and "No scorer" in bad.content.decode()


def test_the_new_job_form_takes_scorers_and_shows_their_refusal(
    team: Any, bob: Any, client: Any
) -> None:
    from django.urls import reverse

    client.force_login(bob)
    credential = make_credential(team)
    data = {"credential": credential.pk, "model": "m1", "prompts": "one", "split": "single"}
    bad = client.post(
        reverse("job_new"),
        {**data, "scorers": '[{"type": "regex", "value": "(", "name": "<i>r</i>"}]'},
    )
    page = bad.content.decode()
    assert bad.status_code == 200 and not Job.objects.exists()
    assert "the regular expression does not compile" in page and "<i>r</i>" not in page
    good = client.post(reverse("job_new"), {**data, "scorers": '[{"type": "length", "max": 5}]'})
    assert good.status_code == 302
    assert Job.objects.get().scorers == [{"type": "length", "max": 5, "name": "length"}]


def test_the_new_job_form_s_scorers_box_starts_empty(client: Any, bob: Any, team: Any) -> None:
    """No scorers is an empty, closed box (it said "null", open)."""
    from django.urls import reverse

    make_credential(team)
    client.force_login(bob)
    page = client.get(reverse("job_new")).content.decode()
    box = page[page.index('name="scorers"') :]
    box = box[: box.index("</textarea>")]
    assert box.endswith(">\n") or box.endswith(">"), box
    assert "null" not in box
    assert "<details open><summary>Scorers" not in page.replace("<details  open>", "<details open>")
