"""Webhooks: a team's receivers, and the delivery of events to them per the
Standard Webhooks specification (signed with the ``standardwebhooks``
package).

A delivery is a row (``WebhookDelivery``) written in the transaction that
made the event, and sent by a task (``dashboard.tasks.webhook_deliver``),
never by the code that moved the job or the instance: a slow or failing
receiver delays nothing but its own deliveries. Each attempt is claimed by a
conditional UPDATE (``outbox``), logged (``WebhookAttempt``), and retried
with exponential backoff and jitter; rows carry their next attempt time and
the sweep nudges the due ones, so a lost task message delays a delivery,
never loses it. Every POST goes through the outbound guard, as a provider
call does.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import standardwebhooks
from django.db import transaction
from django.views.decorators.debug import sensitive_variables

from dashboard.accounts.audit import audit
from dashboard.core import clock, netguard
from dashboard.core import queue as tasks_queue
from dashboard.core.crypto import SecretDecryptionError
from dashboard.core.logs import redact
from dashboard.instances.serialize import instance_json
from dashboard.jobs.serialize import job_json
from dashboard.models import Job, ModelInstance, Team, Webhook, WebhookAttempt, WebhookDelivery

from . import outbox
from .deadline import DeadlineBackend

JOB_EVENTS = ("job.completed", "job.failed", "job.cancelled")
INSTANCE_EVENTS = ("instance.running", "instance.expired", "instance.failed")
EVENTS = JOB_EVENTS + INSTANCE_EVENTS

#: Seconds to wait after each failed attempt (before jitter, which only
#: shortens them): the first retry within a minute, then 5 min, 30 min, 2 h
#: and 5 h: six attempts over about seven and a half hours.
RETRY_WAITS = (60, 300, 1800, 7200, 18000)
MAX_ATTEMPTS = len(RETRY_WAITS) + 1
#: A 2xx answer within this many seconds is success (DESIGN, "Webhooks").
TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
USER_AGENT = "llm-jobs-dashboard-webhooks/1"
#: Of a receiver's answer, this much is kept in the attempt's log.
ANSWER_EXCERPT = 300


class WebhookError(ValueError):
    """A webhook the dashboard refuses, with the field it concerns."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


# --- the webhooks -------------------------------------------------------------------------


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def url_problem(url: str) -> str:
    """Why ``url`` may not receive webhooks ("" when it may): the outbound
    guard's early answer, as for a credential's base URL (the connection is
    checked again on every delivery, against the address it connects to)."""
    if len(url) > Webhook._meta.get_field("url").max_length:
        return "The URL is too long: at most 500 characters."
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        return "The URL may not contain spaces or control characters."
    try:
        httpx.URL(url)
        netguard.check_url(url)
    except netguard.BlockedHostError as exc:
        return str(exc).replace("base URL", "webhook URL")
    except (httpx.InvalidURL, ValueError):
        return "This is not a URL that can be called."
    return ""


def events_problem(events: Sequence[str]) -> str:
    if not events:
        return "Pick at least one event."
    unknown = [event for event in events if event not in EVENTS]
    if unknown:
        return f"Unknown event {unknown[0]!r}; the events are {', '.join(EVENTS)}."
    return ""


def webhook_create(
    *, team: Team, url: str, events: Sequence[str], actor: Any, via: str = ""
) -> tuple[Webhook, str]:
    """Save a webhook; returns it and its secret, which is shown this once."""
    for problem, field in ((url_problem(url), "url"), (events_problem(events), "events")):
        if problem:
            raise WebhookError(problem, field)
    secret = new_secret()
    chosen = [event for event in EVENTS if event in set(events)]
    with transaction.atomic():
        hook = Webhook.objects.create(
            team=team, url=url, events=chosen, secret=secret, created_by=actor
        )
        audit(actor, team, "webhook.created", hook, events=chosen, **_via(via))
    return hook, secret


