"""E-mail to a user when a job they submitted ends, if they opted in
(``NotificationPreference``). Sent with Django's e-mail framework (SMTP from
EMAIL_URL, the console backend by default) by a task, from an outbox row
written when the job ended, and retried like a webhook delivery."""

from __future__ import annotations

import smtplib
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import F
from django.urls import reverse

from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.core.logs import redact
from dashboard.jobs.cost import money
from dashboard.jobs.services import summary
from dashboard.models import EmailNotification, Job, Membership, NotificationPreference

from . import outbox

#: Seconds between attempts: five attempts over about two and a half hours.
RETRY_WAITS = (60, 600, 1800, 7200)
MAX_ATTEMPTS = len(RETRY_WAITS) + 1


def email_opt_in(user: Any, *, on: bool, address: str | None = None) -> NotificationPreference:
    """Turn the user's job-end e-mails on or off (and set their address)."""
    with transaction.atomic():
        if address is not None and address != user.email:
            user.email = address
            user.save(update_fields=["email"])
        preference, _ = NotificationPreference.objects.update_or_create(
            user=user, defaults={"email_on_job_end": on}
        )
    return preference


def emails_create(job_ids: list[int], status: str) -> list[EmailNotification]:
    """One e-mail per ended job whose submitter opted in, has an address and
    is still a member of the job's team; each nudged once the transaction
    commits."""
    wanted = set(
        NotificationPreference.objects.filter(email_on_job_end=True, user__jobs__pk__in=job_ids)
        .exclude(user__email="")
        .values_list("user_id", flat=True)
    )
    if not wanted:
        return []
    jobs = Job.objects.filter(
        pk__in=job_ids, created_by_id__in=wanted, team__memberships__user_id=F("created_by_id")
    ).values_list("pk", "created_by_id")
    rows = EmailNotification.objects.bulk_create(
        [
            EmailNotification(
                user_id=user_id,
                job_id=job_id,
                event=f"job.{status}",
                next_attempt_at=clock.now(),
            )
            for job_id, user_id in jobs
        ]
    )
    for row in rows:
        tasks_queue.nudge_email_on_commit(row.pk)
    return rows


def email_send(notification_id: int) -> str:
    """Send the e-mail if it is due; returns its status, or "not due"."""
    claim = outbox.claim(EmailNotification, notification_id, max_attempts=MAX_ATTEMPTS)
    if claim is None:
        return "not due"
    note = EmailNotification.objects.select_related("user", "job").get(pk=notification_id)
    error, final = _refusal(note), True
    if not error:
        error, final = _send(note)
    status, due = outbox.settle(
        EmailNotification, claim, ok=not error, error=error, schedule=RETRY_WAITS, final=final
    )
    if due is not None:
        tasks_queue.nudge_email_at(notification_id, due)
    return status


def _refusal(note: EmailNotification) -> str:
    """Why the e-mail may not go out at all ("" when it may)."""
    if not note.user.email:
        return "The user has no e-mail address any more."
    if not Membership.objects.filter(team_id=note.job.team_id, user_id=note.user_id).exists():
        return "The user is no longer a member of the job's team."
    return ""


def _send(note: EmailNotification) -> tuple[str, bool]:
    """Send it: ("", _) when sent, else (the error, whether it is final: a
    message that cannot be made would fail the same way again)."""
    try:
        subject, body = message_for(note.job)
        message = EmailMessage(subject, body, settings.DEFAULT_FROM_EMAIL, [note.user.email])
        message.message()
    except ValueError as exc:  # BadHeaderError, a malformed address
        return redact(f"The e-mail could not be made: {exc}")[:1000], True
    try:
        message.send()
    except (smtplib.SMTPException, OSError) as exc:
        return redact(f"{type(exc).__name__}: {exc}")[:1000], False
    return "", False


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (CR and LF included) as one space:
    a header never breaks, whatever a model or credential is called."""
    return " ".join(text.split())


def message_for(job: Job) -> tuple[str, str]:
    """The subject and plain-text body of a job's e-mail."""
    subject = one_line(f"Job #{job.pk} {job.outcome}: {job.get_provider_display()} {job.model}")
    cost = job.cost_so_far
    lines = [
        f"Job #{job.pk} on {job.get_provider_display()} ({job.credential_name}), "
        f"model {job.model}, ended {job.outcome}.",
        "",
        f"{summary(job)}.",
    ]
    if job.error:
        lines.append(f"Error: {job.error}")
    if cost is not None:
        tokens = " (from estimated tokens)" if job.tokens_estimated else ""
        lines.append(
            f"Cost: {money(cost)}{tokens}; estimated before it ran: {money(job.cost_estimated)}."
        )
    base = settings.DASHBOARD_BASE_URL.rstrip("/")
    lines += [
        "",
        f"{base}{job.get_absolute_url()}",
        "",
        "You get this because you asked for an e-mail when your jobs end; turn it off",
        f"on your account page: {base}{reverse('token_list')}",
    ]
    return subject, "\n".join(lines)
