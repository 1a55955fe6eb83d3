"""Holes of issue 19 in notifications: a receiver that trickles its answer
holds a delivery no longer than its 10 s; a subject stays one line; a user
who left the team gets no more e-mail."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail

from dashboard.jobs.services import job_transition
from dashboard.models import EmailNotification, Membership, WebhookDelivery
from dashboard.notify import emails, outbox, webhooks
from tests.conftest import finish_items, make_credential, make_job
from tests.notify.conftest import WallClock

pytestmark = pytest.mark.django_db

#: The trickler stops on its own after this, beyond the lease, so that on a
#: build without a total deadline the attempt outlives its lease.
TRICKLE_FOR = outbox.LEASE_SECONDS + 5


@pytest.fixture
def trickler() -> Iterator[str]:
    """A receiver on loopback that reads the request, then sends its status
    line and headers one byte every half second (each read of the client gets
    a byte well within any per-read timeout)."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                answer = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000
                started = time.monotonic()
                for byte in answer:
                    if stop.is_set() or time.monotonic() - started > TRICKLE_FOR:
                        break
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break  # the client hung up: what a deadline does
                    stop.wait(0.5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/hooks/slow"
    stop.set()
    thread.join(5)
    server.close()


def test_a_trickling_receiver_holds_a_delivery_no_longer_than_its_deadline(
    team: Any,
    alice: User,
    trickler: str,
    wall: WallClock,
    scheduled: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    webhooks.webhook_create(team=team, url=trickler, events=["job.completed"], actor=alice)
    job = make_job(make_credential(team), ["hello"], user=alice)
    finish_items(job, ["hi"])
    assert job_transition(job.pk, "completed")
    delivery = WebhookDelivery.objects.get()
    second_claims: list[Any] = []
    real_post = webhooks.post

    def post_then_a_second_worker_looks(*args: Any, **kwargs: Any) -> webhooks.Answer:
        started = time.monotonic()
        answer = real_post(*args, **kwargs)
        # However long the attempt took, a second worker arriving as it ends
        # finds the delivery still claimed.
        wall.advance(time.monotonic() - started + 1)
        second_claims.append(
            outbox.claim(WebhookDelivery, delivery.pk, max_attempts=webhooks.MAX_ATTEMPTS)
        )
        return answer

    monkeypatch.setattr(webhooks, "post", post_then_a_second_worker_looks)
    started = time.monotonic()
    status = webhooks.delivery_send(delivery.pk)
    took = time.monotonic() - started

    assert took < webhooks.TIMEOUT_SECONDS + 1.5, took
    assert second_claims == [None]
    assert status == "pending"  # retried later
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.response_status is None
    assert "No answer within 10 s" in delivery.last_error
    assert delivery.next_attempt_at > wall.now
    assert [call[1] for call in scheduled] == [delivery.pk]
    [attempt] = delivery.log.all()
    assert attempt.error == delivery.last_error
    assert 9_000 <= attempt.duration_ms <= 11_500


def end_job(team: Any, user: User, **spec: Any) -> Any:
    job = make_job(make_credential(team), ["hello"], user=user, **spec)
    finish_items(job, ["hi"])
    assert job_transition(job.pk, "completed")
    return job


def test_a_model_name_with_a_newline_still_gets_a_one_line_subject(team: Any, alice: User) -> None:
    emails.email_opt_in(alice, on=True, address="alice@example.com")
    job = end_job(team, alice, model="evil\r\nBcc: mallory@example.com\n  model")
    note = EmailNotification.objects.get()

    assert emails.email_send(note.pk) == "succeeded"
    [message] = mail.outbox
    assert (
        message.subject == f"Job #{job.pk} completed: Together evil Bcc: mallory@example.com model"
    )
    assert message.to == ["alice@example.com"] and message.bcc == []


def test_a_mail_that_cannot_be_made_is_recorded_readably(
    team: Any, alice: User, scheduled: list[Any]
) -> None:
    emails.email_opt_in(alice, on=True, address="alice@example.com")
    end_job(team, alice)
    User.objects.filter(pk=alice.pk).update(email="alice@example.com\nBcc: mallory@example.com")
    note = EmailNotification.objects.get()

    assert emails.email_send(note.pk) == "failed"  # it would fail the same way again
    note.refresh_from_db()
    assert note.last_error != outbox.STOPPED_MID_ATTEMPT
    assert note.last_error.startswith("The e-mail could not be made:")
    assert mail.outbox == [] and scheduled == []


def test_a_user_who_left_the_team_gets_no_more_e_mail(team: Any, alice: User) -> None:
    emails.email_opt_in(alice, on=True, address="alice@example.com")
    end_job(team, alice)  # written while she is a member...
    note = EmailNotification.objects.get()
    Membership.objects.filter(team=team, user=alice).delete()  # ...sent after she left
    end_job(team, alice)  # and none for jobs that end after

    assert emails.email_send(note.pk) == "failed"
    note.refresh_from_db()
    assert "no longer a member" in note.last_error
    assert mail.outbox == []
    assert EmailNotification.objects.count() == 1