def webhook_delete(hook: Webhook, *, actor: Any, via: str = "") -> None:
    with transaction.atomic():
        audit(actor, hook.team, "webhook.deleted", hook, **_via(via))
        hook.delete()


def _via(via: str) -> dict[str, str]:
    return {"via": via} if via else {}


def webhook_json(hook: Webhook) -> dict[str, Any]:
    """A webhook as the API shows it: never its secret."""
    return {"id": hook.pk, "url": hook.url, "events": hook.events, "created_at": hook.created_at}


def delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.pk,
        "event": delivery.event,
        "object_id": delivery.object_id,
        "attempts": delivery.attempts,
        "status": delivery.status,
        "response_status": delivery.response_status,
        "next_attempt_at": delivery.next_attempt_at,
        "last_error": delivery.last_error,
        "created_at": delivery.created_at,
        "redelivery_of": delivery.redelivery_of_id,
    }


# --- deliveries -----------------------------------------------------------------------------


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(16)


def deliveries_create(
    targets: Iterable[tuple[Webhook, int]], event: str, *, body: str = ""
) -> list[WebhookDelivery]:
    """One delivery per (webhook, object id) whose webhook takes ``event``,
    due at once, in one INSERT; each nudged once the transaction commits.
    ``body`` empty: built at the first attempt."""
    now = clock.now()
    rows = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                webhook=hook,
                event=event,
                object_id=object_id,
                message_id=new_message_id(),
                body=body,
                next_attempt_at=now,
                created_at=now,
            )
            for hook, object_id in targets
            if event in hook.events
        ]
    )
    for row in rows:
        tasks_queue.nudge_delivery_on_commit(row.pk)
    return rows


def redeliver(delivery: WebhookDelivery, *, actor: Any) -> WebhookDelivery:
    """Send an ended delivery again: a new row with the same message id (the
    webhook-id a receiver deduplicates on) and the same body, with attempts
    and a log of its own."""
    if delivery.status == outbox.PENDING:
        raise ValueError("This delivery is still being attempted; wait for it to end.")
    now = clock.now()
    with transaction.atomic():
        again = WebhookDelivery.objects.create(
            webhook_id=delivery.webhook_id,
            event=delivery.event,
            object_id=delivery.object_id,
            message_id=delivery.message_id,
            body=delivery.body,
            next_attempt_at=now,
            created_at=now,
            redelivery_of=delivery,
        )
        audit(
            actor,
            delivery.webhook.team,
            "webhook.redelivered",
            delivery.webhook,
            delivery=delivery.pk,
            event=delivery.event,
        )
        tasks_queue.nudge_delivery_on_commit(again.pk)
    return again


def event_body(event: str, at: datetime, data: dict[str, Any]) -> str:
    """DESIGN's body: ``{"type", "timestamp", "data"}``, compact JSON."""
    return json.dumps(
        {"type": event, "timestamp": iso(at), "data": data},
        default=_json_default,
        ensure_ascii=False,
        separators=(",", ":"),
    )


