"""Enqueueing background work, and the named nudges every package uses.

A queued task is only a nudge: the database says what is due, and the
periodic sweep finds it again if a message is lost (a broker that is down, a
worker killed before it ran the task). So enqueueing never raises. Task paths
are the stable ``dashboard.tasks.*`` names that schedules and queued tasks
store; this module names them as strings and imports nothing of ``tasks``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django_q.models import Schedule
from django_q.tasks import async_task, schedule

logger = logging.getLogger(__name__)


def enqueue(func: str, *args: object) -> None:
    try:
        async_task(func, *args, timeout=settings.TASK_TIMEOUT)
    except Exception:
        logger.warning(
            "Could not enqueue %s%s; the sweep will pick it up.", func, args, exc_info=True
        )


def enqueue_at(func: str, *args: object, at: datetime) -> None:
    """Enqueue at ``at``, through a one-off django-q2 schedule (deleted once
    it ran; the scheduler ticks about every 30 s). For a retry due in under
    a minute, sooner than the sweep's next round would nudge it."""
    try:
        schedule(
            func,
            *args,
            schedule_type=Schedule.ONCE,
            next_run=at,
            repeats=-1,
            q_options={"timeout": settings.TASK_TIMEOUT},
        )
    except Exception:
        logger.warning(
            "Could not schedule %s%s; the sweep will pick it up.", func, args, exc_info=True
        )


def on_commit(func: str, *args: object) -> None:
    """Enqueue once the current transaction commits, so the worker sees the rows."""
    transaction.on_commit(lambda: enqueue(func, *args))


def nudge_job(job_id: int) -> None:
    enqueue("dashboard.tasks.advance_job", job_id)


def nudge_job_on_commit(job_id: int) -> None:
    on_commit("dashboard.tasks.advance_job", job_id)


def nudge_slices(job_id: int) -> None:
    """A helper for a big job: claims its slices on whichever worker is free."""
    enqueue("dashboard.tasks.advance_slices", job_id)


def nudge_poller(credential_id: int) -> None:
    enqueue("dashboard.tasks.poll_credential", credential_id)


def nudge_batch_poll(chunk_id: int) -> None:
    enqueue("dashboard.tasks.batch_poll", chunk_id)


def nudge_batch_poll_at(chunk_id: int, at: datetime) -> None:
    """The next status check of a remote batch, when it is due: no worker
    waits for it meanwhile (the sweep nudges it too, should this be lost)."""
    enqueue_at("dashboard.tasks.batch_poll", chunk_id, at=at)


def nudge_batch_cancel(job_id: int) -> None:
    enqueue("dashboard.tasks.batch_cancel", job_id)


def nudge_instances(credential_id: int) -> None:
    enqueue("dashboard.tasks.instances_poll", credential_id)


def nudge_instances_on_commit(credential_id: int) -> None:
    on_commit("dashboard.tasks.instances_poll", credential_id)


def nudge_reconcile(credential_id: int) -> None:
    enqueue("dashboard.tasks.instances_reconcile", credential_id)


def nudge_catalog(credential_id: int, *, force: bool = False) -> None:
    enqueue("dashboard.tasks.catalog_refresh", credential_id, force)


def nudge_instance_stop_on_commit(instance_id: int) -> None:
    on_commit("dashboard.tasks.instance_stop", instance_id)


def nudge_instance_stop(instance_id: int) -> None:
    enqueue("dashboard.tasks.instance_stop", instance_id)


def nudge_delivery(delivery_id: int) -> None:
    enqueue("dashboard.tasks.webhook_deliver", delivery_id)


def nudge_delivery_on_commit(delivery_id: int) -> None:
    on_commit("dashboard.tasks.webhook_deliver", delivery_id)


def nudge_delivery_at(delivery_id: int, at: datetime) -> None:
    enqueue_at("dashboard.tasks.webhook_deliver", delivery_id, at=at)


def nudge_email(notification_id: int) -> None:
    enqueue("dashboard.tasks.email_send", notification_id)


def nudge_email_on_commit(notification_id: int) -> None:
    on_commit("dashboard.tasks.email_send", notification_id)


def nudge_email_at(notification_id: int, at: datetime) -> None:
    enqueue_at("dashboard.tasks.email_send", notification_id, at=at)
