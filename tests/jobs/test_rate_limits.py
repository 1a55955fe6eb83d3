"""Rate limits shared by every job: a 429 is a pause, not a failed attempt;
``rpm``/``tpm`` windows across workers; the provider's rate headers slow the
credential down before it is refused."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from dashboard.jobs import limits, worker
from dashboard.models import Job
from providers.base import parse_rate_headers
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


def test_rows_fail_from_rate_limits_only_at_the_jobs_deadline(
    team: Any, sims: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sims.get("together")
    sim.add_fault(status=429, headers={"Retry-After": "30"}, times=100)
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=1)
    job = make_job(credential, ["a"])
    Job.objects.filter(pk=job.pk).update(deadline_at=timezone.now() + timedelta(seconds=10))
    job = run(job)
    item = job.items.get()
    assert item.status == "failed" and "deadline" in item.error and "429" in item.error
    assert sim.count("fault 429") == 1  # one refusal, then nothing more to try


def record_calls(sim: Any, monkeypatch: pytest.MonkeyPatch, headers: Any = None) -> list[float]:
    """The moments the simulator answered /inference (``headers(n)`` adds
    headers to answer number ``n``)."""
    moments: list[float] = []
    lock = threading.Lock()
    dispatch = sim.dispatch

    def recorded(request: Any) -> Any:
        response = dispatch(request)
        if request.path == "/inference":
            with lock:
                moments.append(time.monotonic())
                extra = headers(len(moments)) if headers else {}
            response.headers.update(extra)
        return response

    monkeypatch.setattr(sim, "dispatch", recorded)
    return moments


def assert_paced(moments: list[float], per_minute: float, burst: int) -> None:
    """No window of the calls holds more than the burst plus the limit's pace
    over that window (plus one for the window's edges)."""
    moments = sorted(moments)
    rate = per_minute / 60
    for i in range(len(moments)):
        for j in range(i + 1, len(moments)):
            calls = j - i + 1
            allowed = burst + (moments[j] - moments[i]) * rate + 1
            assert calls <= allowed + 0.05, (i, j, moments[j] - moments[i], calls, allowed)


@pytest.mark.django_db(transaction=True)
@pytest.mark.shared_db
def test_rpm_holds_across_two_workers(
    team: Any, sims: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers (threads, each its own connection) on two jobs of one
    credential with rpm 120: the provider sees at most the burst (6 = 3 s of
    the limit) plus 2 a second, in any window."""
    sim = sims.get("together")
    moments = record_calls(sim, monkeypatch)
    credential = make_credential(
        team, base_url=sim.base_url, max_concurrency=4, requests_per_minute=120
    )
    jobs = [make_job(credential, [f"{n}-{i}" for i in range(8)]) for n in range(2)]
    results: list[str] = []

    def work(job: Job) -> None:
        try:
            while (outcome := worker.advance_job(job.pk)) == "deferred":
                Job.objects.filter(pk=job.pk).update(next_check_at=None)
            results.append(outcome)
        finally:
            connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == ["completed", "completed"]
    assert len(moments) == 16
    assert limits.burst(120) == 6
    assert_paced(moments, 120, 6)
    # 16 calls, 6 at once, then 10 at 2 a second: about 5 s, not much more.
    assert 4.5 <= time.monotonic() - started < 12
    credential.refresh_from_db()
    assert credential.last_limited_at is not None


def test_tpm_paces_calls_by_their_tokens(
    team: Any, sims: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each call counts its prompt's estimated tokens (1 for "pN") plus its
    max_tokens (10): tpm 660 is one call a second, after a burst of three."""
    sim = sims.get("together")
    moments = record_calls(sim, monkeypatch)
    credential = make_credential(
        team, base_url=sim.base_url, max_concurrency=4, tokens_per_minute=660
    )
    job = run(make_job(credential, [f"p{i}" for i in range(6)], max_tokens=10))
    assert job.status == "completed" and len(moments) == 6
    assert_paced(moments, 60, 3)
    assert moments[-1] - moments[0] >= 2.5
    credential.refresh_from_db()
    assert limits.rate_pace(credential)["tokens"] >= 11  # the database's or Redis's count


def test_headers_saying_the_budget_is_spent_slow_the_credential_down(
    team: Any, sims: Any, monkeypatch: pytest.MonkeyPatch, waits: list[float]
) -> None:
    """The first answer says no request is left until a reset in 1 s: the
    next call waits about that long, and is never refused."""
    sim = sims.get("together")
    spent = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1s"}
    moments = record_calls(sim, monkeypatch, lambda n: spent if n == 1 else {})
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=1)
    job = run(make_job(credential, ["a", "b"]))
    assert job.status == "completed" and len(moments) == 2
    # The tests' clock records waits instead of sleeping them.
    assert waits and all(0.9 <= wait <= 1.0 for wait in waits), waits
    assert sim.count("fault 429") == 0
    credential.refresh_from_db()
    assert "rate-limit headers" in credential.last_limited_reason


def test_nonsense_rate_headers_are_ignored(
    team: Any, sims: Any, monkeypatch: pytest.MonkeyPatch, waits: list[float]
) -> None:
    sim = sims.get("together")
    nonsense = {
        "x-ratelimit-remaining-requests": "lots",
        "x-ratelimit-remaining-tokens": "-3",
        "x-ratelimit-reset-requests": "soon",
        "x-ratelimit-reset-tokens": "9999999h",
        "retry-after": "tomorrow",
    }
    moments = record_calls(sim, monkeypatch, lambda n: nonsense)
    credential = make_credential(team, base_url=sim.base_url, max_concurrency=1)
    job = run(make_job(credential, ["a", "b", "c"]))
    assert job.status == "completed" and len(moments) == 3
    assert not waits  # nothing paused
    credential.refresh_from_db()
    assert credential.paused_until is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}, 360.0),
        ({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"}, 0.02),
        ({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "1s"}, 0.0),
        ({"retry-after": "2"}, 2.0),
        ({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1x"}, 0.0),
        ({"x-ratelimit-reset-requests": "nan", "retry-after": "inf"}, None),
        ({"x-ratelimit-remaining-requests": "1e9999"}, None),
        ({}, None),
    ],
)
def test_rate_headers_parse(headers: dict[str, str], expected: float | None) -> None:
    rate = parse_rate_headers(httpx.Headers(headers))
    if expected is None:
        assert rate is None
    else:
        assert rate is not None and rate.wait() == pytest.approx(expected)
