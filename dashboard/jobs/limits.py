"""Per-credential limits that hold across every worker process: concurrency
slots, requests and tokens per minute, the provider's own pauses and a circuit
breaker. All state is in the
database and changed with conditional UPDATEs, so it works the same on SQLite
and PostgreSQL and a killed worker leaves nothing stuck (slot leases expire)."""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Case, ExpressionWrapper, F, FloatField, Q, Value, When
from django.db.models.functions import Coalesce, Greatest

from dashboard.core import clock
from dashboard.core.logs import redact
from dashboard.models import Credential, CredentialSlot
from providers import ErrorKind, ProviderError

logger = logging.getLogger(__name__)

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
    # One conditional UPDATE for them all (up to 2,000): a slot another worker
    # took meanwhile no longer matches ``free`` and is not counted.
    return (
        CredentialSlot.objects.filter(pk__in=candidates)
        .filter(free)
        .update(holder=owner, expires_at=expires)
    )


def slots_resize(credential: Credential, owner: str, want: int) -> int:
    """Hold ``want`` of the credential's slots (fewer when no more are free):
    gives back those beyond it, or leases more. Returns how many are held.
    A worker on a slice of a big job calls it at each slice, so the slots
    spread over the processes that work on the job."""
    want = max(0, want)
    held = list(
        CredentialSlot.objects.filter(credential=credential, holder=owner)
        .order_by("-number")
        .values_list("pk", flat=True)
    )
    if len(held) > want:
        CredentialSlot.objects.filter(pk__in=held[: len(held) - want], holder=owner).update(
            holder="", expires_at=None
        )
        return want
    if len(held) == want:
        return want
    if not held:
        return slots_acquire(credential, owner, want)
    limit = max(1, credential.max_concurrency)
    now = clock.now()
    free = Q(holder="") | Q(expires_at__lt=now)
    candidates = list(
        CredentialSlot.objects.filter(credential=credential, number__lt=limit)
        .filter(free)
        .order_by("number")
        .values_list("pk", flat=True)[: want - len(held)]
    )
    got = (
        CredentialSlot.objects.filter(pk__in=candidates)
        .filter(free)
        .update(holder=owner, expires_at=now + timedelta(seconds=lease_seconds()))
    )
    return len(held) + got


def slots_renew(credential_id: int, owner: str) -> None:
    CredentialSlot.objects.filter(credential_id=credential_id, holder=owner).update(
        expires_at=clock.now() + timedelta(seconds=lease_seconds())
    )


def slots_release(credential_id: int, owner: str) -> int:
    return CredentialSlot.objects.filter(credential_id=credential_id, holder=owner).update(
        holder="", expires_at=None
    )


# --- requests and tokens per minute ------------------------------------------------------
#
# Each limit is a GCRA token bucket kept as one number: the moment (epoch
# seconds) by which the calls let through so far are paid for at the limit's
# pace (60/rpm seconds a request, 60/tpm seconds a token). A call may go while
# that moment is at most BURST_SECONDS ahead of now, so in any 60 s the
# provider sees at most ``rpm`` requests plus ``rpm * BURST_SECONDS / 60``
# (and ``tpm`` tokens plus as many, plus one call's own). One conditional
# UPDATE a call (or one Lua script in Redis), whatever the traffic.

#: What a limit lets through at once after a quiet spell, in seconds of its pace.
BURST_SECONDS = 3.0
#: A refusal is written on the credential (``last_limited_at``) at most this often.
LIMITED_NOTE_SECONDS = 1.0


def burst(per_minute: int) -> int:
    """Calls (or tokens) a limit lets through at once beyond its pace."""
    return max(1, int(per_minute * BURST_SECONDS / 60))


def use_redis() -> bool:
    return getattr(settings, "DASHBOARD_BROKER", "orm") == "redis"


def rate_acquire(credential: Credential, now: datetime | None = None, *, tokens: int = 0) -> float:
    """Take one request (and ``tokens`` tokens) from the credential's
    per-minute budgets. Returns 0 when the call may go now, else the seconds
    until it may."""
    rpm, tpm = credential.requests_per_minute, credential.tokens_per_minute
    if not rpm and not tpm:
        return 0.0
    now = now or clock.now()
    moment = now.timestamp()
    rate_step = 60.0 / rpm if rpm else 0.0
    token_step = 60.0 * tokens / tpm if tpm and tokens else 0.0
    if use_redis():
        wait = _redis_acquire(credential.pk, moment, rate_step, token_step, tokens, now)
    else:
        wait = _db_acquire(credential.pk, moment, rate_step, token_step, tokens, now)
    if wait:
        limited(credential.pk, "its own rate limit (rpm/tpm)", now)
    return wait


