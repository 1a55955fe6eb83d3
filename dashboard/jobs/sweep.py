"""The sweep, run every minute by the scheduler: what is due or orphaned gets a
nudge. The database is the source of truth and a task only a nudge, so a lost
message delays a job, never loses it."""

from __future__ import annotations

import logging

from django.db.models import Q

from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.models import BatchChunk, Credential, Job, JobUnit
from dashboard.status import JOB_ACTIVE

from .services import job_fail

logger = logging.getLogger(__name__)


def sweep() -> dict[str, int]:
    """Run by the scheduler every minute: what is due or orphaned gets a nudge."""
    now = clock.now()
    counts = {"deadline": 0, "jobs": 0, "pollers": 0, "unknown": 0, "batches": 0}
    for job_id in Job.objects.filter(status__in=JOB_ACTIVE, deadline_at__lt=now).values_list(
        "pk", flat=True
    ):
        if job_fail(job_id, "The job passed its deadline before finishing.", retryable=True):
            counts["deadline"] += 1
            # Its batches still at the provider are not paid for any longer.
            if BatchChunk.objects.filter(job_id=job_id, state=BatchChunk.State.LIVE).update(
                cancel_requested=True
            ):
                tasks_queue.on_commit("dashboard.tasks.batch_cancel", job_id)
    free = Q(lease_owner="") | Q(lease_expires_at__lt=now)
    # Mid-submit at a crash: the POST may have created a remote job.
    for unit in (
        JobUnit.objects.filter(state=JobUnit.State.SUBMITTING, job__status__in=JOB_ACTIVE)
        .filter(Q(job__lease_owner="") | Q(job__lease_expires_at__lt=now))
        .select_related("job")
    ):
        if JobUnit.objects.filter(pk=unit.pk, state=JobUnit.State.SUBMITTING).update(
            state=JobUnit.State.UNKNOWN
        ):
            counts["unknown"] += 1
            job_fail(
                unit.job_id,
                "Outcome unknown, not resubmitted: a worker stopped while submitting, so the "
                "provider may or may not have the job. Retry to submit again.",
                retryable=True,
            )
    due = (
        Job.objects.filter(status__in=JOB_ACTIVE)
        .filter(free)
        .filter(Q(next_check_at__lte=now) | Q(next_check_at__isnull=True))
    )
    # Sync jobs (no units) and async jobs with a unit still to submit; the rest
    # are past submit and belong to the poller.
    online = Q(mode=Job.Mode.ONLINE) & (
        Q(units__isnull=True) | Q(units__state=JobUnit.State.PENDING)
    )
    # Batch jobs: not cut yet, a chunk to create, or one a dead worker left
    # mid-create; their live chunks are polled by tasks of their own (below).
    batch = Q(mode=Job.Mode.BATCH) & (
        Q(chunks__isnull=True)
        | Q(chunks__state=BatchChunk.State.PENDING)
        | Q(chunks__state=BatchChunk.State.SUBMITTING, chunks__lease_expires_at__lt=now)
    )
    due = due.filter(online | batch)
    for job_id in due.values_list("pk", flat=True).distinct()[:500]:
        tasks_queue.nudge_job(job_id)
        counts["jobs"] += 1
    credentials = (
        JobUnit.objects.filter(state=JobUnit.State.SUBMITTED, job__status__in=JOB_ACTIVE)
        .values_list("job__credential_id", flat=True)
        .distinct()
    )
    for credential_id in (
        Credential.objects.filter(pk__in=credentials)
        .filter(Q(poll_lease_owner="") | Q(poll_lease_expires_at__lt=now))
        .values_list("pk", flat=True)
    ):
        tasks_queue.nudge_poller(credential_id)
        counts["pollers"] += 1
    for chunk_id in (
        BatchChunk.objects.filter(state=BatchChunk.State.LIVE, job__status__in=JOB_ACTIVE)
        .filter(Q(next_poll_at__lte=now) | Q(next_poll_at__isnull=True))
        .filter(Q(lease_owner="") | Q(lease_expires_at__lt=now))
        .values_list("pk", flat=True)[:500]
    ):
        tasks_queue.nudge_batch_poll(chunk_id)
        counts["batches"] += 1
    return counts