def iso(value: datetime) -> str:
    """As the API writes times: UTC with a "Z"."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def job_body(event: str, at: datetime, job_id: int) -> str:
    """A job event's body: the job as the API lists it (no log), read when the
    delivery is first attempted, not in the transaction that ended the job
    (a terminal job does not change after)."""
    job = Job.objects.select_related("created_by").filter(pk=job_id).first()
    data = job_json(job, with_log=False) if job is not None else {"id": job_id}
    return event_body(event, at, data)


def instance_body(event: str, at: datetime, instance: ModelInstance) -> str:
    """An instance event's body, built when the event happens: the instance
    moves on (running, then expired), and each event says what it was then."""
    return event_body(event, at, instance_json(instance))


@dataclass(frozen=True)
class Answer:
    ok: bool
    status: int | None
    error: str
    duration_ms: int


def delivery_send(delivery_id: int, *, transport: httpx.BaseTransport | None = None) -> str:
    """Make the delivery's next attempt if it is due: claim it, POST, log
    the attempt, and settle (succeeded, retry later, or failed after the
    last). Returns the delivery's status, or "not due"."""
    claim = outbox.claim(WebhookDelivery, delivery_id, max_attempts=MAX_ATTEMPTS)
    if claim is None:
        return "not due"
    delivery = WebhookDelivery.objects.select_related("webhook").get(pk=delivery_id)
    attempt = WebhookAttempt.objects.create(
        delivery=delivery,
        number=claim.attempt,
        started_at=clock.now(),
        error=outbox.STOPPED_MID_ATTEMPT,
    )
    if not delivery.body:
        delivery.body = job_body(delivery.event, delivery.created_at, delivery.object_id)
        WebhookDelivery.objects.filter(pk=delivery.pk, body="").update(body=delivery.body)
    answer = post(delivery.webhook, delivery.message_id, delivery.body, transport=transport)
    WebhookAttempt.objects.filter(pk=attempt.pk).update(
        duration_ms=answer.duration_ms, response_status=answer.status, error=answer.error
    )
    status, due = outbox.settle(
        WebhookDelivery,
        claim,
        ok=answer.ok,
        error=answer.error,
        schedule=RETRY_WAITS,
        response_status=answer.status,
    )
    if due is not None:
        tasks_queue.nudge_delivery_at(delivery_id, due)
    return status


@sensitive_variables("secret")
def post(
    hook: Webhook, message_id: str, body: str, *, transport: httpx.BaseTransport | None = None
) -> Answer:
    """One signed POST of ``body`` to the webhook's URL. Never raises: every
    failure is an Answer with its reason, for the log."""
    started = clock.monotonic()

    def failed(error: str, status: int | None = None) -> Answer:
        return Answer(False, status, redact(error), int((clock.monotonic() - started) * 1000))

    try:
        # Scheme and literal addresses; names are checked on the connection.
        netguard.check_url(hook.url, resolve=False)
        secret = hook.reveal_secret()
    except (netguard.BlockedHostError, SecretDecryptionError, ValueError) as exc:
        return failed(str(exc))
    at = clock.now()
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": standardwebhooks.Webhook(secret).sign(
            message_id, at.astimezone(UTC), body
        ),
    }
    # The total deadline lives on the socket: httpx's timeouts are per read,
    # and a receiver that trickles its headers would never trip them.
    deadline = DeadlineBackend(TIMEOUT_SECONDS)
    client = httpx.Client(
        transport=transport or netguard.guarded_transport(backend=deadline),
        timeout=httpx.Timeout(TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
        follow_redirects=False,
        headers={"user-agent": USER_AGENT},
    )
    try:
        with (
            client,
            client.stream("POST", hook.url, content=body.encode(), headers=headers) as answer,
        ):
            excerpt = _excerpt(answer, started)
    except httpx.TimeoutException:
        return failed(f"No answer within {TIMEOUT_SECONDS:g} s.")
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        return failed(str(exc) or type(exc).__name__)
    seconds = clock.monotonic() - started
    if seconds > TIMEOUT_SECONDS:
        return failed(f"Answered after {seconds:.1f} s (more than {TIMEOUT_SECONDS:g} s).")
    if not 200 <= answer.status_code < 300:
        said = f": {excerpt}" if excerpt else ""
        return failed(f"HTTP {answer.status_code}{said}", answer.status_code)
    return Answer(True, answer.status_code, "", int(seconds * 1000))


def _excerpt(answer: httpx.Response, started: float) -> str:
    """The start of the receiver's answer, read no longer than the timeout allows."""
    chunks: list[bytes] = []
    size = 0
    for chunk in answer.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= ANSWER_EXCERPT or clock.monotonic() - started > TIMEOUT_SECONDS:
            break
    text = b"".join(chunks)[:ANSWER_EXCERPT].decode("utf-8", errors="replace")
    return " ".join(text.split())
