"""A job's end has one owner, ``jobs.services.jobs_end``: the sync runner, the
async poller, the sweep and a cancel all end jobs through it, by the same rule
and in the same words, with the counters read back from the database."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from dashboard.core import connect, events
from dashboard.jobs import poller, worker
from dashboard.jobs.services import job_cancel, jobs_end
from dashboard.models import Item, Job, JobEvent
from tests.conftest import FakeClock, make_credential, make_job, use_clock

pytestmark = pytest.mark.django_db


def poll_until_done(credential: Any, sim_clock: FakeClock, rounds: int = 40) -> None:
    provider = connect.build_provider(credential)
    for _ in range(rounds):
        units = poller.due_units(credential.pk, timezone.now() + timedelta(hours=1))
        if not units:
            return
        poller.poll_round(provider, units)
        sim_clock.advance(0.5)


@pytest.fixture
def announced() -> Any:
    seen: list[tuple[tuple[int, ...], str]] = []

    def record(sender: Any, *, job_ids: list[int], status: str, **kwargs: Any) -> None:
        seen.append((tuple(job_ids), status))

    events.job_ended.connect(record, dispatch_uid="test_jobs_end")
    yield seen
    events.job_ended.disconnect(dispatch_uid="test_jobs_end")


def test_async_and_sync_jobs_with_a_failed_row_end_in_the_same_words(
    team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    """The poller's copy of the end rule left a completed job with failed rows
    without its "N of M prompts failed" error; the runner's wrote it."""
    grid = use_clock(sims.get("gridrepublic"), sim_clock, step_seconds=0.0)
    grid_credential = make_credential(team, "gridrepublic", base_url=grid.base_url)
    async_job = make_job(grid_credential, ["fine", "this one [[fail]]s"], model="gemma:2b")
    worker.advance_job(async_job.pk)
    poll_until_done(grid_credential, sim_clock)

    async_job.refresh_from_db()
    assert async_job.status == "completed"
    assert async_job.items_failed == 1
    assert async_job.error.startswith("1 of 2 prompts failed; first error: ")
    assert async_job.error_retryable is True
    assert async_job.finished_at is not None and async_job.lease_owner == ""
    last = async_job.events.order_by("-id").first()
    assert last is not None
    assert last.message == "Completed: 1 of 2 prompt(s) completed, 1 failed."


def test_a_job_ends_once_and_is_announced_once(team: Any, announced: Any) -> None:
    credential = make_credential(team, "together")
    done = make_job(credential, ["a", "b"])
    Item.objects.filter(job=done).update(status="completed")
    Job.objects.filter(pk=done.pk).update(progress_done=2, items_completed=2)
    busy = make_job(credential, ["c"])  # its item has not ended: left alone

    first = jobs_end([done.pk, busy.pk])
    again = jobs_end([done.pk, busy.pk])

    assert [(e.pk, e.status, e.items_completed, e.progress_total) for e in first] == [
        (done.pk, "completed", 2, 2)
    ]
    assert again == []
    assert announced == [((done.pk,), "completed")]
    busy.refresh_from_db()
    assert busy.status == "pending"
    assert JobEvent.objects.filter(job=done, message__startswith="Completed:").count() == 1


def test_the_counters_come_from_the_database_not_from_the_caller(team: Any) -> None:
    """jobs_end decides from the row as it is: a job whose last rows another
    writer ended as failed ends failed, whatever the caller last saw."""
    credential = make_credential(team, "together")
    job = make_job(credential, ["a", "b"])
    Item.objects.filter(job=job).update(status="failed", error="boom")
    Job.objects.filter(pk=job.pk).update(progress_done=2, items_failed=2)

    (ended,) = jobs_end([job.pk])

    assert (ended.status, ended.items_failed, ended.items_completed) == ("failed", 2, 0)
    job.refresh_from_db()
    assert job.error == "2 of 2 prompts failed; first error: boom"


def test_a_cancel_that_lands_first_wins_over_the_end(team: Any, announced: Any) -> None:
    credential = make_credential(team, "together")
    job = make_job(credential, ["a", "b"])
    assert job_cancel(job)
    Job.objects.filter(pk=job.pk).update(items_completed=1)

    assert jobs_end([job.pk]) == []
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert job.items_cancelled == 2
    assert announced == [((job.pk,), "cancelled")]
