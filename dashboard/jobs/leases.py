"""Leases: who works on a job, or polls a credential, until when.

A lease is taken and renewed with conditional UPDATEs on ``lease_owner`` and
``lease_expires_at``, so it works the same on SQLite and PostgreSQL and a
killed worker's lease simply expires; nobody holds a row lock across a call."""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta

from django.db.models import Q

from dashboard.core import clock
from dashboard.models import Credential, Job
from dashboard.status import JOB_ACTIVE

from . import limits
from .services import event_add

logger = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def lease_seconds() -> int:
    return limits.lease_seconds()


def lease_job(job_id: int, owner: str) -> Job | None:
    """Take the job if nobody holds a live lease on it. Returns the fresh row."""
    now = clock.now()
    free = Q(lease_owner="") | Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True)
    due = Q(next_check_at__isnull=True) | Q(next_check_at__lte=now)
    job = Job.objects.filter(pk=job_id, status__in=JOB_ACTIVE).filter(free, due).first()
    if job is None:
        return None
    takeover = bool(job.lease_owner)
    updated = (
        Job.objects.filter(pk=job_id, status__in=JOB_ACTIVE, lease_owner=job.lease_owner)
        .filter(free)
        .update(
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds()),
            attempts=job.attempts + (1 if takeover else 0),
        )
    )
    if updated != 1:
        return None  # another worker got there first
    job.refresh_from_db()
    if takeover:
        event_add(job.pk, f"Resumed after a worker stopped mid-task (takeover {job.attempts}).")
    return job


def renew_job(job_id: int, owner: str) -> bool:
    """Heartbeat: keep the lease while working. False when it was lost."""
    return bool(
        Job.objects.filter(pk=job_id, lease_owner=owner).update(
            lease_expires_at=clock.now() + timedelta(seconds=lease_seconds())
        )
    )


def release_job(job_id: int, owner: str, *, next_check_in: float | None = None) -> None:
    next_check = (
        clock.now() + timedelta(seconds=next_check_in) if next_check_in is not None else None
    )
    Job.objects.filter(pk=job_id, lease_owner=owner).update(
        lease_owner="", lease_expires_at=None, next_check_at=next_check
    )


def lease_credential(credential_id: int, owner: str) -> bool:
    now = clock.now()
    free = Q(poll_lease_owner="") | Q(poll_lease_expires_at__lt=now) | Q(poll_lease_owner=owner)
    return bool(
        Credential.objects.filter(pk=credential_id)
        .filter(free)
        .update(
            poll_lease_owner=owner, poll_lease_expires_at=now + timedelta(seconds=lease_seconds())
        )
    )


def release_credential(credential_id: int, owner: str) -> None:
    Credential.objects.filter(pk=credential_id, poll_lease_owner=owner).update(
        poll_lease_owner="", poll_lease_expires_at=None
    )
