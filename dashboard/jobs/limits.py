"""Per-credential limits that hold across every worker process: concurrency
slots, a requests-per-minute window and a circuit breaker. All state is in the
database and changed with conditional UPDATEs, so it works the same on SQLite
and PostgreSQL and a killed worker leaves nothing stuck (slot leases expire)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q

from dashboard.core import clock
from dashboard.core.logs import redact
from dashboard.models import Credential, CredentialSlot
from providers import ErrorKind, ProviderError

#: Consecutive failed requests that open a credential's circuit.
CIRCUIT_THRESHOLD = 8
CIRCUIT_BASE_SECONDS = 30
CIRCUIT_MAX_SECONDS = 600
#: The longest Retry-After honoured as given (a provider asking for more is capped).
MAX_PAUSE_SECONDS = 300
#: Failures that say the provider is unwell (not the request, not throttling).
BREAKER_KINDS = frozenset(
    {ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.CONNECTION, ErrorKind.PROTOCOL}
)


def lease_seconds() -> int:
    return int(settings.DASHBOARD_LEASE_SECONDS)


# --- concurrency slots --------------------------------------------------------------


def slots_acquire(credential: Credential, owner: str, want: int) -> int:
    """Lease up to ``want`` of the credential's free slots; returns how many."""
    limit = max(1, credential.max_concurrency)
    if not CredentialSlot.objects.filter(credential=credential, number=limit - 1).exists():
        CredentialSlot.objects.bulk_create(
            [CredentialSlot(credential=credential, number=n) for n in range(limit)],
            ignore_conflicts=True,
        )
    now = clock.now()
    free = Q(holder="") | Q(expires_at__lt=now) | Q(holder=owner)
    candidates = list(
        CredentialSlot.objects.filter(credential=credential, number__lt=limit)
        .filter(free)
        .order_by("number")
        .values_list("pk", flat=True)[: max(0, want)]
    )
    expires = now + timedelta(seconds=lease_seconds())
    got = 0
    for pk in candidates:
        got += (
            CredentialSlot.objects.filter(pk=pk)
            .filter(free)
            .update(holder=owner, expires_at=expires)
        )
    return got


def slots_renew(credential_id: int, owner: str) -> None:
    CredentialSlot.objects.filter(credential_id=credential_id, holder=owner).update(
        expires_at=clock.now() + timedelta(seconds=lease_seconds())
    )


def slots_release(credential_id: int, owner: str) -> int:
    return CredentialSlot.objects.filter(credential_id=credential_id, holder=owner).update(
        holder="", expires_at=None
    )


# --- requests per minute ----------------------------------------------------------------


def rate_acquire(credential: Credential, now: datetime | None = None) -> float:
    """Take one request from the credential's per-minute budget. Returns 0 when
    the request may go now, else the seconds until the next window opens."""
    rpm = credential.requests_per_minute
    if not rpm:
        return 0.0
    now = now or clock.now()
    window = now.replace(second=0, microsecond=0)
    if Credential.objects.filter(
        pk=credential.pk, rate_window_start=window, rate_window_count__lt=rpm
    ).update(rate_window_count=F("rate_window_count") + 1):
        return 0.0
    if (
        Credential.objects.filter(pk=credential.pk)
        .filter(Q(rate_window_start__lt=window) | Q(rate_window_start__isnull=True))
        .update(rate_window_start=window, rate_window_count=1)
    ):
        return 0.0
    return max(0.01, (window + timedelta(minutes=1) - now).total_seconds())


# --- circuit breaker -------------------------------------------------------------------------


def circuit_wait(credential: Credential, now: datetime | None = None) -> float:
    """Seconds until the credential's circuit closes (0 when it is closed)."""
    now = now or clock.now()
    until = (
        Credential.objects.filter(pk=credential.pk)
        .values_list("circuit_open_until", flat=True)
        .first()
    )
    if until is None or until <= now:
        return 0.0
    return (until - now).total_seconds()


def circuit_record(
    credential_id: int, *, successes: int = 0, failures: list[ProviderError] | None = None
) -> None:
    """Count what happened since the last record: any success closes the
    circuit; enough consecutive failures open it, for longer each time."""
    counted = [f for f in failures or [] if f.kind in BREAKER_KINDS]
    now = clock.now()
    if successes:
        Credential.objects.filter(pk=credential_id).filter(
            Q(consecutive_failures__gt=0) | Q(circuit_open_until__isnull=False)
        ).update(consecutive_failures=0, circuit_open_until=None)
    if not counted:
        return
    Credential.objects.filter(pk=credential_id).update(
        consecutive_failures=F("consecutive_failures") + len(counted),
        last_error=redact(counted[-1].message)[:2000],
        last_error_at=now,
    )
    failures_now = (
        Credential.objects.filter(pk=credential_id)
        .values_list("consecutive_failures", flat=True)
        .first()
        or 0
    )
    if failures_now >= CIRCUIT_THRESHOLD:
        trips = failures_now // CIRCUIT_THRESHOLD
        seconds = min(CIRCUIT_MAX_SECONDS, CIRCUIT_BASE_SECONDS * 2 ** (trips - 1))
        Credential.objects.filter(pk=credential_id).update(
            circuit_open_until=now + timedelta(seconds=seconds)
        )


# --- Retry-After: a pause for the whole credential -------------------------------------------


def pause_credential(credential_id: int, seconds: float, now: datetime | None = None) -> datetime:
    """The provider said to wait (429 with Retry-After): no call on this
    credential, from any job or worker, before then. Returns the moment."""
    now = now or clock.now()
    until = now + timedelta(seconds=min(seconds, MAX_PAUSE_SECONDS))
    Credential.objects.filter(pk=credential_id).filter(
        Q(paused_until__isnull=True) | Q(paused_until__lt=until)
    ).update(paused_until=until)
    return until


def paused_until(credential: Credential, now: datetime | None = None) -> datetime | None:
    """When the credential's pause ends (None when there is none now)."""
    now = now or clock.now()
    until = (
        Credential.objects.filter(pk=credential.pk).values_list("paused_until", flat=True).first()
    )
    return until if until is not None and until > now else None
