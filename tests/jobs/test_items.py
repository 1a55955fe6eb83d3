"""A job is its rows: bounded writes, the races the old runner and poller had,
the status rule, retries and their merged view, and the migration from the
old one-list shape."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from dashboard.core import connect
from dashboard.jobs import items as items_module
from dashboard.jobs import leases, limits, poller, runner, worker
from dashboard.jobs.results import items_page, merge_retries
from dashboard.jobs.services import job_cancel, job_retry
from dashboard.models import Credential, Item, Job, JobUnit
from dashboard.status import JobStatus
from providers.simulators import completion_text
from tests.conftest import (
    FakeClock,
    finish_items,
    make_credential,
    make_job,
    outputs,
    prompts_of,
    use_clock,
)

pytestmark = pytest.mark.django_db


def run(job: Job) -> Job:
    while worker.advance_job(job.pk) == "deferred":
        Job.objects.filter(pk=job.pk).update(next_check_at=None)
    job.refresh_from_db()
    return job


# --- bounded writes --------------------------------------------------------------------------


def test_no_flush_rewrites_all_items(team: Any, sims: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2,000-item job: each flush writes at most the items that ended since
    the previous one, never the whole job."""
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=16)
    job = make_job(credential, [f"row {i}" for i in range(2000)])
    flushes: list[tuple[int, int]] = []  # (rows written, rows ended since the last flush)
    ended_before = 0
    real_write = runner.items_write

    def counting_write(job_id: int, changes: Any, **kwargs: Any) -> bool:
        nonlocal ended_before
        ended_now = Item.objects.filter(job_id=job_id, status="completed").count()
        written = len(changes)
        result = real_write(job_id, changes, **kwargs)
        ended_after = Item.objects.filter(job_id=job_id, status="completed").count()
        flushes.append((written, ended_after - ended_now))
        ended_before = ended_after
        return result

    monkeypatch.setattr(runner, "items_write", counting_write)
    job = run(job)
    assert job.status == "completed" and job.items_completed == 2000
    assert sum(written for written, _ in flushes) == 2000  # each row written once
    assert len(flushes) > 3  # flushed as it went, not once at the end
    assert all(written == ended for written, ended in flushes), flushes
    assert max(written for written, _ in flushes) < 2000


def test_counters_match_the_items(team: Any, sims: Any) -> None:
    sim = sims.get("together")
    sim.add_fault(status=400, body={"error": "bad prompt"}, times=2)
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=1)
    job = run(make_job(credential, ["a", "b", "c", "d", "e"]))
    by_status = {s: job.items.filter(status=s).count() for s in ("completed", "failed")}
    assert (job.items_completed, job.items_failed) == (by_status["completed"], by_status["failed"])
    assert job.progress_done == 5 and job.items_running == 0
    assert job.counts == {
        "pending": 0,
        "running": 0,
        "completed": 3,
        "failed": 2,
        "cancelled": 0,
        "valid": 0,
        "invalid": 0,
    }
    assert job.tokens_in > 0 and job.tokens_estimated  # Together reports no usage


# --- the status rule ----------------------------------------------------------------------------


def test_failed_when_no_item_completed(team: Any, sims: Any) -> None:
    sim = sims.get("together")
    sim.add_fault(status=400, body={"error": "bad prompt"}, times=3)
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=1)
    job = run(make_job(credential, ["a", "b", "c"]))
    assert job.status == "failed" and job.outcome == "failed"
    assert job.error.startswith("3 of 3 prompts failed; first error:")


def test_completed_with_failed_and_invalid_rows_says_so(team: Any, sims: Any) -> None:
    sim = sims.get("lamini")
    credential = make_credential(team, "lamini", base_url=sim.base_url)
    job = make_job(credential, ["a", "b", "c"], output_schema={"age": "int"})
    finish_items(job, [{"age": 1}, {"age": "old"}], {2: "timeout"})
    Job.objects.filter(pk=job.pk).update(status="completed")
    job.refresh_from_db()
    assert job.outcome == "completed · 1 failed · 1 invalid" and not job.clean_success
    page = _client_for(team).get(reverse("job_list")).content.decode()
    assert "completed · 1 failed · 1 invalid" in page


def _client_for(team: Any) -> Any:
    from django.test import Client

    client = Client()
    client.force_login(team.memberships.get(role="admin").user)
    return client


