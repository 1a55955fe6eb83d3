"""The receivers of ``dashboard.core.events``: they write outbox rows in the
sender's transaction (so a notification exists exactly when its event does)
and nudge the tasks that send them once it commits. No network call here,
and a number of queries that does not grow with the number of jobs."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from django.db import transaction

from dashboard.core import clock
from dashboard.core.events import instance_changed, job_ended
from dashboard.models import Job, ModelInstance, Webhook

from . import emails, webhooks

logger = logging.getLogger(__name__)


def contained(receiver: Callable[..., None]) -> Callable[..., None]:
    """Run a receiver in a savepoint of the sender's transaction: if recording
    a notification fails, that is logged and rolled back alone, and the job or
    instance still moves (a notification is never worth undoing its event)."""

    @functools.wraps(receiver)
    def run(sender: Any, **kwargs: Any) -> None:
        try:
            with transaction.atomic():
                receiver(sender, **kwargs)
        except Exception:
            logger.exception("Notifications for %s were not recorded", kwargs)

    return run


def connect() -> None:
    job_ended.connect(on_job_ended, dispatch_uid="notify.job_ended")
    instance_changed.connect(on_instance_changed, dispatch_uid="notify.instance_changed")


@contained
def on_job_ended(sender: Any, *, job_ids: list[int], status: str, **kwargs: Any) -> None:
    event = f"job.{status}"
    if event in webhooks.JOB_EVENTS:
        hooks = [
            hook
            for hook in Webhook.objects.filter(team__jobs__pk__in=job_ids).distinct()
            if event in hook.events
        ]
        if hooks:
            jobs = Job.objects.filter(pk__in=job_ids, team_id__in={h.team_id for h in hooks})
            teams = jobs.values_list("pk", "team_id")
            webhooks.deliveries_create(
                [(hook, pk) for pk, team_id in teams for hook in hooks if hook.team_id == team_id],
                event,
            )
    emails.emails_create(job_ids, status)


@contained
def on_instance_changed(sender: Any, *, instance_id: int, status: str, **kwargs: Any) -> None:
    event = f"instance.{status}"
    if event not in webhooks.INSTANCE_EVENTS:
        return
    hooks = [
        hook
        for hook in Webhook.objects.filter(team__instances__pk=instance_id)
        if event in hook.events
    ]
    if not hooks:
        return
    instance = ModelInstance.objects.get(pk=instance_id)
    body = webhooks.instance_body(event, clock.now(), instance)
    webhooks.deliveries_create([(hook, instance_id) for hook in hooks], event, body=body)
