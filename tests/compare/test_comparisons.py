"""Comparisons end to end against the simulators, the grid (paged, merged with
retries, live changes), ratings and notes, and the exports."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from openpyxl import load_workbook

from dashboard.compare import export, grid, reviews
from dashboard.compare.services import (
    ComparisonError,
    Target,
    comparison_create,
    comparison_status,
    target_retry_failed,
    targets_of,
)
from dashboard.core import connect
from dashboard.datasets.parsing import Limits, read_file, read_records
from dashboard.datasets.services import Inputs, dataset_create, inputs_from_dataset
from dashboard.jobs import poller, worker
from dashboard.models import Comparison, Job, Rating
from providers import JobSpec
from providers.simulators import completion_text
from providers.simulators.lamini import answer as lamini_answer
from tests.conftest import FakeClock, finish_items, make_credential, use_clock

pytestmark = pytest.mark.django_db

SCHEMA = {"answer": "str", "score": "int"}


def csv_dataset(team: Any, rows: int) -> Any:
    data = "n,question\n" + "".join(f'{i},"What is {i} + {i}, really?"\n' for i in range(rows))
    raw = data.encode()
    parsed = read_file(io.BytesIO(raw), name="q.csv", size=len(raw), limits=Limits.from_settings())
    return dataset_create(team=team, name="questions", rows=parsed)


def run_to_the_end(jobs: list[Job], clock: FakeClock) -> None:
    """Each job through the worker's own code; async ones polled round by round."""
    for job in jobs:
        worker.advance_job(job.pk)
    for job in jobs:
        job.refresh_from_db()
        if job.provider != "gridrepublic":
            continue
        provider = connect.build_provider(job.credential)
        for _ in range(40):
            units = poller.due_units(job.credential_id, timezone.now() + timedelta(hours=1))
            if not units:
                break
            poller.poll_round(provider, units)
            clock.advance(1.0)
        job.refresh_from_db()


def test_three_providers_over_a_20_row_dataset(
    team: Any, alice: Any, sims: Any, sim_clock: FakeClock
) -> None:
    together = make_credential(team, "together", base_url=sims.get("together").base_url)
    lamini = make_credential(team, "lamini", base_url=sims.get("lamini").base_url)
    grid_sim = use_clock(sims.get("gridrepublic"), sim_clock, step_seconds=0.0)
    gridrep = make_credential(team, "gridrepublic", base_url=grid_sim.base_url)
    dataset = csv_dataset(team, 20)
    inputs = inputs_from_dataset(dataset, "Q{n}: {question}")
    targets = [
        Target(together, JobSpec(model="m-together", prompts=inputs.prompts, max_tokens=64)),
        Target(
            lamini,
            JobSpec(model="m-lamini", prompts=inputs.prompts, output_schema=SCHEMA),
        ),
        Target(gridrep, JobSpec(model="gemma:2b", prompts=inputs.prompts)),
    ]
    comparison = comparison_create(
        team=team, name="three ways", user=alice, inputs=inputs, targets=targets
    )
    jobs = targets_of(comparison)
    assert [j.provider for j in jobs] == ["together", "lamini", "gridrepublic"]
    assert all(j.dataset_id == dataset.pk and j.comparison_id == comparison.pk for j in jobs)
    assert comparison_status(comparison, jobs) == "pending"

    run_to_the_end(jobs, sim_clock)
    jobs = targets_of(comparison)
    assert [j.status for j in jobs] == ["completed"] * 3, [j.error for j in jobs]
    assert comparison_status(comparison, jobs) == "completed"

    prompts = [f"Q{i}: What is {i} + {i}, really?" for i in range(20)]
    expected = [
        [completion_text("m-together", p, 64) for p in prompts],
        [lamini_answer("m-lamini", p, SCHEMA, None) for p in prompts],
        [completion_text("gemma:2b", p) for p in prompts],
    ]
    seen: list[list[Any]] = [[], [], []]
    after = None
    while True:
        page = grid.grid_page(comparison, jobs, after=after, size=7)
        for row in page.rows:
            assert row.input == prompts[row.index]
            assert row.input_fields == {
                "n": str(row.index),
                "question": f"What is {row.index} + {row.index}, really?",
            }
            for n, cell in enumerate(row.cells):
                assert cell.job_id == jobs[n].pk and cell.item is not None
                seen[n].append(cell.item.output)
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == expected  # each simulator's exact outputs, in input order

    summary = grid.summaries(jobs)
    assert [s.job.counts["completed"] for s in summary] == [20, 20, 20]
    assert summary[0].latency_p50 is not None and summary[0].latency_p95 >= summary[0].latency_p50
    assert summary[1].job.items_valid == 20

    # The export's rows align with the input rows, one column group per target.
    body = "".join(export.grid_csv(comparison, jobs))
    table = list(csv.reader(io.StringIO(body)))
    header, rows = table[0], table[1:]
    assert header[:4] == ["index", "n", "question", "input"]
    assert "T1 together/m-together output" in header
    assert (
        "T2 lamini/m-lamini output.answer" in header and "T2 lamini/m-lamini output.score" in header
    )
    assert len(rows) == 20
    out1 = header.index("T1 together/m-together output")
    score = header.index("T2 lamini/m-lamini output.score")
    out3 = header.index("T3 gridrepublic/gemma:2b output")
    for i, row in enumerate(rows):
        assert row[0] == str(i) and row[1] == str(i) and row[3] == prompts[i]
        assert row[out1] == expected[0][i]
        assert row[score] == str(expected[1][i]["score"])
        assert row[out3] == expected[2][i]
    lines = "".join(export.grid_jsonl(comparison, jobs)).splitlines()
    first = json.loads(lines[0])
    assert first["input"] == prompts[0] and first["targets"][1]["output"] == expected[1][0]
    book = load_workbook(export.grid_xlsx(comparison, jobs), read_only=True)
    sheet_rows = list(book.worksheets[0].iter_rows(values_only=True))
    assert len(sheet_rows) == 21 and sheet_rows[5][3] == prompts[4]


