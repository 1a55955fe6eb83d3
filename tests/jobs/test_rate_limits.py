"""Rate limits shared by every job: a 429 is a pause, not a failed attempt;
``rpm``/``tpm`` windows across workers; the provider's rate headers slow the
credential down before it is refused."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from dashboard.jobs import worker
from dashboard.models import Job
from providers.simulators.base import Fault
from tests.conftest import make_credential, make_job

pytestmark = pytest.mark.django_db


def run(job: Job) -> Job:
    while worker.advance_job(job.pk) == "deferred":
        Job.objects.filter(pk=job.pk).update(next_check_at=None)
    job.refresh_from_db()
    return job


def every_other_call_refused(
    sim: Any, headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> list[float]:
    """Answer every second inference call with 429 (the given headers); returns
    the moments at which the simulator answered a call for real."""
    seen = {"n": 0}
    answered: list[float] = []
    lock = threading.Lock()
    take = sim.take_fault

    def take_fault(request: Any) -> Fault | None:
        if request.path != "/inference":
            return take(request)
        with lock:
            seen["n"] += 1
            if seen["n"] % 2 == 0:
                return Fault(status=429, headers=headers, body={"error": "slow down"})
            answered.append(time.monotonic())
        return None

    monkeypatch.setattr(sim, "take_fault", take_fault)
    return answered


def test_a_429_never_costs_a_row(team: Any, sims: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """8 prompts on a credential the provider refuses every other call (429,
    Retry-After: 1): every row completes; a 429 is a pause, not an attempt."""
    sim = sims.get("together")
    every_other_call_refused(sim, {"Retry-After": "1"}, monkeypatch)
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=8)
    job = run(make_job(credential, [f"p{i}" for i in range(8)]))
    assert job.status == "completed", list(job.events.values_list("message", flat=True))
    assert job.items_completed == 8 and job.items_failed == 0
    assert sim.count("fault 429") >= 4
    # The refusals did not use up the rows' attempts.
    assert max(job.items.values_list("attempts", flat=True)) == 1
