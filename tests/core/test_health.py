"""Credential health tells the truth: a 401/403 from any call turns it to
"authentication failed" at once, it says what the last call saw and when, and
what it stores is redacted."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from dashboard.core import clock
from dashboard.core.health import credential_record_call, credential_record_health
from dashboard.models import Credential
from providers import ErrorKind, ProviderError, SpecError
from tests.conftest import SECRET, make_credential

pytestmark = pytest.mark.django_db


class Wall:
    def __init__(self) -> None:
        self.now = timezone.now()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> Wall:
    wall = Wall()
    monkeypatch.setattr(clock, "now", wall)
    return wall


def health(credential: Credential) -> tuple[str, str]:
    credential.refresh_from_db()
    return credential.health, credential.health_detail


def test_an_auth_failure_turns_health_at_once_and_a_success_turns_it_back(
    team: Any, wall: Wall
) -> None:
    credential = make_credential(team)
    assert health(credential) == ("unknown", "")
    credential_record_health(credential.pk, ok=True)
    assert health(credential)[0] == "ok"
    credential_record_health(
        credential.pk,
        ok=False,
        detail="Together refused the credential (HTTP 401)",
        auth_failed=True,
    )
    assert health(credential) == ("auth_failed", "Together refused the credential (HTTP 401)")
    assert credential.health_checked_at == wall.now
    wall.now += timedelta(seconds=1)
    credential_record_health(credential.pk, ok=True)
    assert health(credential) == ("ok", "")


def test_successes_are_written_at_most_once_a_minute(
    team: Any, wall: Wall, django_assert_num_queries: Any
) -> None:
    credential = make_credential(team)
    credential_record_health(credential.pk, ok=True)
    first = Credential.objects.get(pk=credential.pk).health_checked_at
    wall.now += timedelta(seconds=30)
    credential_record_health(credential.pk, ok=True)
    assert Credential.objects.get(pk=credential.pk).health_checked_at == first
    wall.now += timedelta(seconds=31)
    with django_assert_num_queries(1):
        credential_record_health(credential.pk, ok=True)
    assert Credential.objects.get(pk=credential.pk).health_checked_at == wall.now


def test_the_detail_is_redacted(team: Any) -> None:
    credential = make_credential(team)
    credential_record_health(
        credential.pk, ok=False, detail=f"echo Authorization: Bearer {SECRET}", auth_failed=True
    )
    assert SECRET not in health(credential)[1]


def test_what_a_provider_error_says_about_the_credential(team: Any) -> None:
    credential = make_credential(team)
    credential_record_call(credential.pk, ProviderError("HTTP 403", kind=ErrorKind.AUTH))
    assert health(credential) == ("auth_failed", "HTTP 403")
    credential_record_call(credential.pk, ProviderError("HTTP 503", kind=ErrorKind.SERVER))
    assert health(credential) == ("error", "HTTP 503")
    # About the request, not the credential: health stays as it was.
    credential_record_call(credential.pk, ProviderError("no such job", kind=ErrorKind.NOT_FOUND))
    credential_record_call(credential.pk, ProviderError("bad input", kind=ErrorKind.REJECTED))
    credential_record_call(credential.pk, SpecError("no schema support"))
    assert health(credential) == ("error", "HTTP 503")
    credential_record_call(credential.pk, None)
    assert health(credential)[0] == "ok"


def test_a_missing_credential_is_no_error(db: Any) -> None:
    credential_record_health(999_999, ok=False, detail="gone", auth_failed=True)
