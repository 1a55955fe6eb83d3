"""One step of a job, as a task runs it: take the job's lease, check what may
stop it (takeovers, deadline, a deleted credential, the Bytez instance gate),
then hand it to the sync runner, the async submitter or, for a batch job,
the batch engine (``jobs/batch.py``)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q

from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.core.connect import build_provider
from dashboard.core.logs import redact
from dashboard.instances.gate import bytez_job_gate
from dashboard.models import Job
from dashboard.status import JobStatus
from providers import ErrorKind, Provider, ProviderError

from . import limits, slices
from .batch import advance_batch_job
from .leases import (
    lease_job,
    release_job,
    renew_job,
    worker_id,
)
from .retry import Deferred
from .runner import run_slices, run_sync_job
from .services import event_add, job_fail, job_transition
from .submitter import submit_async_job

logger = logging.getLogger(__name__)

#: Times a worker may take a job over from a crashed worker before giving up.
MAX_TAKEOVERS = 5


def advance_job(job_id: int, *, budget: float | None = None) -> str:
    """Do the next step of a job. Returns what happened (for logs and tests)."""
    owner = worker_id()
    job = lease_job(job_id, owner)
    if job is None:
        return "skipped"
    deadline = clock.monotonic() + (budget if budget is not None else settings.TASK_BUDGET)
    next_check_in: float | None = None
    try:
        if job.attempts > MAX_TAKEOVERS:
            job_fail(job.pk, f"Gave up after {job.attempts} interrupted attempts.", retryable=True)
            return "failed"
        if job.deadline_at and job.deadline_at <= clock.now():
            job_fail(job.pk, "The job passed its deadline before finishing.", retryable=True)
            return "failed"
        if job.credential is None:
            job_fail(job.pk, "The job's credential was deleted.")
            return "failed"
        provider = build_provider(job.credential)
        with provider:
            return _work(job, provider, deadline, owner)
    except Deferred as deferred:
        next_check_in = max(0.0, deferred.when - clock.monotonic())
        event_add(job.pk, f"Paused: {deferred.reason}; resuming in {next_check_in:.0f} s.")
        if next_check_in < 1:
            next_check_in = 0.0  # due at once, so the successor nudged below may take it
        return "deferred"
    except Exception as exc:
        return _failed(job, exc)
    finally:
        release_job(job_id, owner, next_check_in=next_check_in)
        if job.credential_id and limits.slots_release(job.credential_id, owner):
            nudge_waiting_jobs(job.credential_id, exclude=job_id)
        if next_check_in is not None and next_check_in < 1:
            tasks_queue.nudge_job(job_id)


def advance_slices(job_id: int, *, budget: float | None = None) -> str:
    """A helper on a big job (``jobs/slices.py``): claim its slices and run
    them until none is left, the task's budget is spent or the credential
    asks to wait. The job's own task does the rest (its status, deadline and
    end); a helper only works on items. Returns what happened."""
    owner = worker_id()
    slices.helper_started(job_id)
    job = (
        Job.objects.filter(pk=job_id, status=JobStatus.RUNNING, mode=Job.Mode.ONLINE)
        .select_related("credential")
        .first()
    )
    if job is None or job.credential is None:
        return "skipped"
    if job.deadline_at and job.deadline_at <= clock.now():
        return "skipped"  # the job's own task (or the sweep) fails it
    deadline = clock.monotonic() + (budget if budget is not None else settings.TASK_BUDGET)
    try:
        provider = build_provider(job.credential)
        with provider:
            if provider.kind != "sync":
                return "skipped"
            return run_slices(job, provider, deadline, owner, job_lease=False)
    except Deferred as deferred:
        if deferred.when - clock.monotonic() < 1:
            slices.helper_enqueue(job_id)  # its budget spent: a successor goes on
        else:
            _due_by(job_id, deferred.when)
        return "deferred"
    except Exception as exc:
        return _failed(job, exc)
    finally:
        if limits.slots_release(job.credential_id, owner):
            nudge_waiting_jobs(job.credential_id, exclude=job_id)


def _due_by(job_id: int, when: float) -> None:
    """A helper was told to wait (a pause, an open circuit): the job is due
    again by then at the latest, whoever holds it next."""
    moment = clock.now() + timedelta(seconds=max(0.0, when - clock.monotonic()))
    Job.objects.filter(pk=job_id, lease_owner="").filter(
        Q(next_check_at__isnull=True) | Q(next_check_at__gt=moment)
    ).update(next_check_at=moment)


def _failed(job: Job, exc: Exception) -> str:
    """The job fails with what went wrong: a provider's error in its words
    (redacted), anything else as an internal error, logged with its traceback."""
    if isinstance(exc, ProviderError):
        job_fail(job.pk, redact(exc.message), retryable=exc.retryable)
    else:
        logger.exception("Job %s: unexpected error", job.pk)
        job_fail(
            job.pk, f"Internal error while running the job: {type(exc).__name__}", retryable=True
        )
    return "failed"


#: A pause this short is waited out inside the task, holding the lease, rather
#: than handed to the once-a-minute sweep.
SHORT_PAUSE = 3.0


def _work(job: Job, provider: Provider, deadline: float, owner: str) -> str:
    while True:
        try:
            if job.mode == Job.Mode.BATCH:
                return advance_batch_job(job, provider, owner)
            if provider.has_instances and job.status != JobStatus.RUNNING:
                _instance_gate(job)
            if provider.kind == "sync":
                return run_sync_job(job, provider, deadline, owner)
            return submit_async_job(job, provider, deadline, owner)
        except Deferred as deferred:
            pause = deferred.when - clock.monotonic()
            if not 0 < pause <= SHORT_PAUSE or clock.monotonic() + pause >= deadline:
                raise
            clock.sleep(pause)
            if not renew_job(job.pk, owner):
                return "stopped"
            job.refresh_from_db()
            if job.is_terminal:
                return "stopped"


def _instance_gate(job: Job) -> None:
    """Bytez: run only on a loaded model. Wait (queued) while its instance
    loads; fail at once, saying how to load it, when there is none."""
    verdict = bytez_job_gate(job)
    if verdict is None:
        return
    action, message = verdict
    if action == "fail":
        raise ProviderError(message, kind=ErrorKind.NOT_FOUND)
    if job.status == JobStatus.PENDING:
        job_transition(job.pk, JobStatus.QUEUED, provider_status=message, message=message)
    else:
        Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(provider_status=message)
    raise Deferred(clock.monotonic() + 2.0, message)


def nudge_waiting_jobs(credential_id: int, *, exclude: int | None = None) -> None:
    """Slots were freed: the jobs of this credential that wait for one go now,
    those whose pause still runs and those whose pause has passed with nobody
    to take them (the sweep comes once a minute)."""
    waiting = list(
        Job.objects.filter(
            credential_id=credential_id,
            status__in=[JobStatus.PENDING, JobStatus.RUNNING],
            lease_owner="",
            next_check_at__isnull=False,
            units__isnull=True,
            mode=Job.Mode.ONLINE,
        )
        .exclude(pk=exclude)
        .order_by("created_at")
        .values_list("pk", flat=True)[:20]
    )
    if waiting:
        Job.objects.filter(pk__in=waiting).update(next_check_at=clock.now())
        for job_id in waiting:
            tasks_queue.nudge_job(job_id)