def _plain_comparison(team: Any, alice: Any, prompts: list[str], n: int = 2) -> Comparison:
    credentials = [make_credential(team) for _ in range(n)]
    inputs = Inputs(prompts=prompts)
    return comparison_create(
        team=team,
        name="plain",
        user=alice,
        inputs=inputs,
        targets=[
            Target(c, JobSpec(model=f"m{i}", prompts=prompts)) for i, c in enumerate(credentials)
        ],
    )


def test_target_count_and_prompts_are_checked(team: Any, alice: Any) -> None:
    credential = make_credential(team)
    spec = JobSpec(model="m", prompts=["a"])
    with pytest.raises(ComparisonError, match="2 to 8 targets"):
        comparison_create(
            team=team,
            name="x",
            user=alice,
            inputs=Inputs(["a"]),
            targets=[Target(credential, spec)],
        )
    with pytest.raises(ComparisonError, match="2 to 8 targets"):
        comparison_create(
            team=team,
            name="x",
            user=alice,
            inputs=Inputs(["a"]),
            targets=[Target(credential, spec)] * 9,
        )
    with pytest.raises(ComparisonError, match="same prompts"):
        comparison_create(
            team=team,
            name="x",
            user=alice,
            inputs=Inputs(["a"]),
            targets=[
                Target(credential, spec),
                Target(credential, JobSpec(model="m", prompts=["b"])),
            ],
        )
    assert not Comparison.objects.exists() and not Job.objects.exists()


def test_retry_failed_cells_of_one_target_merges_back(team: Any, alice: Any) -> None:
    comparison = _plain_comparison(team, alice, ["a", "b", "c"])
    first, second = targets_of(comparison)
    finish_items(first, ["A", None, "C"], {1: "boom"})
    finish_items(second, ["a2", "b2", "c2"])
    Job.objects.filter(pk__in=[first.pk, second.pk]).update(status="completed")
    first.refresh_from_db()

    retry = target_retry_failed(comparison, first, user=alice)
    assert retry.retry_of_id == first.pk and retry.comparison_id is None
    assert list(retry.items.values_list("source_index", "input")) == [(1, "b")]
    jobs = targets_of(comparison)
    assert [j.pk for j in jobs] == [first.pk, second.pk]  # a retry is not a target
    assert comparison_status(comparison, jobs) == "running"  # the retry runs
    with pytest.raises(ComparisonError, match="still running"):
        target_retry_failed(comparison, first, user=alice)

    since = timezone.now()
    finish_items(retry, ["B!"])
    Job.objects.filter(pk=retry.pk).update(status="completed")
    changed = grid.changed_cells(jobs, 0, 2, since)
    assert [(c.job_id, c.index, c.item.output) for c in changed if c.job_id == first.pk] == [
        (first.pk, 1, "B!")
    ]
    page = grid.grid_page(comparison, jobs)
    assert [row.cells[0].item.output for row in page.rows] == ["A", "B!", "C"]
    assert page.rows[1].cells[0].item.merged_from == retry.pk
    assert comparison_status(comparison, targets_of(comparison)) == "completed"
    with pytest.raises(ComparisonError, match="Every cell of this target completed"):
        target_retry_failed(comparison, first, user=alice)
    other = _plain_comparison(team, alice, ["x", "y"])
    with pytest.raises(ComparisonError, match="not a target"):
        target_retry_failed(other, first, user=alice)


