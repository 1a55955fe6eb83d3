"""Part of the minute's sweep: every webhook delivery and e-mail whose attempt
is due (or whose attempt's worker died) gets a nudge, so a lost task message
delays a notification, never loses it."""

from __future__ import annotations

from dashboard.core import queue as tasks_queue
from dashboard.models import EmailNotification, WebhookDelivery

from . import outbox


def notify_sweep() -> dict[str, int]:
    deliveries = outbox.due_ids(WebhookDelivery)
    for pk in deliveries:
        tasks_queue.nudge_delivery(pk)
    emails = outbox.due_ids(EmailNotification)
    for pk in emails:
        tasks_queue.nudge_email(pk)
    return {"deliveries": len(deliveries), "emails": len(emails)}