def test_cancel_cancels_the_rows_that_did_not_run(team: Any) -> None:
    job = make_job(make_credential(team), ["a", "b", "c"])
    finish_items(job, ["done"])
    assert job_cancel(job)
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert list(job.items.values_list("status", flat=True)) == ["completed", "cancelled"] * 1 + [
        "cancelled"
    ]
    assert (job.items_completed, job.items_cancelled, job.progress_done) == (1, 2, 3)


# --- the runner's races --------------------------------------------------------------------------


def test_retry_after_pauses_the_whole_credential(team: Any, sims: Any, waits: list[float]) -> None:
    """One call's 429 with Retry-After pauses every call on the credential (the
    pool thread only reports it; the main thread records it, on the credential
    itself), and a second job on the credential waits for it too."""
    sim = sims.get("together")
    sim.add_fault(status=429, headers={"Retry-After": "2"}, body={"error": "slow down"}, times=1)
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=1)
    job = run(make_job(credential, ["a", "b", "c"]))
    assert job.status == "completed" and job.items_completed == 3
    # One wait of what is left of the 2 s asked once the 429 was recorded.
    assert len(waits) == 1 and 1.0 < waits[0] <= 2.0
    assert sim.count("POST /inference") == 3  # each row answered once; the 429 is not counted
    credential.refresh_from_db()
    assert credential.paused_until is not None

    # Another worker's job on the same credential, while the pause lasts: it waits.
    limits.pause_credential(credential.pk, 60)
    other = make_job(credential, ["x"])
    assert worker.advance_job(other.pk) == "deferred"
    other.refresh_from_db()
    assert other.items.get().status == "pending" and sim.count("POST /inference") == 3
    assert other.events.filter(message__contains="asked to wait (Retry-After)").exists()


def test_successes_are_all_counted(team: Any, sims: Any) -> None:
    """Every success reaches the circuit breaker (once lost between threads)."""
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=8)
    Credential.objects.filter(pk=credential.pk).update(consecutive_failures=5)
    job = run(make_job(credential, [f"p{i}" for i in range(40)]))
    credential.refresh_from_db()
    assert job.items_completed == 40 and credential.consecutive_failures == 0


def test_a_cancel_during_a_flush_is_never_undone(team: Any, sims: Any) -> None:
    """The worker's write is conditional on the job row: once cancelled, the
    flush writes nothing and the worker stops."""
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=1)
    job = make_job(credential, ["a", "b", "c"])
    changes = items_module.Changes()
    item = job.items.get(index=0)
    changes.add(item, item.status)
    item.status, item.output = "completed", "late"
    Job.objects.filter(pk=job.pk).update(status="running")
    assert job_cancel(job)
    assert not items_module.items_write(job.pk, changes, statuses=[JobStatus.RUNNING])
    job.refresh_from_db()
    assert job.items.get(index=0).status == "cancelled" and job.items_completed == 0


# --- the poller's races ----------------------------------------------------------------------------


