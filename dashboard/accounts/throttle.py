"""Login throttling: after too many failures for one username or one client
address within a window, logins are refused for a while, with a clear message."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from dashboard.models import LoginAttempt

WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
#: Failures in one window before a lockout: per username, per client address.
MAX_PER_USER = 5
MAX_PER_ADDRESS = 20


def attempt_keys(request: HttpRequest | None, username: str) -> list[tuple[str, int]]:
    keys = [(f"user:{username.strip().lower()[:150]}", MAX_PER_USER)]
    address = request.META.get("REMOTE_ADDR", "") if request is not None else ""
    if address:
        keys.append((f"addr:{address}", MAX_PER_ADDRESS))
    return keys


def locked_for(keys: list[tuple[str, int]]) -> float:
    now = timezone.now()
    until = (
        LoginAttempt.objects.filter(key__in=[key for key, _ in keys], locked_until__gt=now)
        .order_by("-locked_until")
        .values_list("locked_until", flat=True)
        .first()
    )
    return (until - now).total_seconds() if until else 0.0


def record_failure(keys: list[tuple[str, int]]) -> None:
    now = timezone.now()
    for key, limit in keys:
        attempt, _ = LoginAttempt.objects.get_or_create(key=key)
        if attempt.window_start < now - WINDOW:
            LoginAttempt.objects.filter(pk=attempt.pk).update(
                failures=1, window_start=now, locked_until=None
            )
            continue
        LoginAttempt.objects.filter(pk=attempt.pk).update(failures=F("failures") + 1)
        if attempt.failures + 1 >= limit:
            LoginAttempt.objects.filter(pk=attempt.pk).update(locked_until=now + LOCKOUT)


def record_success(keys: list[tuple[str, int]]) -> None:
    LoginAttempt.objects.filter(key=keys[0][0]).delete()


class ThrottledAuthenticationForm(AuthenticationForm):
    def clean(self) -> dict[str, Any]:
        keys = attempt_keys(self.request, self.data.get("username") or "")
        seconds = locked_for(keys)
        if seconds:
            minutes = max(1, round(seconds / 60))
            raise forms.ValidationError(
                f"Too many failed logins. Try again in about {minutes} minute{'s' if minutes > 1 else ''}.",
                code="throttled",
            )
        try:
            data = super().clean()
        except forms.ValidationError:
            record_failure(keys)
            raise
        record_success(keys)
        return data
