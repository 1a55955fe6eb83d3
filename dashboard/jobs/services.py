"""Job services: create, cancel, retry, and every status transition.

Each transition is a conditional UPDATE (``WHERE status IN (...)``) checked by
its row count, so concurrent writers (web, workers, admin) never overwrite a
terminal status; it works the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import F
from django.db.models.functions import Coalesce

from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.models import Credential, Job, JobEvent, Team
from dashboard.status import JOB_TERMINAL, JobStatus, sources_for
from providers import JobSpec

from .results import job_rows

logger = logging.getLogger(__name__)


def event_add(
    job_id: int, message: str, *, kind: str = JobEvent.Kind.EVENT, **extra: Any
) -> JobEvent:
    return JobEvent.objects.create(job_id=job_id, kind=kind, message=message, **extra)


def job_transition(
    job_id: int,
    new: str,
    *,
    message: str = "",
    event_kind: str = JobEvent.Kind.EVENT,
    **fields: Any,
) -> bool:
    """Move a job to ``new`` if the status rules allow it from where it is now.

    Returns False when another writer got there first (the job is already
    terminal, or not in a state that leads to ``new``)."""
    now = clock.now()
    updates: dict[str, Any] = dict(fields)
    updates["status"] = new
    if new == JobStatus.RUNNING:
        updates.setdefault("started_at", Coalesce(F("started_at"), now))
    if new in JOB_TERMINAL:
        updates.setdefault("finished_at", now)
        updates.setdefault("started_at", Coalesce(F("started_at"), now))
        updates.update(next_check_at=None, lease_owner="", lease_expires_at=None)
    changed = Job.objects.filter(pk=job_id, status__in=sources_for(new)).update(**updates)
    if changed and message:
        event_add(job_id, message, kind=event_kind)
    return bool(changed)


def job_fail(job_id: int, error: str, *, retryable: bool = False) -> bool:
    return job_transition(
        job_id,
        JobStatus.FAILED,
        error=error,
        error_retryable=retryable,
        message=f"Failed: {error}",
        event_kind=JobEvent.Kind.ERROR,
    )


def job_create(
    *,
    team: Team,
    credential: Credential,
    spec: JobSpec,
    user: Any = None,
    retry_of: Job | None = None,
) -> Job:
    """Save a job and nudge a worker once the transaction commits."""
    now = clock.now()
    deadline = int(spec.options.get("deadline_seconds") or settings.JOB_DEADLINE_SECONDS)
    job = Job.objects.create(
        team=team,
        credential=credential,
        credential_name=credential.name,
        provider=credential.provider,
        model=spec.model,
        spec=spec.to_dict(),
        created_by=user,
        created_at=now,
        progress_total=len(spec.prompts),
        outputs=[None] * len(spec.prompts),
        deadline_at=now + timedelta(seconds=deadline),
        next_check_at=now,
        retry_of=retry_of,
    )
    who = f" by {user.get_username()}" if user is not None else ""
    origin = f" (retry of job {retry_of.pk})" if retry_of is not None else ""
    event_add(job.pk, f"Saved{who}{origin}: {len(spec.prompts)} prompt(s) for {spec.model}")
    Credential.objects.filter(pk=credential.pk).update(last_used_at=now)
    tasks_queue.nudge_job_on_commit(job.pk)
    return job


def job_cancel(job: Job, *, user: Any = None) -> bool:
    """Cancel a job that is not terminal. Remote jobs stop being polled; the
    provider may still finish them (no provider documents a cancel)."""
    who = f" by {user.get_username()}" if user is not None else ""
    remote = job.units.exclude(remote_id="").exists()
    note = (
        " Remote jobs are no longer polled; the provider may still finish them." if remote else ""
    )
    return job_transition(job.pk, JobStatus.CANCELLED, message=f"Cancelled{who}.{note}")


def job_retry(job: Job, *, user: Any = None, failed_only: bool = False) -> Job:
    """A new job with the same spec (or only the prompts that failed), linked to the first."""
    if job.credential is None:
        raise ValueError("The credential of this job was deleted; clone it to pick another.")
    spec = job.spec.copy()
    if failed_only:
        failed = [row["prompt"] for row in job_rows(job) if row["error"] or row["output"] is None]
        if not failed:
            raise ValueError("No prompt of this job failed.")
        spec["prompts"] = failed
    new = job_create(
        team=job.team,
        credential=job.credential,
        spec=JobSpec.from_dict(spec),
        user=user,
        retry_of=job,
    )
    event_add(
        job.pk, f"Retried as job {new.pk}" + (" (failed prompts only)" if failed_only else "")
    )
    return new
