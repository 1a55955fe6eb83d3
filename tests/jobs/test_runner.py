"""A Together job through the worker's own code, against the simulator on loopback."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.jobs import leases, retry, runner, worker
from dashboard.models import Job, JobEvent
from providers.simulators import completion_text
from tests.conftest import item_errors, make_credential, make_job, outputs

pytestmark = pytest.mark.django_db


@pytest.fixture
def together(sims: Any) -> Any:
    return sims.get("together")


def run(job: Job) -> Job:
    worker.advance_job(job.pk)
    job.refresh_from_db()
    return job


def statuses(job: Job) -> list[str]:
    return [e.message for e in job.events.order_by("id")]


def test_completes_with_the_simulator_text(team: Any, together: Any) -> None:
    credential = make_credential(team, base_url=together.base_url)
    job = make_job(
        credential, ["The capital of France is", "<script>alert(1)</script>"], max_tokens=50
    )
    assert job.status == "pending"

    job = run(job)

    assert job.status == "completed"
    assert outputs(job) == [
        completion_text("test-model", "The capital of France is", 50),
        completion_text("test-model", "<script>alert(1)</script>", 50),
    ]
    assert job.progress_done == job.progress_total == 2
    assert job.started_at and job.finished_at and job.started_at <= job.finished_at
    assert together.count("POST /inference") == 2
    messages = statuses(job)
    assert messages[0].startswith("Saved: 2 prompt(s)")
    assert messages[1] == "Running on Together."
    assert messages[-1] == "Completed: 2 of 2 prompt(s) completed."


def test_request_has_the_documented_shape(team: Any, together: Any) -> None:
    together.keep_log = True
    together.log.clear()
    credential = make_credential(team, base_url=together.base_url)
    run(
        make_job(
            credential,
            ["Q: hi"],
            model="togethercomputer/RedPajama-INCITE-7B-Instruct",
            temperature=0.7,
            top_p=0.7,
            top_k=50,
            max_tokens=1,
            repetition_penalty=1.0,
        )
    )
    (request,) = together.log
    assert request.path == "/inference"
    assert request.headers["authorization"] == "Bearer sim-secret-key"
    assert request.json() == {
        "model": "togethercomputer/RedPajama-INCITE-7B-Instruct",
        "prompt": "Q: hi",
        "temperature": 0.7,
        "top_p": 0.7,
        "top_k": 50,
        "max_tokens": 1,
        "repetition_penalty": 1.0,
    }


def test_a_second_worker_does_not_take_a_leased_job(team: Any, together: Any) -> None:
    credential = make_credential(team, base_url=together.base_url)
    job = make_job(credential)
    assert leases.lease_job(job.pk, "worker-a") is not None
    assert worker.advance_job(job.pk) == "skipped"
    assert together.count("POST /inference") == 0


def test_cancelled_while_queued_is_never_run(team: Any, together: Any) -> None:
    from dashboard.jobs.services import job_cancel

    credential = make_credential(team, base_url=together.base_url)
    job = make_job(credential)
    assert job_cancel(job)
    assert worker.advance_job(job.pk) == "skipped"
    job.refresh_from_db()
    assert job.status == "cancelled"
    assert together.count("POST /inference") == 0


# --- the fault matrix for Together: final status, message, attempts ---------------


def test_401_fails_with_authentication_message(team: Any, together: Any) -> None:
    credential = make_credential(team, base_url=together.base_url, secret="wrong-key")
    job = run(make_job(credential))
    assert job.status == "failed"
    assert "authentication" in job.error
    assert together.count("POST /inference") == 1
    assert not job.error_retryable


def test_429_waits_retry_after_then_succeeds(team: Any, together: Any, waits: list[float]) -> None:
    together.add_fault(status=429, headers={"Retry-After": "3"}, body={"error": "slow down"})
    credential = make_credential(team, base_url=together.base_url)
    job = run(make_job(credential))
    assert job.status == "completed"
    # One wait of what is left of the 3 s asked once the 429 was recorded.
    assert len(waits) == 1 and 2.0 < waits[0] <= 3.0
    assert together.count("POST /inference") == 1  # the fault answered the first
    assert together.count("fault 429") == 1
    retry = job.events.get(kind=JobEvent.Kind.RETRY)
    # A 429 is a pause, not an attempt.
    assert "Prompt 1 wait 3.0 s (not counted as an attempt)" in retry.message
    assert "rate limiting" in retry.message


def test_500_then_ok_retries_once(
    team: Any, together: Any, waits: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []

    def recorded_backoff(attempt: int, retry_after: float | None = None) -> float:
        delays.append(retry.backoff(attempt, retry_after))
        return delays[-1]

    monkeypatch.setattr(runner, "backoff", recorded_backoff)
    together.add_fault(status=500, times=1)
    credential = make_credential(team, base_url=together.base_url)
    job = run(make_job(credential))
    assert job.status == "completed"
    # The first retry is scheduled 0.25-0.5 s out; the sleep is what is left of
    # that once the failure was recorded, so it may be a little shorter.
    assert len(delays) == 1 and 0.25 <= delays[0] <= 0.5
    assert len(waits) == 1 and 0 < waits[0] <= delays[0]
    assert job.events.filter(kind=JobEvent.Kind.RETRY).count() == 1


def test_500_every_time_gives_up_after_bounded_attempts(
    team: Any, together: Any, waits: list[float]
) -> None:
    together.add_fault(status=503, times=10)
    credential = make_credential(team, base_url=together.base_url)
    job = run(make_job(credential))
    assert job.status == "failed"
    assert "server error (HTTP 503)" in job.error
    assert together.count("fault 503") == retry.MAX_CALL_ATTEMPTS
    assert len(waits) == retry.MAX_CALL_ATTEMPTS - 1
    assert waits == sorted(waits)  # exponential backoff


def test_timeout_retries_then_fails(
    team: Any, together: Any, settings: Any, waits: list[float]
) -> None:
    settings.DASHBOARD_HTTP_TIMEOUT = 0.2
    together.add_fault(status=200, delay=0.5, times=10)
    credential = make_credential(team, base_url=together.base_url)
    job = run(make_job(credential))
    assert job.status == "failed"
    assert "did not answer in time" in job.error
    assert together.count("fault 200") == retry.MAX_CALL_ATTEMPTS


def test_malformed_json_fails_with_readable_message(team: Any, together: Any) -> None:
    together.add_fault(status=200, body="<html>oops</html>", content_type="text/html")
    credential = make_credential(team, base_url=together.base_url)
    job = run(make_job(credential))
    assert job.status == "failed"
    assert "not JSON" in job.error
    assert together.count("fault 200") == 1  # a bad body is not retried


def test_json_without_text_fails(team: Any, together: Any) -> None:
    together.add_fault(status=200, body={"status": "finished", "output": {"choices": []}})
    credential = make_credential(team, base_url=together.base_url)
    job = run(make_job(credential))
    assert job.status == "failed"
    assert "without text" in job.error


def test_connection_refused_fails_readably(team: Any) -> None:
    credential = make_credential(team, base_url="http://127.0.0.1:9")
    job = run(make_job(credential))
    assert job.status == "failed"
    assert "Could not connect to Together" in job.error


def test_base_url_on_metadata_address_is_refused(team: Any, settings: Any) -> None:
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = []
    credential = make_credential(team, base_url="http://169.254.169.254")
    job = run(make_job(credential))
    assert job.status == "failed"
    assert "DASHBOARD_ALLOWED_PRIVATE_HOSTS" in job.error


def test_partial_failure_keeps_the_good_outputs(team: Any, together: Any) -> None:
    together.add_fault(status=400, body={"error": "bad prompt"}, times=1)
    credential = make_credential(team, base_url=together.base_url, max_concurrency=1)
    job = run(make_job(credential, ["one", "two", "three"]))
    # At least one row completed: the job completed, and says a row failed.
    assert job.status == "completed" and job.outcome == "completed · 1 failed"
    assert "1 of 3 prompts failed" in job.error
    assert outputs(job)[0] is None
    assert outputs(job)[1:] == [completion_text("test-model", p) for p in ("two", "three")]
    assert "bad prompt" in item_errors(job)["0"]


def test_an_invalid_key_turns_the_credential_health_at_once(team: Any, together: Any) -> None:
    """Health tells the truth: a 401 from a job's call, not only from a
    connection test, marks the credential at once (it once stayed "OK")."""
    credential = make_credential(team, base_url=together.base_url, secret="wrong-key")
    job = run(make_job(credential))
    assert job.status == "failed"
    credential.refresh_from_db()
    assert credential.health == "auth_failed"
    assert "wrong-key" not in credential.health_detail
    good = make_credential(team, base_url=together.base_url)
    run(make_job(good))
    good.refresh_from_db()
    assert good.health == "ok"


def test_poll_rounds_and_submits_record_health(team: Any, sims: Any) -> None:
    sim = sims.get("gridrepublic")
    credential = make_credential(team, "gridrepublic", base_url=sim.base_url, secret="wrong")
    run(make_job(credential))
    credential.refresh_from_db()
    assert credential.health == "auth_failed"