def test_ratings_latest_wins_and_best_is_one_per_row(team: Any, alice: Any, bob: Any) -> None:
    comparison = _plain_comparison(team, alice, ["a", "b"], n=3)
    t1, t2, t3 = targets_of(comparison)
    reviews.rating_set(job=t1, index=0, user=alice, score=1)
    reviews.rating_set(job=t1, index=0, user=alice, score=-1)  # the latest wins
    reviews.rating_set(job=t1, index=0, user=bob, score=1)
    assert Rating.objects.filter(job=t1, index=0).count() == 2
    assert Rating.objects.get(job=t1, index=0, user=alice).score == -1

    reviews.rating_set(job=t2, index=0, user=alice, best=True)
    reviews.rating_set(job=t3, index=0, user=alice, best=True)  # moves alice's pick
    reviews.rating_set(job=t3, index=0, user=bob, best=True)
    assert set(Rating.objects.filter(best=True).values_list("job_id", "user__username")) == {
        (t3.pk, "alice"),
        (t3.pk, "bob"),
    }
    assert not Rating.objects.filter(job=t2).exists()  # nothing left of it: removed
    summary = grid.summaries([t1, t2, t3])
    assert [(s.wins, s.up, s.down) for s in summary] == [(0, 1, 1), (0, 0, 0), (2, 0, 0)]
    row = grid.grid_page(comparison, [t1, t2, t3]).rows[0]
    assert [c.best for c in row.cells] == [0, 0, 2]
    assert row.cells[0].mine(alice).score == -1

    assert reviews.rating_set(job=t1, index=0, user=alice, score=None) is None  # cleared
    with pytest.raises(reviews.ReviewError, match="no row 5"):
        reviews.rating_set(job=t1, index=5, user=alice, score=1)
    with pytest.raises(reviews.ReviewError, match="-1"):
        reviews.rating_set(job=t1, index=0, user=alice, score=2)


def test_a_single_jobs_cells_take_scores_but_not_best(team: Any, alice: Any) -> None:
    job = Job.objects.get(pk=_plain_comparison(team, alice, ["a"]).jobs.first().pk)
    Job.objects.filter(pk=job.pk).update(comparison=None)
    job.refresh_from_db()
    assert reviews.rating_set(job=job, index=0, user=alice, score=1).score == 1
    with pytest.raises(reviews.ReviewError, match="comparison"):
        reviews.rating_set(job=job, index=0, user=alice, best=True)


def test_notes_on_rows(team: Any, alice: Any) -> None:
    comparison = _plain_comparison(team, alice, ["a", "b"])
    reviews.note_add(comparison=comparison, index=1, user=alice, text="  T2 is closer  ")
    with pytest.raises(reviews.ReviewError, match="empty"):
        reviews.note_add(comparison=comparison, index=1, user=alice, text="  ")
    with pytest.raises(reviews.ReviewError, match="no row 2"):
        reviews.note_add(comparison=comparison, index=2, user=alice, text="x")
    rows = grid.grid_page(comparison, targets_of(comparison)).rows
    assert [n.text for n in rows[1].notes] == ["T2 is closer"] and rows[0].notes == []


def test_grid_page_queries_do_not_grow_with_the_rows(
    team: Any, alice: Any, django_assert_max_num_queries: Any
) -> None:
    comparison = _plain_comparison(team, alice, [f"p{i}" for i in range(300)], n=4)
    jobs = targets_of(comparison)
    with django_assert_max_num_queries(10):
        page = grid.grid_page(comparison, jobs, after=100, size=50)
    assert [r.index for r in page.rows] == list(range(101, 151))


def test_a_dataset_deleted_later_leaves_the_items(team: Any, alice: Any) -> None:
    rows = read_records([{"q": "one"}, {"q": "two"}], Limits.from_settings())
    dataset = dataset_create(team=team, name="d", rows=rows)
    inputs = inputs_from_dataset(dataset, "say {q}")
    credentials = [make_credential(team), make_credential(team)]
    comparison = comparison_create(
        team=team,
        name="c",
        user=alice,
        inputs=inputs,
        targets=[Target(c, JobSpec(model="m", prompts=inputs.prompts)) for c in credentials],
    )
    dataset.delete()
    comparison.refresh_from_db()
    assert comparison.dataset_id is None
    for job in targets_of(comparison):
        assert job.dataset_id is None
        assert list(job.items.order_by("index").values_list("input", "input_fields")) == [
            ("say one", {"q": "one"}),
            ("say two", {"q": "two"}),
        ]


