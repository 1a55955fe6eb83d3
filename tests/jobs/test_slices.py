"""Slices: a big job's items claimed by several worker processes (in-process
here, by owner name; tests/jobs/test_slices_chaos.py has real processes)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from dashboard.core import clock
from dashboard.jobs import limits, runner, slices, worker
from dashboard.jobs.items import Changes, items_write
from dashboard.jobs.services import job_transition
from dashboard.models import CredentialSlot, Item, Job, JobSlice
from dashboard.status import JobStatus
from tests.conftest import make_credential, make_job

pytestmark = pytest.mark.django_db

SLICE = 10


@pytest.fixture(autouse=True)
def small_slices(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.DASHBOARD_SLICE_ITEMS = SLICE
    monkeypatch.setattr(slices, "SLICE_SIZE", SLICE)
    monkeypatch.setattr(slices, "SLOT_WAIT", 0.0)


@pytest.fixture
def together(sims: Any) -> Any:
    sim = sims.get("together")
    sim.keep_log = True
    sim.log.clear()
    return sim


def sent(sim: Any) -> Counter[str]:
    return Counter(request.json()["prompt"] for request in sim.log)


def as_owner(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setattr(worker, "worker_id", lambda: name)


def big_job(team: Any, together: Any, n: int = 35, **extra: Any) -> Job:
    credential = make_credential(team, base_url=together.base_url, **extra)
    return make_job(credential, [f"row {i:04d}" for i in range(n)])


def cut(job: Job) -> None:
    assert slices.slices_ensure(job, job.progress_total)
    job_transition(job.pk, JobStatus.RUNNING)


def test_a_small_job_is_not_cut(team: Any, together: Any) -> None:
    job = big_job(team, together, n=SLICE)
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "completed"
    assert not JobSlice.objects.filter(job=job).exists()
    assert sent(together) == Counter(f"row {i:04d}" for i in range(SLICE))


def test_a_big_job_runs_in_slices_and_queues_a_helper(
    team: Any, together: Any, nudges: list[tuple[Any, ...]]
) -> None:
    job = big_job(team, together)
    worker.advance_job(job.pk)
    job.refresh_from_db()

    assert job.status == "completed"
    assert job.items_completed == 35 and job.items_running == 0
    cuts = list(JobSlice.objects.filter(job=job).values_list("start_index", "end_index", "state"))
    assert cuts == [(0, 10, "done"), (10, 20, "done"), (20, 30, "done"), (30, 35, "done")]
    assert sent(together) == Counter(f"row {i:04d}" for i in range(35))
    # One helper queued (not started: nudges are recorded), not one per slice.
    assert nudges.count(("dashboard.tasks.advance_slices", job.pk)) == 1


def test_a_claim_is_sized_by_its_width_and_what_is_left(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slices, "SLICE_SIZE", 100)
    rounds = slices.ROUNDS
    assert slices.claim_size(8, 32, 9_000) == 8 * rounds  # calls per slot
    assert slices.claim_size(250, 1000, 50_000) == 250 * rounds
    # Its width's part of what is left: shorter runs towards the end.
    assert slices.claim_size(250, 1000, 8_000) == 2_000
    assert slices.claim_size(125, 1000, 8_000) == 1_000
    assert slices.claim_size(1000, 1000, 8_000) == 8_000  # alone: all of it
    assert slices.claim_size(8, 32, 300) == 100  # at least a slice
    assert slices.claim_size(0, 0, 0) == 100


def claim(job: Job, owner: str, items: int = SLICE) -> JobSlice | None:
    held = slices.slices_claim(job.pk, owner, items)
    assert len(held) <= 1
    return held[0] if held else None


def test_two_owners_claim_different_slices_and_none_is_claimed_twice(
    team: Any, together: Any
) -> None:
    job = big_job(team, together)
    cut(job)
    claims = []
    for owner in ["a", "b", "a"]:
        claimed = claim(job, owner)
        claims.append(None if claimed is None else (claimed.number, claimed.owner))
    assert claims == [(0, "a"), (1, "b"), (2, "a")]
    # One claim of several slices: one UPDATE, the next in order.
    assert [(s.number, s.owner) for s in slices.slices_claim(job.pk, "b", 25)] == [(3, "b")]
    assert slices.slices_claim(job.pk, "a", 100) == []
    ranges = [range(s.start_index, s.end_index) for s in JobSlice.objects.filter(job=job)]
    covered = Counter(i for r in ranges for i in r)
    assert set(covered.values()) == {1}
    assert set(range(35)) <= set(covered)
    assert slices.other_owners(job.pk, "a") == 1
    assert slices.other_owners(job.pk, "c") == 2
    slices.helper_enqueue(job.pk)  # a helper queued, not started: no share yet
    assert slices.other_owners(job.pk, "c") == 2


def test_an_expired_slice_is_taken_over_and_only_its_unrecorded_rows_go_again(
    team: Any, together: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = big_job(team, together, n=20)
    cut(job)
    dead = claim(job, "dead")
    assert dead is not None and dead.number == 0
    # The dead worker recorded rows 0-3 and had 2 calls in flight when it died.
    recorded = list(Item.objects.filter(job=job, index__lt=4))
    changes = Changes()
    for item in recorded:
        changes.add(item, item.status)
        item.status, item.output = "completed", "before the kill"
    assert items_write(
        job.pk,
        changes,
        job_fields={"items_running": 2},
        guard=lambda: slices.slices_hold([dead.pk], "dead", 2),
    )
    # Its lease is live: nobody else takes the slice.
    assert claim(job, "other").number == 1
    JobSlice.objects.filter(pk=dead.pk).update(lease_expires_at=clock.now() - timedelta(seconds=1))
    slices.slices_let_go(job.pk, "other")

    as_owner(monkeypatch, "helper")
    assert worker.advance_slices(job.pk) == "completed"

    job.refresh_from_db()
    assert job.status == "completed" and job.items_completed == 20 and job.items_running == 0
    assert sent(together) == Counter(f"row {i:04d}" for i in range(4, 20))
    first = JobSlice.objects.get(pk=dead.pk)
    assert (first.state, first.owner, first.takeovers) == ("done", "helper", 1)
    assert job.events.filter(message__contains="Prompts 1–10 resumed after a worker").exists()
    assert (
        list(Item.objects.filter(job=job, index__lt=4).values_list("output", flat=True))
        == ["before the kill"] * 4
    )


def test_a_worker_that_lost_its_slice_writes_nothing(team: Any, together: Any) -> None:
    job = big_job(team, together, n=20)
    cut(job)
    first = claim(job, "slow")
    JobSlice.objects.filter(pk=first.pk).update(lease_expires_at=clock.now() - timedelta(seconds=1))
    JobSlice.objects.filter(job=job, number=1).update(state="done")
    assert claim(job, "fast").pk == first.pk
    item = Item.objects.get(job=job, index=0)
    changes = Changes()
    changes.add(item, item.status)
    item.status, item.output = "completed", "late"
    assert not items_write(job.pk, changes, guard=lambda: slices.slices_hold([first.pk], "slow"))
    job.refresh_from_db()
    assert job.items_completed == 0
    assert Item.objects.get(pk=item.pk).status == "pending"


def test_a_takeover_takes_the_dead_workers_calls_off_the_running_count(
    team: Any, together: Any
) -> None:
    job = big_job(team, together, n=20)
    cut(job)
    dead = claim(job, "dead")
    assert items_write(
        job.pk,
        Changes(),
        job_fields={"items_running": 3},
        guard=lambda: slices.slices_hold([dead.pk], "dead", 3),
    )
    JobSlice.objects.filter(pk=dead.pk).update(lease_expires_at=clock.now() - timedelta(seconds=1))
    claim(job, "b")  # the unclaimed slice 1 goes first
    assert claim(job, "b").pk == dead.pk
    job.refresh_from_db()
    assert job.items_running == 0


def test_a_slice_taken_over_too_often_fails_the_job(
    team: Any, together: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = big_job(team, together, n=20)
    cut(job)
    JobSlice.objects.filter(job=job, number=0).update(
        state="running",
        owner="dead",
        takeovers=slices.MAX_TAKEOVERS,
        lease_expires_at=clock.now() - timedelta(seconds=1),
    )
    JobSlice.objects.filter(job=job, number=1).update(state="done")
    as_owner(monkeypatch, "helper")
    assert worker.advance_slices(job.pk) == "failed"
    job.refresh_from_db()
    assert job.status == "failed"
    assert "Gave up after 6 interrupted attempts at prompts 1–10" in job.error
    assert not together.log


def test_a_helper_on_a_cancelled_job_does_nothing(team: Any, together: Any) -> None:
    job = big_job(team, together, n=20)
    cut(job)
    job_transition(job.pk, JobStatus.CANCELLED)
    assert worker.advance_slices(job.pk) == "skipped"
    assert not together.log


def test_a_helper_started_queues_the_next_while_slices_are_unclaimed(
    team: Any, together: Any, nudges: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = big_job(team, together, n=20)
    cut(job)
    assert slices.helper_enqueue(job.pk)
    assert not slices.helper_enqueue(job.pk)  # one waits in the broker at a time
    as_owner(monkeypatch, "helper")
    assert worker.advance_slices(job.pk) == "completed"
    # It queued the next when it took slice 0 with slice 1 unclaimed.
    assert nudges.count(("dashboard.tasks.advance_slices", job.pk)) == 2
    # Nothing left to claim: no more helpers.
    assert not slices.helper_enqueue(job.pk)


def test_workers_on_one_job_share_the_credentials_slots(team: Any, together: Any) -> None:
    job = big_job(team, together, n=40, max_concurrency=8)
    credential = job.credential
    cut(job)
    assert runner._slots_for(job, credential, "a", 8, [], False) == 8
    # b arrives: nothing free for it until a takes its share at its next claim.
    assert runner._slots_for(job, credential, "b", 4, [], False) == 0
    assert limits.slots_resize(credential, "a", 4) == 4
    assert runner._slots_for(job, credential, "b", 4, [], False) == 4
    holders = Counter(CredentialSlot.objects.filter(credential=credential).values_list("holder"))
    assert holders == {("a",): 4, ("b",): 4}
    assert limits.slots_resize(credential, "a", 6) == 4  # no more free


def test_the_job_ends_once_when_the_last_slice_is_done(
    team: Any, together: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = big_job(team, together, n=20)
    cut(job)
    as_owner(monkeypatch, "a")
    assert worker.advance_slices(job.pk) == "completed"
    as_owner(monkeypatch, "b")
    assert worker.advance_slices(job.pk) == "skipped"
    job.refresh_from_db()
    assert job.events.filter(message__startswith="Completed").count() == 1
    assert sum(sent(together).values()) == 20
