"""The outbox rows' life (webhook deliveries, e-mails): claim an attempt,
settle it, schedule the next one.

An attempt is claimed by a conditional UPDATE that counts it and moves
``next_attempt_at`` a lease ahead, so two workers never make the same attempt
and a worker that dies mid-attempt leaves a row that is due again once the
lease runs out (its attempt counted: a message that kills its worker does not
loop forever). Settling is conditional on the claim still being ours.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import F, Model

from dashboard.core import clock
from dashboard.models import Outbox

PENDING = Outbox.Status.PENDING
SUCCEEDED = Outbox.Status.SUCCEEDED
FAILED = Outbox.Status.FAILED

#: Seconds an attempt holds its row: six times a webhook POST's total deadline
#: (10 s, held on the socket however the receiver paces its answer), so no
#: second worker takes an attempt still under way; well below django-q2's
#: task timeout.
LEASE_SECONDS = 60
#: Jitter: each wait is this share of its base or more, never more than the
#: base, so the first retry stays within its minute and receivers that failed
#: together are not retried all at the same second.
JITTER_FLOOR = 0.8


@dataclass(frozen=True)
class Claim:
    pk: int
    attempt: int
    owner: str


def claim(model: type[Model], pk: int, *, max_attempts: int) -> Claim | None:
    """Take the row's next attempt if it is pending and due; None otherwise
    (another worker has it, it is not due yet, or it ended). A row whose last
    attempt's worker died (due again, with no attempt left) fails here."""
    now = clock.now()
    owner = uuid.uuid4().hex
    due = model.objects.filter(pk=pk, status=PENDING, next_attempt_at__lte=now)  # type: ignore[attr-defined]
    moved = due.filter(attempts__lt=max_attempts).update(
        attempts=F("attempts") + 1,
        lease_owner=owner,
        next_attempt_at=now + timedelta(seconds=LEASE_SECONDS),
    )
    if not moved:
        due.filter(attempts__gte=max_attempts).update(
            status=FAILED,
            next_attempt_at=None,
            lease_owner="",
            finished_at=now,
            last_error=STOPPED_MID_ATTEMPT,
        )
        return None
    attempt = model.objects.values_list("attempts", flat=True).get(pk=pk)  # type: ignore[attr-defined]
    return Claim(pk=pk, attempt=attempt, owner=owner)


STOPPED_MID_ATTEMPT = "No answer recorded: the worker stopped during the attempt."


def backoff_wait(attempt: int, schedule: Sequence[int]) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    base = schedule[min(attempt, len(schedule)) - 1]
    return base * random.uniform(JITTER_FLOOR, 1.0)


def settle(
    model: type[Model],
    claim_: Claim,
    *,
    ok: bool,
    error: str,
    schedule: Sequence[int],
    final: bool = False,
    **fields: Any,
) -> tuple[str, datetime | None]:
    """Record the attempt's outcome: succeeded; failed for good after the
    last attempt (one more than the waits in ``schedule``) or when ``final``
    says another would fail the same way; or pending again,
    due after the next wait. Returns (status, next attempt time). Nothing is
    written if the claim was lost meanwhile (the lease ran out)."""
    now = clock.now()
    rows = model.objects.filter(  # type: ignore[attr-defined]
        pk=claim_.pk, status=PENDING, lease_owner=claim_.owner, attempts=claim_.attempt
    )
    updates: dict[str, Any] = {"lease_owner": "", **fields}
    if ok:
        status, due = SUCCEEDED, None
        updates.update(last_error="", finished_at=now)
    elif final or claim_.attempt >= len(schedule) + 1:
        status, due = FAILED, None
        updates.update(last_error=error, finished_at=now)
    else:
        status, due = PENDING, now + timedelta(seconds=backoff_wait(claim_.attempt, schedule))
        updates["last_error"] = error
    rows.update(status=status, next_attempt_at=due, **updates)
    return status, due


def due_ids(model: type[Model], *, limit: int = 500) -> list[int]:
    """Pending rows whose attempt is due (or whose lease ran out), oldest first."""
    return list(
        model.objects.filter(  # type: ignore[attr-defined]
            status=PENDING, next_attempt_at__lte=clock.now()
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
