"""Per-credential limits across workers: concurrency slots, requests per minute,
and the circuit breaker."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from dashboard.core import clock
from dashboard.jobs import limits, retry, worker
from dashboard.models import Credential, CredentialSlot, Job
from tests.conftest import make_credential, make_job

pytestmark = pytest.mark.django_db


def slots_in_use(credential_id: int) -> int:
    return (
        CredentialSlot.objects.filter(credential_id=credential_id, expires_at__gt=timezone.now())
        .exclude(holder="")
        .count()
    )


def test_slots_are_bounded_and_leased(team: Any) -> None:
    credential = make_credential(team, max_concurrency=2)
    assert limits.slots_acquire(credential, "a", 3) == 2
    assert limits.slots_acquire(credential, "b", 1) == 0
    assert slots_in_use(credential.pk) == 2
    # A killed worker's slots come back once its lease runs out.
    CredentialSlot.objects.filter(holder="a").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert limits.slots_acquire(credential, "b", 2) == 2
    assert limits.slots_release(credential.pk, "b") == 2
    assert slots_in_use(credential.pk) == 0


def test_lowering_max_concurrency_takes_effect(team: Any) -> None:
    credential = make_credential(team, max_concurrency=4)
    limits.slots_acquire(credential, "a", 4)
    limits.slots_release(credential.pk, "a")
    Credential.objects.filter(pk=credential.pk).update(max_concurrency=1)
    credential.refresh_from_db()
    assert limits.slots_acquire(credential, "a", 4) == 1


def test_job_waits_for_a_slot_then_runs(
    team: Any, sims: Any, django_capture_on_commit_callbacks: Any
) -> None:
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=1)
    job = make_job(credential)
    assert limits.slots_acquire(credential, "other-worker", 1) == 1
    assert worker.advance_job(job.pk) == "deferred"
    job.refresh_from_db()
    assert job.status == "pending" and job.provider_status == "waiting for a free slot"
    assert job.next_check_at > timezone.now()
    assert sim.count("POST /inference") == 0
    limits.slots_release(credential.pk, "other-worker")
    worker.nudge_waiting_jobs(credential.pk)
    assert worker.advance_job(job.pk) == "completed"


def test_a_job_whose_pause_has_passed_is_nudged_when_slots_free(
    team: Any, sims: Any, monkeypatch: Any
) -> None:
    """A job paused for a slot whose resume time has already passed (nobody
    took it: the sweep comes once a minute) is woken when another job frees
    its slots, like one whose pause is still running. Figure 13 saw a 17 s
    gap with nothing sent: two jobs due since 15.1 s, woken by the sweep at 34.3 s."""
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=1)
    due, later, other = make_job(credential), make_job(credential), make_job(credential)
    now = timezone.now()
    Job.objects.filter(pk=due.pk).update(next_check_at=now - timedelta(seconds=2))
    Job.objects.filter(pk=later.pk).update(next_check_at=now + timedelta(seconds=2))
    Job.objects.filter(pk=other.pk).update(next_check_at=None)  # not waiting: the sweep's
    nudged: list[int] = []
    monkeypatch.setattr(worker.tasks_queue, "nudge_job", nudged.append)
    worker.nudge_waiting_jobs(credential.pk)
    assert sorted(nudged) == sorted([due.pk, later.pk])


def test_sync_calls_never_exceed_max_concurrency(team: Any, sims: Any) -> None:
    sim = sims.get("together")
    sim.latency = 0.05
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=3)
    job = make_job(credential, [f"p{i}" for i in range(12)])
    assert worker.advance_job(job.pk) == "completed"
    assert sim.count("POST /inference") == 12
    assert sim.max_active == 3


@pytest.mark.django_db(transaction=True)
@pytest.mark.shared_db
def test_two_workers_share_the_limit(team: Any, sims: Any) -> None:
    """Two workers (threads here, each with its own connection) on two jobs of one
    credential: at most max_concurrency calls at once between them."""
    if connection.vendor == "sqlite":
        pass  # SQLite serialises the writers; the limit must hold all the same
    sim = sims.get("together")
    sim.latency = 0.05
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=2)
    jobs = [make_job(credential, [f"{n}-{i}" for i in range(6)]) for n in range(2)]
    results: list[str] = []

    def work(job: Job) -> None:
        try:
            while (outcome := worker.advance_job(job.pk)) == "deferred":
                job.refresh_from_db()
                Job.objects.filter(pk=job.pk).update(next_check_at=None)
            results.append(outcome)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == ["completed", "completed"]
    assert sim.max_active <= 2


def test_requests_per_minute_window(team: Any) -> None:
    """A token bucket: rpm 2 is one call each 30 s (a burst of at least one),
    never two calls at the edge of two calendar minutes."""
    credential = make_credential(team, requests_per_minute=2)
    now = timezone.now().replace(second=10, microsecond=0)
    assert limits.rate_acquire(credential, now) == 0
    assert limits.rate_acquire(credential, now) == pytest.approx(30.0)
    assert limits.rate_acquire(credential, now + timedelta(seconds=29)) == pytest.approx(1.0)
    assert limits.rate_acquire(credential, now + timedelta(seconds=30)) == 0


def test_requests_per_minute_pauses_the_job(team: Any, sims: Any, monkeypatch: Any) -> None:
    # A frozen clock: the next call is 60 s away, never a short pause.
    frozen = timezone.now()
    monkeypatch.setattr(clock, "now", lambda: frozen)
    sim = sims.get("together")
    credential = make_credential(
        team, base_url=sim.base_url, max_concurrency=1, requests_per_minute=1
    )
    job = make_job(credential, ["a", "b", "c"])
    assert worker.advance_job(job.pk) == "deferred"
    job.refresh_from_db()
    assert sim.count("POST /inference") == 1
    assert job.progress_done == 1 and job.status == "running"
    assert job.events.filter(message__contains="requests- or tokens-per-minute limit").exists()
    assert job.next_check_at > timezone.now()


def test_circuit_opens_after_consecutive_failures_and_shows(
    team: Any, sims: Any, client: Any, alice: Any
) -> None:
    sim = sims.get("together")
    sim.add_fault(status=502, times=100)
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=1)
    job = make_job(credential, ["a", "b", "c", "d"])
    assert worker.advance_job(job.pk) == "deferred"
    credential.refresh_from_db()
    assert credential.consecutive_failures >= limits.CIRCUIT_THRESHOLD
    assert credential.circuit_open(timezone.now())
    calls = sim.count("fault 502")
    assert calls == 2 * retry.MAX_CALL_ATTEMPTS  # then it stopped hammering
    job.refresh_from_db()
    assert job.events.filter(message__contains="circuit open").exists()
    client.force_login(alice)
    page = client.get(reverse("credential_list")).content.decode()
    assert "Circuit open" in page and "HTTP 502" in page


def test_success_closes_the_circuit(team: Any) -> None:
    credential = make_credential(team)
    Credential.objects.filter(pk=credential.pk).update(
        consecutive_failures=9, circuit_open_until=timezone.now() + timedelta(minutes=1)
    )
    limits.circuit_record(credential.pk, successes=1)
    credential.refresh_from_db()
    assert credential.consecutive_failures == 0 and credential.circuit_open_until is None