def _tolerance(step: float) -> float:
    return max(0.0, BURST_SECONDS - step)


def _db_acquire(
    pk: int, moment: float, rate_step: float, token_step: float, tokens: int, now: datetime
) -> float:
    allowed = Q()
    updates: dict[str, Any] = {}
    for name, step in (("rate_paid_until", rate_step), ("token_paid_until", token_step)):
        if not step:
            continue
        allowed &= Q(**{f"{name}__isnull": True}) | Q(**{f"{name}__lte": moment + _tolerance(step)})
        start = Greatest(Coalesce(F(name), Value(moment)), Value(moment))
        updates[name] = ExpressionWrapper(start + Value(step), output_field=FloatField())
    window = now.replace(second=0, microsecond=0)
    same = Q(rate_window_start=window)
    updates["rate_window_count"] = Case(
        When(same, then=F("rate_window_count") + 1), default=Value(1)
    )
    updates["token_window_count"] = Case(
        When(same, then=F("token_window_count") + tokens), default=Value(tokens)
    )
    updates["rate_window_start"] = Value(window)
    if Credential.objects.filter(allowed, pk=pk).update(**updates):
        return 0.0
    rate_paid, token_paid = Credential.objects.filter(pk=pk).values_list(
        "rate_paid_until", "token_paid_until"
    ).first() or (None, None)
    return _wait_for(moment, rate_step, rate_paid, token_step, token_paid)


def _wait_for(
    moment: float,
    rate_step: float,
    rate_paid: float | None,
    token_step: float,
    token_paid: float | None,
) -> float:
    waits = [0.0]
    if rate_step and rate_paid is not None:
        waits.append(rate_paid - moment - _tolerance(rate_step))
    if token_step and token_paid is not None:
        waits.append(token_paid - moment - _tolerance(token_step))
    # Raced with another worker (or refused as it drained): try again very soon.
    return max(0.01, max(waits))


def tokens_adjust(credential: Credential, delta: int) -> None:
    """Reconcile the tokens-per-minute budget with the usage the provider
    reported: ``delta`` tokens more (or fewer) than were estimated."""
    tpm = credential.tokens_per_minute
    if not tpm or not delta:
        return
    step = 60.0 * delta / tpm
    if use_redis():
        _redis().eval(_REDIS_ADJUST, 1, _redis_key(credential.pk), repr(step), delta)
        return
    Credential.objects.filter(pk=credential.pk, token_paid_until__isnull=False).update(
        token_paid_until=F("token_paid_until") + step,
        token_window_count=Greatest(F("token_window_count") + delta, Value(0)),
    )


def rate_pace(credential: Credential, now: datetime | None = None) -> dict[str, int]:
    """Requests and tokens counted in the current minute (for the page)."""
    now = now or clock.now()
    window = now.replace(second=0, microsecond=0)
    if use_redis():
        try:
            start, requests, tokens = _redis().hmget(_redis_key(credential.pk), "w", "n", "k")
        except Exception:  # the page shows no pace rather than failing
            logger.warning("Could not read the rate pace from Redis", exc_info=True)
            return {"requests": 0, "tokens": 0}
        if start is None or float(start) != window.timestamp():
            return {"requests": 0, "tokens": 0}
        return {"requests": int(requests or 0), "tokens": max(0, int(tokens or 0))}
    if credential.rate_window_start != window:
        return {"requests": 0, "tokens": 0}
    return {"requests": credential.rate_window_count, "tokens": credential.token_window_count}


def limited(credential_id: int, reason: str, now: datetime | None = None) -> None:
    """Note on the credential that a limit held a call back (at most once a second)."""
    now = now or clock.now()
    Credential.objects.filter(pk=credential_id).filter(
        Q(last_limited_at__isnull=True)
        | Q(last_limited_at__lt=now - timedelta(seconds=LIMITED_NOTE_SECONDS))
    ).update(last_limited_at=now, last_limited_reason=reason[:200])


