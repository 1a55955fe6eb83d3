"""Login throttling: progressive delays, per username and per client address.

The first failures are free; after that each further attempt must wait a
delay that doubles with every failure, up to a ceiling, and the form says how
long. Nothing is ever locked for good: once the delay has passed, the right
password works. Attempts refused during a delay are not counted (they do not
prolong it), and when a delay ends only one attempt is let through to be
checked, so concurrent requests cannot turn it into a burst of guesses.

The client address is the one the request came from, or, when that is a
trusted proxy (DASHBOARD_TRUSTED_PROXIES), the right-most address of
X-Forwarded-For that no trusted proxy vouches for: the left part of the
header is whatever the client wrote.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.http import HttpRequest

from dashboard.core import clock
from dashboard.models import LoginAttempt

#: Failures before delays start: per username, per client address (a shared
#: office address sees many people's typos).
FREE_PER_USER = 5
FREE_PER_ADDRESS = 20
#: The first delay; each further failure doubles it, up to the ceiling.
BASE_DELAY_SECONDS = 2
MAX_DELAY_SECONDS = 15 * 60
#: A streak of failures is forgotten after this long without a new one.
FORGET_AFTER = timedelta(hours=24)
#: How long one attempt past a delay holds the way while its password is checked.
CHECK_SECONDS = 10

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def delay_after(failures: int, free: int) -> int:
    """Seconds the next attempt waits after ``failures`` failures (0: none)."""
    if failures < free:
        return 0
    return min(MAX_DELAY_SECONDS, BASE_DELAY_SECONDS * 2 ** min(failures - free, 20))


# --- the client address --------------------------------------------------------------------


@functools.cache
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(request: HttpRequest) -> str:
    remote = request.META.get("REMOTE_ADDR", "")
    trusted = _networks(tuple(getattr(settings, "DASHBOARD_TRUSTED_PROXIES", ())))

    def vouched(address: Any) -> bool:
        return address is not None and any(address in network for network in trusted)

    current = _address(remote)
    if not trusted or not vouched(current):
        return remote
    hops = [hop for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage: the proxy that passed it on is all we know
        current = address
        if not vouched(address):
            break
    return str(current)


def attempt_keys(request: HttpRequest | None, username: str) -> list[tuple[str, int]]:
    keys = [(f"user:{username.strip().lower()[:150]}", FREE_PER_USER)]
    address = client_address(request) if request is not None else ""
    if address:
        keys.append((f"addr:{address[:100]}", FREE_PER_ADDRESS))
    return keys


# --- attempts --------------------------------------------------------------------------------


@dataclass
class Attempt:
    """One login attempt under way: ``wait`` > 0 when it is refused."""

    wait: float = 0.0
    #: (key, failures counted with this attempt, free failures) for each key.
    counted: list[tuple[str, int, int]] = field(default_factory=list)


def _row(key: str) -> LoginAttempt:
    now = clock.now()
    row, _ = LoginAttempt.objects.get_or_create(key=key, defaults={"window_start": now})
    if row.failures and row.window_start < now - FORGET_AFTER:
        LoginAttempt.objects.filter(pk=row.pk, window_start=row.window_start).update(
            failures=0, locked_until=None
        )
        row.refresh_from_db()
    return row


def wait_seconds(keys: list[tuple[str, int]]) -> float:
    """Seconds before an attempt under these keys may be made (0: now)."""
    now = clock.now()
    waits = [0.0]
    for key, _ in keys:
        row = _row(key)
        if row.locked_until is not None and row.locked_until > now:
            waits.append((row.locked_until - now).total_seconds())
    return max(waits)


def attempt_begin(keys: list[tuple[str, int]]) -> Attempt:
    """Count the attempt as a failure before the password is checked (it is
    taken back on success), so concurrent attempts each see their own count;
    an attempt past the free ones must also take the way, which only one can."""
    wait = wait_seconds(keys)
    if wait:
        return Attempt(wait=wait)
    attempt = Attempt()
    now = clock.now()
    for key, free in keys:
        rows = LoginAttempt.objects.filter(key=key)
        rows.update(failures=F("failures") + 1, window_start=now)
        count = rows.values_list("failures", flat=True).first() or 1
        attempt.counted.append((key, count, free))
        if count <= free:
            continue
        open_now = Q(locked_until__isnull=True) | Q(locked_until__lte=now)
        if not rows.filter(open_now).update(locked_until=now + timedelta(seconds=CHECK_SECONDS)):
            attempt.wait = max(1.0, wait_seconds(keys))
            _take_back(attempt)
            return attempt
    return attempt


def _take_back(attempt: Attempt) -> None:
    for key, _, _ in attempt.counted:
        LoginAttempt.objects.filter(key=key).update(failures=Greatest(F("failures") - 1, 0))
    attempt.counted = []


def attempt_end(attempt: Attempt, *, success: bool) -> None:
    if attempt.wait:
        return
    if success:
        user_keys = [key for key, _, _ in attempt.counted if key.startswith("user:")]
        LoginAttempt.objects.filter(key__in=user_keys).delete()
        # The address keeps its other failures: one good login (of an account
        # of one's own) must not wipe a streak of guesses at others.
        for key, count, free in attempt.counted:
            fields: dict[str, Any] = {"failures": Greatest(F("failures") - 1, 0)}
            if count > free:
                fields["locked_until"] = None  # the way this attempt held
            LoginAttempt.objects.filter(key=key).update(**fields)
        return
    now = clock.now()
    for key, count, free in attempt.counted:
        delay = delay_after(count, free)
        LoginAttempt.objects.filter(key=key).update(
            locked_until=now + timedelta(seconds=delay) if delay else None
        )


def wait_text(seconds: float) -> str:
    if seconds < 90:
        whole = max(1, math.ceil(seconds))
        return f"{whole} second{'s' if whole != 1 else ''}"
    minutes = math.ceil(seconds / 60)
    return f"{minutes} minutes"


class ThrottledAuthenticationForm(AuthenticationForm):
    def clean(self) -> dict[str, Any]:
        if self.errors:
            # A field the form refused (empty, a NUL character): nothing was
            # checked, nothing to count, and nothing such goes to the database.
            return super().clean()
        attempt = attempt_begin(attempt_keys(self.request, self.cleaned_data["username"]))
        if attempt.wait:
            raise forms.ValidationError(
                f"Too many failed logins. Try again in {wait_text(attempt.wait)}.",
                code="throttled",
            )
        try:
            data = super().clean()
        except forms.ValidationError:
            attempt_end(attempt, success=False)
            raise
        attempt_end(attempt, success=True)
        return data


class ThrottledAdminAuthenticationForm(ThrottledAuthenticationForm, AdminAuthenticationForm):
    """The admin site's login: staff accounts only, throttled as /login/ is,
    on the same keys, so failures at one count at the other. A right password
    of an account that is not staff is a failed admin login."""