def test_a_poll_round_never_moves_a_job_back_nor_touches_its_lease(
    team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    sim = use_clock(sims.get("gridrepublic"), sim_clock, step_seconds=100.0)
    credential = make_credential(team, "gridrepublic", base_url=sim.base_url)
    job = make_job(credential, ["a", "b"])
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "queued"
    # The submitter holds the job (say, submitting more units) while a round runs.
    Job.objects.filter(pk=job.pk).update(
        status="running", lease_owner="submitter", lease_expires_at=timezone.now()
    )
    provider = connect.build_provider(credential)
    units = poller.due_units(credential.pk, timezone.now() + timedelta(hours=1))
    assert poller.poll_round(provider, units)  # the remote jobs still say "queued"
    job.refresh_from_db()
    assert job.status == "running"  # not moved back to queued or pending
    assert job.lease_owner == "submitter" and job.lease_expires_at is not None


def test_a_poller_that_lost_its_lease_writes_nothing(
    team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    sim = use_clock(sims.get("gridrepublic"), sim_clock, step_seconds=0.0)
    credential = make_credential(team, "gridrepublic", base_url=sim.base_url)
    job = make_job(credential, ["a"])
    worker.advance_job(job.pk)
    assert leases.lease_credential(credential.pk, "poller-a")
    # Poller A stalls; its lease expires and poller B takes the credential over.
    Credential.objects.filter(pk=credential.pk).update(
        poll_lease_owner="poller-b", poll_lease_expires_at=timezone.now() + timedelta(minutes=1)
    )
    sim_clock.advance(10)
    provider = connect.build_provider(credential)
    units = poller.due_units(credential.pk, timezone.now())
    events = job.events.count()
    assert not poller.poll_round(provider, units, credential, owner="poller-a")
    assert JobUnit.objects.get(job=job).state == "submitted"
    assert job.items.get().status == "pending" and job.events.count() == events
    # poll_credential with a lost lease returns at once and leaves B's lease alone.
    assert poller.poll_credential(credential.pk) == 0
    credential.refresh_from_db()
    assert credential.poll_lease_owner == "poller-b"


def test_a_round_stops_between_batches_when_its_time_is_up(
    team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    sim = use_clock(sims.get("gridrepublic"), sim_clock, step_seconds=100.0)
    credential = make_credential(team, "gridrepublic", base_url=sim.base_url)
    for i in range(3):
        worker.advance_job(make_job(credential, [f"p{i}"]).pk)
    provider = connect.build_provider(credential)
    provider.poll_batch_size = 1
    units = poller.due_units(credential.pk, timezone.now() + timedelta(hours=1))

    def status_requests() -> int:
        return sum(n for key, n in sim.requests.items() if key.startswith("GET "))

    before = status_requests()
    poller.poll_round(provider, units, credential, deadline=0.0)  # the budget is spent
    assert status_requests() - before == 1  # the first batch, no more
    assert len(poller.due_units(credential.pk, timezone.now() + timedelta(hours=1))) == 3


# --- retries and the merged view ---------------------------------------------------------------


def test_retry_invalid_with_repair_and_the_merged_view(team: Any, sims: Any) -> None:
    credential = make_credential(team, "lamini", base_url=sims.get("lamini").base_url)
    schema = {"age": "int"}
    first = make_job(credential, ["Carl", "Paul", "Eve"], output_schema=schema)
    finish_items(first, [{"age": 10}, {"age": "ten"}], {2: "boom"})
    Job.objects.filter(pk=first.pk).update(status="completed")
    first.refresh_from_db()

    repaired = job_retry(first, invalid_only=True, repair=True)
    assert repaired.retry_of == first
    (item,) = repaired.items.all()
    assert item.source_index == 1 and item.input.startswith("Paul\n\nYour previous answer")
    assert "is not of type 'integer'" in item.input and '"age"' in item.input
    again = job_retry(first, failed_only=True)
    assert list(again.items.values_list("source_index", "input")) == [(2, "Eve")]

    finish_items(repaired, [{"age": 30}])
    finish_items(again, [{"age": 40}])
    rows = merge_retries(first, items_page(first).items)
    assert [row.output for row in rows] == [{"age": 10}, {"age": 30}, {"age": 40}]
    assert [row.merged_from for row in rows] == [None, repaired.pk, again.pk]
    # A retry of a retry still hangs off the first job.
    assert job_retry(again).retry_of == first


def test_retry_refusals(team: Any) -> None:
    job = make_job(make_credential(team), ["a"])
    finish_items(job, ["fine"])
    Job.objects.filter(pk=job.pk).update(status="completed")
    job.refresh_from_db()
    with pytest.raises(ValueError, match="Every row of this job completed"):
        job_retry(job, failed_only=True)
    with pytest.raises(ValueError, match="No row of this job is invalid"):
        job_retry(job, invalid_only=True)
    with pytest.raises(ValueError, match="Repair applies to invalid rows"):
        job_retry(job, repair=True)


# --- the job page and its exports -------------------------------------------------------------


def rows_in(body: str) -> int:
    import re

    return len(re.findall(r'id="item-\d+"', body))


def _page(client: Any, job: Job, **params: Any) -> tuple[str, int]:
    with CaptureQueriesContext(connection) as queries:
        body = client.get(job.get_absolute_url(), params).content.decode()
    return body, len(queries)


def test_the_job_page_costs_the_same_for_any_size(team: Any, alice: Any, client: Any) -> None:
    client.force_login(alice)
    small = make_job(make_credential(team), [f"prompt {i}" for i in range(60)])
    large = make_job(make_credential(team), [f"prompt {i} " + "x" * 800 for i in range(3000)])
    finish_items(large, [f"answer {i}" for i in range(3000)])
    small_page, small_queries = _page(client, small)
    large_page, large_queries = _page(client, large)
    assert small_queries == large_queries
    assert len(large_page.encode()) < 200_000
    assert rows_in(large_page) == 50 and "rows 1–50 of 3000" in large_page
    deep, deep_queries = _page(client, large, after=2900)
    assert deep_queries == large_queries and "rows 2902–2951 of 3000" in deep


def test_pages_forward_back_and_filter(team: Any, alice: Any, client: Any) -> None:
    client.force_login(alice)
    job = make_job(make_credential(team), [f"p{i}" for i in range(120)])
    finish_items(job, [f"o{i}" if i % 3 else None for i in range(120)], {0: "boom", 3: "boom"})
    body, _ = _page(client, job, after=49)
    assert 'id="item-50"' in body and 'id="item-49"' not in body and "before=50" in body
    body, _ = _page(client, job, before=50)
    assert 'id="item-0"' in body and 'id="item-49"' in body and 'id="item-50"' not in body
    body, _ = _page(client, job, status="failed")
    assert rows_in(body) == 2 and 'id="item-3"' in body
    body, _ = _page(client, job, status="nonsense", valid="maybe")
    assert "Unknown status" in body and rows_in(body) == 50


def test_the_live_partial_sends_only_changed_rows(team: Any, alice: Any, client: Any) -> None:
    client.force_login(alice)
    job = make_job(make_credential(team), [f"p{i}" for i in range(200)])
    # Saved a minute ago: rows written within results.WRITE_SETTLE are sent again.
    Item.objects.filter(job=job).update(updated_at=timezone.now() - timedelta(minutes=1))
    page = client.get(job.get_absolute_url()).content.decode()
    import html
    import re

    poll = html.unescape(re.search(r'id="job-poller" hx-get="([^"]+)"', page).group(1))
    quiet = client.get(poll, headers={"HX-Request": "true"}).content.decode()
    assert rows_in(quiet) == 0
    finish_items(job, [None, "one", None, "three"])  # two rows of the page end
    changed = client.get(poll, headers={"HX-Request": "true"}).content.decode()
    assert rows_in(changed) == 2 and "three" in changed
    finish_items(job, [None] * 4 + [f"o{i}" for i in range(4, 40)])
    more = client.get(poll, headers={"HX-Request": "true"}).content.decode()
    assert rows_in(more) in (36, 38)  # the new ones (and the two again if in the same instant)
    assert len(more) < len(changed) * 25


def test_item_exports(team: Any, alice: Any, client: Any) -> None:
    import csv
    import io
    import json

    from openpyxl import load_workbook

    client.force_login(alice)
    job = make_job(
        make_credential(team, "lamini"),
        ["=cmd", "Paul", "Eve"],
        output_schema={"age": "int", "name": "str"},
    )
    finish_items(job, [{"age": 1, "name": "@x"}, {"age": "ten", "name": "P"}], {2: "boom"})
    csv_body = b"".join(
        client.get(reverse("job_items_export", args=[job.pk, "csv"])).streaming_content
    ).decode()
    rows = list(csv.reader(io.StringIO(csv_body)))
    assert rows[0][:5] == ["index", "input", "output.age", "output.name", "status"]
    assert rows[1][:5] == ["0", "'=cmd", "1", "'@x", "completed"]
    assert rows[2][rows[0].index("valid")] == "False" and rows[3][4] == "failed"
    lines = b"".join(
        client.get(reverse("job_items_export", args=[job.pk, "jsonl"])).streaming_content
    ).splitlines()
    first = json.loads(lines[0])
    assert first["input"] == "=cmd" and first["output"] == {"age": 1, "name": "@x"}
    response = client.get(reverse("job_items_export", args=[job.pk, "xlsx"]))
    book = load_workbook(io.BytesIO(b"".join(response.streaming_content)))
    sheet = list(book.active.iter_rows(values_only=True))
    assert sheet[0][:3] == ("index", "input", "output.age") and sheet[1][1] == "'=cmd"
    assert len(sheet) == 4


def test_item_export_headers_from_an_upload_are_defused(team: Any, alice: Any, client: Any) -> None:
    """A dataset's column names become export headers: a name that starts a
    formula is defused there like any cell, in CSV and in XLSX."""
    import csv
    import io

    from openpyxl import load_workbook

    client.force_login(alice)
    job = make_job(make_credential(team, "together"), ["a", "b"])
    Item.objects.filter(job=job).update(input_fields={"=HYPERLINK(1)": "x", "\x07bell": "y"})
    Job.objects.filter(pk=job.pk).update(input_columns=["=HYPERLINK(1)", "\x07bell"])
    finish_items(job, ["one", "two"])
    csv_body = b"".join(
        client.get(reverse("job_items_export", args=[job.pk, "csv"])).streaming_content
    ).decode()
    header = next(csv.reader(io.StringIO(csv_body)))
    assert header[:3] == ["index", "'=HYPERLINK(1)", "\x07bell"]
    response = client.get(reverse("job_items_export", args=[job.pk, "xlsx"]))
    book = load_workbook(io.BytesIO(b"".join(response.streaming_content)))
    first = next(book.active.iter_rows(values_only=True))
    assert first[:3] == ("index", "'=HYPERLINK(1)", "bell")


# --- the migration ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_old_jobs_into_items_losing_nothing() -> None:
    executor = MigrationExecutor(connection)
    old = [("dashboard", "0007_job_team_status_index")]
    new = [("dashboard", "0010_drop_job_outputs")]
    executor.migrate(old)
    apps = executor.loader.project_state(old).apps
    User = apps.get_model("auth", "User")
    Team = apps.get_model("dashboard", "Team")
    OldCredential = apps.get_model("dashboard", "Credential")
    OldJob = apps.get_model("dashboard", "Job")
    team = Team.objects.create(name="Old")
    user = User.objects.create(username="olduser")
    credential = OldCredential.objects.create(
        team=team, provider="together", name="c", secret="fernet:x", base_url="http://x"
    )
    common = {"team": team, "credential": credential, "provider": "together", "model": "m"}
    done = OldJob.objects.create(
        **common,
        credential_name="c",
        created_by=user,
        spec={"model": "m", "prompts": ["a", "b", "c"], "output_schema": {"n": "int"}},
        status="failed",
        outputs=[{"n": 1}, {"n": "x"}, None],
        output_errors={"2": "boom"},
        error="1 of 3 prompts failed",
        progress_done=3,
        progress_total=3,
    )
    waiting = OldJob.objects.create(
        **common,
        credential_name="c",
        spec={"model": "m", "prompts": ["p", "q"]},
        status="running",
        outputs=["first", None],
        progress_done=1,
        progress_total=2,
    )
    executor = MigrationExecutor(connection)
    executor.migrate(new)
    # The models as they were then: later migrations add columns to jobs.
    NewJob = executor.loader.project_state(new).apps.get_model("dashboard", "Job")
    job = NewJob.objects.get(pk=done.pk)
    assert prompts_of(job) == ["a", "b", "c"] and outputs(job) == [{"n": 1}, {"n": "x"}, None]
    assert list(job.items.values_list("status", "error", "valid")) == [
        ("completed", "", True),
        ("completed", "", False),
        ("failed", "boom", None),
    ]
    assert (job.status, job.progress_done, job.items_invalid) == ("failed", 3, 1)
    assert "prompts" not in job.spec and job.spec["output_schema"] == {"n": "int"}
    running = NewJob.objects.get(pk=waiting.pk)
    assert list(running.items.values_list("status", "output")) == [
        ("completed", "first"),
        ("pending", None),
    ]
    assert (running.progress_done, running.progress_total) == (1, 2)
    # And back: the lists are rebuilt from the items.
    executor = MigrationExecutor(connection)
    executor.migrate(old)
    apps = executor.loader.project_state(old).apps
    back = apps.get_model("dashboard", "Job").objects.get(pk=done.pk)
    assert back.spec["prompts"] == ["a", "b", "c"] and back.output_errors == {"2": "boom"}
    assert back.outputs == [{"n": 1}, {"n": "x"}, None]
    MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())


def test_completion_texts_are_exact(team: Any, sims: Any) -> None:
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=4)
    job = run(make_job(credential, [f"q{i}" for i in range(9)], max_tokens=5))
    assert outputs(job) == [completion_text("test-model", f"q{i}", 5) for i in range(9)]
    assert all(i.latency_ms is not None and i.attempts == 1 for i in job.items.all())