# The same bucket in Redis (DASHBOARD_BROKER=redis): one hash per credential,
# r/t the paid-until moments, w/n/k the pace's minute and its counts.
_REDIS_ACQUIRE = """
local now = tonumber(ARGV[1])
local rstep, rtol = tonumber(ARGV[2]), tonumber(ARGV[3])
local tstep, ttol = tonumber(ARGV[4]), tonumber(ARGV[5])
local window, tokens = ARGV[6], tonumber(ARGV[7])
local r = tonumber(redis.call('HGET', KEYS[1], 'r')) or now
local t = tonumber(redis.call('HGET', KEYS[1], 't')) or now
local wait = 0
if rstep > 0 and r > now + rtol then wait = r - now - rtol end
if tstep > 0 and t > now + ttol then wait = math.max(wait, t - now - ttol) end
if wait > 0 then return tostring(wait) end
if rstep > 0 then redis.call('HSET', KEYS[1], 'r', tostring(math.max(r, now) + rstep)) end
if tstep > 0 then redis.call('HSET', KEYS[1], 't', tostring(math.max(t, now) + tstep)) end
if redis.call('HGET', KEYS[1], 'w') ~= window then
  redis.call('HSET', KEYS[1], 'w', window, 'n', 0, 'k', 0)
end
redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('HINCRBY', KEYS[1], 'k', tokens)
redis.call('EXPIRE', KEYS[1], 3600)
return '0'
"""
_REDIS_ADJUST = """
if redis.call('HEXISTS', KEYS[1], 't') == 1 then
  redis.call('HINCRBYFLOAT', KEYS[1], 't', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'k', ARGV[2])
end
return 0
"""


@functools.cache
def _redis() -> Any:
    import redis  # a dependency; only needed with the Redis broker

    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5)


def _redis_key(pk: int) -> str:
    """The credential's bucket, named by its database too: two deployments (or
    two test databases) sharing one Redis never share a credential's pace."""
    return f"dashboard:rate:{connection.settings_dict['NAME']}:{pk}"


def _redis_acquire(
    pk: int, moment: float, rate_step: float, token_step: float, tokens: int, now: datetime
) -> float:
    window = now.replace(second=0, microsecond=0).timestamp()
    args = [moment, rate_step, _tolerance(rate_step), token_step, _tolerance(token_step)]
    wait = float(
        _redis().eval(
            _REDIS_ACQUIRE, 1, _redis_key(pk), *(repr(a) for a in args), repr(window), tokens
        )
    )
    return max(0.01, wait) if wait > 0 else 0.0


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


def pause_credential(
    credential_id: int,
    seconds: float,
    now: datetime | None = None,
    *,
    reason: str = "the provider asked to wait",
) -> datetime:
    """The provider said to wait (a 429, Retry-After, or its headers saying
    the budget is spent): no call on this credential, from any job or worker,
    before then. Returns the moment."""
    now = now or clock.now()
    until = now + timedelta(seconds=min(seconds, MAX_PAUSE_SECONDS))
    Credential.objects.filter(pk=credential_id).filter(
        Q(paused_until__isnull=True) | Q(paused_until__lt=until)
    ).update(paused_until=until, last_limited_at=now, last_limited_reason=reason[:200])
    return until


def paused_until(credential: Credential, now: datetime | None = None) -> datetime | None:
    """When the credential's pause ends (None when there is none now)."""
    now = now or clock.now()
    until = (
        Credential.objects.filter(pk=credential.pk).values_list("paused_until", flat=True).first()
    )
    return until if until is not None and until > now else None


def online_minutes(credential: Credential, items: int, tokens: int) -> tuple[float, str] | None:
    """About how long ``items`` calls of ``tokens`` tokens in all take at the
    credential's rpm and tpm (the slower of the two), and which limit sets the
    pace ("600 rpm"); None when the credential sets neither."""
    paces = []
    if credential.requests_per_minute:
        paces.append(
            (items / credential.requests_per_minute, f"{credential.requests_per_minute:,} rpm")
        )
    if credential.tokens_per_minute:
        paces.append(
            (tokens / credential.tokens_per_minute, f"{credential.tokens_per_minute:,} tpm")
        )
    return max(paces) if paces else None