def test_exports_keep_the_datasets_column_order(team: Any, alice: Any) -> None:
    """A dataset's columns come out of every export in the file's order, on
    PostgreSQL too, where a row's fields are a jsonb object whose keys come back
    shortest first: a job, its retry, a comparison, a comparison started from
    the job, and all of them after the dataset is deleted."""
    from dashboard.compare.services import inputs_of_job
    from dashboard.jobs import export as job_export
    from dashboard.jobs import results
    from dashboard.jobs.services import job_create, job_retry

    order = ["question", "context", "id"]  # longest first: jsonb would reverse it
    schema = {"reasoning": "str", "n": "int"}
    outputs = ["output.reasoning", "output.n"]
    rows = read_records(
        [{"question": f"q{i}", "context": f"c{i}", "id": str(i)} for i in range(3)],
        Limits.from_settings(),
    )
    dataset = dataset_create(team=team, name="d", rows=rows)
    assert dataset.columns == order
    inputs = inputs_from_dataset(dataset, "{question} ({context})")
    credential = make_credential(team)
    job = job_create(
        team=team,
        credential=credential,
        spec=JobSpec(model="m", prompts=inputs.prompts, output_schema=schema),
        user=alice,
        input_fields=inputs.input_fields,
        input_columns=inputs.columns,
        dataset=inputs.dataset,
    )
    finish_items(job, [{"reasoning": "r", "n": 1}, None, {"reasoning": "s", "n": 2}], {1: "boom"})
    Job.objects.filter(pk=job.pk).update(status="completed")
    job.refresh_from_db()
    retry = job_retry(job, failed_only=True)
    comparison = comparison_create(
        team=team,
        name="c",
        user=alice,
        inputs=inputs,
        targets=[
            Target(credential, JobSpec(model=m, prompts=inputs.prompts, output_schema=schema))
            for m in "xy"
        ],
    )
    again = inputs_of_job(job)
    from_job = comparison_create(
        team=team,
        name="from the job",
        user=alice,
        inputs=again,
        targets=[Target(credential, JobSpec(model=m, prompts=again.prompts)) for m in "xy"],
    )
    dataset.delete()

    def job_header(of: Job) -> list[str]:
        of.refresh_from_db()
        body = "".join(job_export.items_csv(of, results.iter_items(of)))
        return next(csv.reader(io.StringIO(body)))

    def grid_header(of: Comparison) -> list[str]:
        body = "".join(export.grid_csv(of, targets_of(of)))
        return next(csv.reader(io.StringIO(body)))

    assert job_header(job)[:7] == ["index", *order, "input", *outputs]
    assert job_header(retry)[:7] == ["index", *order, "input", *outputs]
    assert grid_header(comparison)[:7] == [
        "index",
        *order,
        "input",
        *(f"T1 together/x {name}" for name in outputs),
    ]
    assert grid_header(from_job)[:5] == ["index", *order, "input"]
    xlsx = load_workbook(job_export.items_xlsx(job, results.iter_items(job)), read_only=True)
    assert list(next(xlsx.worksheets[0].iter_rows(values_only=True)))[:7] == [
        "index",
        *order,
        "input",
        *outputs,
    ]


@pytest.mark.django_db(transaction=True)
def test_the_migration_gives_dataset_jobs_their_columns() -> None:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    old = [("dashboard", "0013_cost_notify")]
    new = [("dashboard", "0014_job_input_columns")]
    executor = MigrationExecutor(connection)
    executor.migrate(old)
    apps = executor.loader.project_state(old).apps
    Team = apps.get_model("dashboard", "Team")
    OldJob = apps.get_model("dashboard", "Job")
    team = Team.objects.create(name="Old")
    credential = apps.get_model("dashboard", "Credential").objects.create(
        team=team, provider="together", name="c", secret="fernet:x", base_url="http://x"
    )
    dataset = apps.get_model("dashboard", "Dataset").objects.create(
        team=team, name="d", columns=["question", "id"]
    )
    common = {"team": team, "credential": credential, "provider": "together", "model": "m"}
    made = OldJob.objects.create(**common, dataset=dataset, spec={"model": "m"})
    retry = OldJob.objects.create(**common, retry_of=made, spec={"model": "m"})
    plain = OldJob.objects.create(**common, spec={"model": "m"})
    executor = MigrationExecutor(connection)
    executor.migrate(new)
    NewJob = executor.loader.project_state(new).apps.get_model("dashboard", "Job")
    assert NewJob.objects.get(pk=made.pk).input_columns == ["question", "id"]
    assert NewJob.objects.get(pk=retry.pk).input_columns == ["question", "id"]
    assert NewJob.objects.get(pk=plain.pk).input_columns == []
    MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())
