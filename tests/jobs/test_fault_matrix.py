"""The fault matrix: each provider x (401, 429 with Retry-After, 500 then OK,
timeout, malformed JSON). Final status, message and number of attempts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from dashboard.core import connect
from dashboard.jobs import poller, retry, worker
from dashboard.models import Job, JobEvent
from tests.conftest import FakeClock, make_credential, make_job, use_clock
from tests.jobs.test_engine_providers import _load_bytez

pytestmark = pytest.mark.django_db

SYNC = {
    "together": ("POST", "/inference"),
    "lamini": ("POST", "/v1/completions"),
    "bytez": ("POST", "/model/run"),
}
ASYNC = {
    "mymagic": ("/v1/completions", "/v1/job_status/"),
    "gridrepublic": ("/remotejobs/v2/jobs$", "/remotejobs/v2/jobs/"),
}
MODELS = {"bytez": "openai-community/gpt2", "mymagic": "llama3_70b"}


def _job(slug: str, credential: Any) -> Job:
    extra = {"question": "q"} if slug == "mymagic" else {}
    return make_job(credential, ["hello"], model=MODELS.get(slug, "m"), **extra)


def _drive(credential: Any, job: Job, clock: FakeClock, rounds: int = 30) -> Job:
    worker.advance_job(job.pk)
    provider = connect.build_provider(credential)
    for _ in range(rounds):
        units = poller.due_units(credential.pk, timezone.now() + timedelta(hours=1))
        if not units:
            break
        poller.poll_round(provider, units)
        clock.advance(1.0)
    job.refresh_from_db()
    return job


@pytest.fixture
def setup(sims: Any, team: Any, sim_clock: FakeClock, settings: Any) -> Any:
    settings.DASHBOARD_HTTP_TIMEOUT = 0.3

    def make(slug: str, **credential_extra: Any) -> tuple[Any, Any]:
        sim = sims.get(slug)
        if slug == "bytez":
            _load_bytez(sim, MODELS["bytez"])
        elif slug in ASYNC:
            use_clock(sim, sim_clock, step_seconds=1.0)
        return sim, make_credential(team, slug, base_url=sim.base_url, **credential_extra)

    return make


# --- synchronous providers: every call is safe to retry -----------------------------------


@pytest.mark.parametrize("slug", list(SYNC))
def test_sync_401(slug: str, setup: Any) -> None:
    sim, credential = setup(slug, secret="wrong-key")
    job = _drive(credential, _job(slug, credential), FakeClock())
    assert job.status == "failed" and "authentication" in job.error
    assert sim.count(" ".join(SYNC[slug])) == 1


@pytest.mark.parametrize("slug", list(SYNC))
def test_sync_429_with_retry_after(slug: str, setup: Any, waits: list[float]) -> None:
    sim, credential = setup(slug)
    method, path = SYNC[slug]
    sim.add_fault(status=429, headers={"Retry-After": "2"}, method=method, path=path)
    job = _drive(credential, _job(slug, credential), FakeClock())
    assert job.status == "completed", job.error
    # One wait of what is left of the 2 s asked once the 429 was recorded.
    assert len(waits) == 1 and 1.0 < waits[0] <= 2.0
    assert sim.count("fault 429") == 1 and sim.count(f"{method} {path}") == 1


@pytest.mark.parametrize("slug", list(SYNC))
def test_sync_500_then_ok(slug: str, setup: Any, waits: list[float]) -> None:
    sim, credential = setup(slug)
    method, path = SYNC[slug]
    sim.add_fault(status=500, method=method, path=path)
    job = _drive(credential, _job(slug, credential), FakeClock())
    assert job.status == "completed", job.error
    assert sim.count("fault 500") == 1 and len(waits) == 1
    assert (
        job.events.filter(
            kind=JobEvent.Kind.RETRY, message__contains="server error (HTTP 500)"
        ).count()
        == 1
    )


@pytest.mark.parametrize("slug", list(SYNC))
def test_sync_timeout(slug: str, setup: Any) -> None:
    sim, credential = setup(slug)
    method, path = SYNC[slug]
    sim.add_fault(status=200, delay=0.6, times=10, method=method, path=path)
    job = _drive(credential, _job(slug, credential), FakeClock())
    assert job.status == "failed" and "did not answer in time" in job.error
    assert sim.count("fault 200") == retry.MAX_CALL_ATTEMPTS


@pytest.mark.parametrize("slug", list(SYNC))
def test_sync_malformed_json(slug: str, setup: Any) -> None:
    sim, credential = setup(slug)
    method, path = SYNC[slug]
    sim.add_fault(status=200, body="{not json", method=method, path=path)
    job = _drive(credential, _job(slug, credential), FakeClock())
    assert job.status == "failed"
    assert "not JSON" in job.error or "unexpected" in job.error
    assert sim.count("fault 200") == 1


# --- asynchronous providers: a submit is retried only when surely nothing was created --------


@pytest.mark.parametrize("slug", list(ASYNC))
def test_async_401(slug: str, setup: Any, sim_clock: FakeClock) -> None:
    sim, credential = setup(slug, secret="wrong-key")
    job = _drive(credential, _job(slug, credential), sim_clock)
    assert job.status == "failed" and "authentication" in job.error
    assert sim.submissions == 0 and not job.error_retryable


@pytest.mark.parametrize("slug", list(ASYNC))
def test_async_429_on_submit_waits_and_submits_once(
    slug: str, setup: Any, sim_clock: FakeClock, waits: list[float]
) -> None:
    sim, credential = setup(slug)
    sim.add_fault(status=429, headers={"Retry-After": "5"}, method="POST", path=ASYNC[slug][0])
    job = _drive(credential, _job(slug, credential), sim_clock)
    assert job.status == "completed", job.error
    assert waits[0] == 5.0
    assert sim.submissions == 1 and sim.count("fault 429") == 1


@pytest.mark.parametrize("slug", list(ASYNC))
def test_async_500_then_ok_on_poll(slug: str, setup: Any, sim_clock: FakeClock) -> None:
    sim, credential = setup(slug)
    sim.add_fault(status=500, method="GET", path=ASYNC[slug][1])
    job = _drive(credential, _job(slug, credential), sim_clock)
    assert job.status == "completed", job.error
    assert sim.submissions == 1 and sim.count("fault 500") == 1
    assert (
        job.events.filter(
            kind=JobEvent.Kind.RETRY, message__startswith="Status check 1 failed"
        ).count()
        == 1
    )


@pytest.mark.parametrize("slug", list(ASYNC))
def test_async_500_on_submit_is_not_resubmitted(
    slug: str, setup: Any, sim_clock: FakeClock
) -> None:
    sim, credential = setup(slug)
    sim.add_fault(status=500, method="POST", path=ASYNC[slug][0])
    job = _drive(credential, _job(slug, credential), sim_clock)
    assert job.status == "failed" and job.error.startswith("Outcome unknown, not resubmitted")
    assert sim.count("fault 500") == 1 and sim.submissions == 0


@pytest.mark.parametrize("slug", list(ASYNC))
def test_async_timeout_on_poll_is_retried(slug: str, setup: Any, sim_clock: FakeClock) -> None:
    sim, credential = setup(slug)
    sim.add_fault(status=200, delay=0.6, times=2, method="GET", path=ASYNC[slug][1])
    job = _drive(credential, _job(slug, credential), sim_clock)
    assert job.status == "completed", job.error
    assert sim.submissions == 1 and sim.count("fault 200") == 2


@pytest.mark.parametrize("slug", list(ASYNC))
def test_async_timeout_on_submit_is_outcome_unknown(
    slug: str, setup: Any, sim_clock: FakeClock
) -> None:
    sim, credential = setup(slug)
    sim.add_fault(status=200, delay=0.6, method="POST", path=ASYNC[slug][0])
    job = _drive(credential, _job(slug, credential), sim_clock)
    assert (
        job.status == "failed"
        and "Outcome unknown" in job.error
        and "did not answer in time" in job.error
    )


@pytest.mark.parametrize("slug", list(ASYNC))
def test_async_malformed_json_on_poll_gives_up_after_bounded_checks(
    slug: str, setup: Any, sim_clock: FakeClock
) -> None:
    sim, credential = setup(slug)
    sim.add_fault(
        status=200,
        body="<html>proxy error</html>",
        content_type="text/html",
        times=100,
        method="GET",
        path=ASYNC[slug][1],
    )
    job = _drive(credential, _job(slug, credential), sim_clock, rounds=50)
    assert job.status == "failed"
    assert f"Gave up after {poller.MAX_POLL_FAILURES} failed status checks" in job.error
    assert "not JSON" in job.error
    assert sim.count("fault 200") == poller.MAX_POLL_FAILURES and sim.submissions == 1
