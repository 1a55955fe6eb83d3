"""E-mail when one's own job ends: only for users who opted in, sent by a task
through Django's e-mail framework, retried when the server fails."""

from __future__ import annotations

import smtplib
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail

from dashboard.jobs.services import job_transition
from dashboard.models import EmailNotification, Price, Team
from dashboard.notify import emails
from tests.conftest import finish_items, make_credential, make_job
from tests.notify.conftest import WallClock

pytestmark = pytest.mark.django_db


def end(team: Team, user: User, status: str = "completed", **spec: Any) -> Any:
    job = make_job(make_credential(team), ["hello", "again"], user=user, **spec)
    finish_items(job, ["hi"], {1: "boom"})
    assert job_transition(job.pk, status)
    return job


def test_a_user_who_opted_in_gets_an_e_mail_when_their_job_ends(
    team: Team, alice: User, bob: User, scheduled: list[Any]
) -> None:
    emails.email_opt_in(alice, on=True, address="alice@example.com")
    Price.objects.create(
        team=team, provider="together", model="m", input_per_mtok=1, output_per_mtok=1
    )
    job = end(team, alice, model="m")
    end(team, bob)  # bob did not opt in

    [note] = EmailNotification.objects.all()
    assert emails.email_send(note.pk) == "succeeded"

    [message] = mail.outbox
    assert message.to == ["alice@example.com"]
    assert message.subject == f"Job #{job.pk} completed · 1 failed: Together m"
    assert "1 of 2 prompt(s) completed, 1 failed" in message.body
    assert "Cost: $0.000003 (from estimated tokens)" in message.body
    assert f"/jobs/{job.pk}/" in message.body


def test_no_e_mail_without_an_address_or_after_opting_out(team: Team, alice: User) -> None:
    emails.email_opt_in(alice, on=True)  # no address
    end(team, alice)
    emails.email_opt_in(alice, on=False, address="alice@example.com")
    end(team, alice, "failed")
    assert not EmailNotification.objects.exists()


def test_a_failing_mail_server_is_retried_then_given_up(
    team: Team,
    alice: User,
    wall: WallClock,
    scheduled: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emails.email_opt_in(alice, on=True, address="alice@example.com")
    end(team, alice, "cancelled")
    note = EmailNotification.objects.get()

    def refuse(*args: Any, **kwargs: Any) -> int:
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")

    monkeypatch.setattr("django.core.mail.EmailMessage.send", refuse)
    statuses = []
    while note.status == "pending":
        wall.now = max(wall.now, note.next_attempt_at)
        statuses.append(emails.email_send(note.pk))
        note.refresh_from_db()
    assert statuses == ["pending"] * (emails.MAX_ATTEMPTS - 1) + ["failed"]
    assert "SMTPServerDisconnected" in note.last_error
    assert len(scheduled) == emails.MAX_ATTEMPTS - 1
