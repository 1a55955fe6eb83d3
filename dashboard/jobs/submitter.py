"""The async submitter (MyMagic, GridRepublic): each unit is submitted once.

Submitting is a non-idempotent POST, so the "submitting" step is recorded
before it: a crash from there on leaves the unit for the sweep to mark
"outcome unknown", never to submit again. A failed POST is sent again only
when it surely created nothing (connection refused, 429)."""

from __future__ import annotations

import logging
from typing import Any

from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.core.health import credential_record_call
from dashboard.core.logs import redact
from dashboard.models import Credential, Job, JobEvent, JobUnit
from dashboard.status import JOB_ACTIVE, JobStatus
from providers import JobSpec, Provider, ProviderError

from . import limits
from .leases import (
    renew_job,
)
from .retry import MAX_CALL_ATTEMPTS, Deferred, backoff
from .services import event_add, job_fail, job_transition

logger = logging.getLogger(__name__)


def submit_async_job(job: Job, provider: Provider, deadline: float, owner: str = "") -> str:
    # The request carries the prompts, so this is the one place they are all read.
    prompts = list(job.items.order_by("index").values_list("input", flat=True))
    spec = JobSpec.from_dict({**job.spec, "prompts": prompts})
    provider.validate(spec)
    if not job.units.exists():
        JobUnit.objects.bulk_create(
            [
                JobUnit(job=job, index=i, prompt_indexes=unit)
                for i, unit in enumerate(provider.units(spec))
            ],
            ignore_conflicts=True,
        )
    for unit in job.units.filter(state=JobUnit.State.PENDING).order_by("index"):
        if (
            not renew_job(job.pk, owner)
            or not Job.objects.filter(pk=job.pk, status__in=JOB_ACTIVE).exists()
        ):
            return "stopped"
        _check_limits(job.credential, provider)
        outcome = _submit_unit(job, unit, provider, spec, deadline)
        if outcome != "submitted":
            return outcome
    job_transition(job.pk, JobStatus.QUEUED, provider_status="Submitted")
    nudge_poller(job.credential_id)
    return "submitted"


def _check_limits(credential: Credential | None, provider: Provider) -> None:
    if credential is None:
        return
    seconds = limits.circuit_wait(credential)
    if seconds:
        raise Deferred(
            clock.monotonic() + seconds, f"{provider.label} keeps failing (circuit open)"
        )
    seconds = limits.rate_acquire(credential)
    if seconds:
        raise Deferred(
            clock.monotonic() + seconds, "the credential's requests-per-minute limit is reached"
        )


def _submit_unit(job: Job, unit: JobUnit, provider: Provider, spec: Any, deadline: float) -> str:
    attempt = 1
    while True:
        # Record the step before the non-idempotent POST: a crash from here on
        # leaves the unit 'submitting', which is reconciled, never resubmitted.
        if not JobUnit.objects.filter(pk=unit.pk, state=JobUnit.State.PENDING).update(
            state=JobUnit.State.SUBMITTING
        ):
            return "skipped"
        try:
            remote_id = provider.submit(spec, unit.prompt_indexes)
        except ProviderError as exc:
            limits.circuit_record(job.credential_id, failures=[exc])
            credential_record_call(job.credential_id, exc)
            if not (exc.created_nothing and exc.retryable) or attempt >= MAX_CALL_ATTEMPTS:
                return _submit_failed(job, unit, exc)
            # Surely nothing was created (connection refused, 429): safe to send again.
            JobUnit.objects.filter(pk=unit.pk).update(state=JobUnit.State.PENDING)
            delay = backoff(attempt, exc.retry_after)
            message = redact(exc.message)
            if clock.monotonic() + delay > deadline:
                raise Deferred(
                    clock.monotonic() + delay, f"submit not accepted yet: {message}"
                ) from None
            event_add(
                job.pk,
                f"Retry {attempt}/{MAX_CALL_ATTEMPTS - 1} of the submission in {delay:.1f} s after: {message}",
                kind=JobEvent.Kind.RETRY,
            )
            clock.sleep(delay)
            attempt += 1
            continue
        now = clock.now()
        JobUnit.objects.filter(pk=unit.pk).update(
            state=JobUnit.State.SUBMITTED, remote_id=remote_id, submitted_at=now, next_poll_at=now
        )
        credential_record_call(job.credential_id, None)
        event_add(
            job.pk, f"Submitted to {provider.label} as remote job {remote_id}.", unit=unit.index
        )
        return "submitted"


def _submit_failed(job: Job, unit: JobUnit, exc: ProviderError) -> str:
    message = redact(exc.message)
    if exc.created_nothing:
        JobUnit.objects.filter(pk=unit.pk).update(state=JobUnit.State.FAILED, error=message)
        job_fail(job.pk, message, retryable=exc.retryable)
        return "failed"
    # A timeout or 5xx after the POST left: the remote job may exist.
    JobUnit.objects.filter(pk=unit.pk).update(state=JobUnit.State.UNKNOWN, error=message)
    job_fail(
        job.pk,
        f"Outcome unknown, not resubmitted: the submission may or may not have reached "
        f"{job.get_provider_display()} ({message}). Retry to submit again.",
        retryable=True,
    )
    return "failed"


def nudge_poller(credential_id: int | None) -> None:
    if credential_id is not None:
        tasks_queue.nudge_poller(credential_id)
