"""Webhook deliveries against a real receiver on loopback: signed per the
Standard Webhooks spec (verified with the standardwebhooks package), retried
with growing waits under the same webhook-id, failed after the last attempt,
refused at a metadata address, and never in a job's way."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import httpcore
import pytest
import standardwebhooks
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard.core import clock, netguard
from dashboard.instances.services import instance_transition
from dashboard.jobs.services import job_cancel, job_transition
from dashboard.models import (
    Job,
    ModelInstance,
    Team,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from dashboard.notify import outbox, receivers, webhooks
from dashboard.notify.sweep import notify_sweep
from tests.conftest import finish_items, make_credential, make_job
from tests.notify.conftest import HANG, Receiver, WallClock

pytestmark = pytest.mark.django_db


def hook_for(
    team: Team, url: str, alice: User, events: list[str] | None = None
) -> tuple[Webhook, str]:
    return webhooks.webhook_create(
        team=team, url=url, events=events or list(webhooks.EVENTS), actor=alice
    )


def ended_job(team: Team, alice: User, status: str = "completed") -> Job:
    job = make_job(make_credential(team), ["hello"], user=alice)
    finish_items(job, ["hi"])
    assert job_transition(job.pk, status)
    return job


def only_delivery() -> WebhookDelivery:
    return WebhookDelivery.objects.get()


def test_a_delivery_is_signed_per_the_spec_and_verifies(
    team: Team, alice: User, receiver: Receiver, scheduled: list[Any]
) -> None:
    hook, secret = hook_for(team, receiver.url, alice)
    assert secret.startswith("whsec_") and hook.secret != secret  # stored encrypted
    job = ended_job(team, alice)

    assert webhooks.delivery_send(only_delivery().pk) == "succeeded"

    [request] = receiver.requests
    payload = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    assert payload["type"] == "job.completed"
    assert payload["data"]["id"] == job.pk and payload["data"]["status"] == "completed"
    assert payload["data"]["cost"] == {"estimated": None, "actual": None}
    assert payload["timestamp"].endswith("Z")
    assert request.headers["webhook-id"].startswith("msg_")
    assert {k.lower(): v for k, v in request.headers.items()}["content-type"] == "application/json"
    delivery = only_delivery()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("succeeded", 1, 200)
    assert list(delivery.log.values_list("number", "response_status", "error")) == [(1, 200, "")]
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(webhooks.new_secret()).verify(request.body, request.headers)
    assert not scheduled


def test_500_twice_then_200_is_three_attempts_with_one_id_and_growing_waits(
    team: Team, alice: User, receiver: Receiver, wall: WallClock, scheduled: list[Any]
) -> None:
    # Start three minutes back, so every attempt's timestamp is within the
    # five minutes standardwebhooks' verify() accepts around the real time.
    wall.advance(-180)
    _, secret = hook_for(team, receiver.url, alice, ["job.failed"])
    ended_job(team, alice, "failed")
    receiver.script = [500, 500, 200]
    delivery = only_delivery()

    statuses = []
    for _ in range(3):
        statuses.append(webhooks.delivery_send(delivery.pk))
        delivery.refresh_from_db()
        if delivery.next_attempt_at:
            assert webhooks.delivery_send(delivery.pk) == "not due"  # not before its time
            wall.now = delivery.next_attempt_at

    assert statuses == ["pending", "pending", "succeeded"]
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(receiver.requests) == 3 and ids == {delivery.message_id}
    assert len({r.body for r in receiver.requests}) == 1  # the same bytes every time
    for request in receiver.requests:
        standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    stamps = [int(r.headers["webhook-timestamp"]) for r in receiver.requests]
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert 0 < gaps[0] <= 60 < gaps[1] <= 300, gaps
    assert list(delivery.log.values_list("response_status", flat=True)) == [500, 500, 200]
    assert "HTTP 500: receiver is down" in delivery.log.first().error
    assert [call[1] for call in scheduled] == [delivery.pk, delivery.pk]  # each retry scheduled


def test_a_receiver_that_never_answers_ends_failed_after_the_last_attempt(
    team: Team,
    alice: User,
    receiver: Receiver,
    wall: WallClock,
    scheduled: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(webhooks, "TIMEOUT_SECONDS", 0.3)
    hook_for(team, receiver.url, alice)
    ended_job(team, alice, "cancelled")
    receiver.script = [HANG] * 10
    delivery = only_delivery()
    first = wall.now

    while delivery.status == "pending":
        wall.now = max(wall.now, delivery.next_attempt_at)
        webhooks.delivery_send(delivery.pk)
        delivery.refresh_from_db()

    assert delivery.status == "failed" and delivery.next_attempt_at is None
    assert delivery.attempts == len(receiver.requests) == webhooks.MAX_ATTEMPTS >= 5
    assert wall.now - first >= timedelta(hours=1)
    assert "No answer within 0.3 s" in delivery.last_error
    assert delivery.log.count() == webhooks.MAX_ATTEMPTS
    assert webhooks.delivery_send(delivery.pk) == "not due"  # failed stays failed


def test_a_metadata_address_is_refused_when_saved_and_when_it_resolves_there_later(
    team: Team, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(webhooks.WebhookError, match="metadata") as refused:
        hook_for(team, "http://169.254.169.254/latest/meta-data/", alice)
    assert refused.value.field == "url"

    answers = iter([["93.184.216.34"], ["169.254.169.254"]])  # rebinding, after the check
    monkeypatch.setattr(netguard, "_resolve", lambda host: next(answers))
    hook_for(team, "https://hooks.example.com/in", alice)
    ended_job(team, alice)
    connected: list[str] = []

    class Recording(httpcore.SyncBackend):
        def connect_tcp(self, host: str, *args: Any, **kwargs: Any) -> Any:
            connected.append(host)
            raise AssertionError("the guard should have refused before connecting")

    transport = netguard.guarded_transport(backend=Recording())
    assert webhooks.delivery_send(only_delivery().pk, transport=transport) == "pending"

    delivery = only_delivery()
    assert "169.254.169.254" in delivery.last_error and "metadata" in delivery.last_error
    assert delivery.response_status is None and connected == []


def test_a_slow_receiver_never_delays_a_job(
    team: Team,
    alice: User,
    receiver: Receiver,
    nudges: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    hook_for(team, receiver.url, alice)
    receiver.script = [HANG]
    job = make_job(make_credential(team), ["hello"], user=alice)
    started = clock.monotonic()
    with django_capture_on_commit_callbacks(execute=True):
        assert job_cancel(job)
    assert clock.monotonic() - started < 0.5
    assert receiver.requests == []  # nothing was sent by the job's own code
    delivery = only_delivery()
    assert ("dashboard.tasks.webhook_deliver", delivery.pk) in nudges


def test_two_workers_never_make_the_same_attempt(
    team: Team, alice: User, receiver: Receiver
) -> None:
    hook_for(team, receiver.url, alice)
    ended_job(team, alice)
    delivery = only_delivery()
    first = outbox.claim(WebhookDelivery, delivery.pk, max_attempts=webhooks.MAX_ATTEMPTS)
    second = outbox.claim(WebhookDelivery, delivery.pk, max_attempts=webhooks.MAX_ATTEMPTS)
    assert first is not None and first.attempt == 1 and second is None
    assert webhooks.delivery_send(delivery.pk) == "not due"
    assert receiver.requests == []


def test_a_lost_task_delays_a_delivery_never_loses_it(
    team: Team,
    alice: User,
    receiver: Receiver,
    wall: WallClock,
    nudges: list[Any],
    scheduled: list[Any],
) -> None:
    """The message never arrives, then a worker dies mid-attempt: the sweep
    finds the row both times, and the next attempt goes out under the same id."""
    hook_for(team, receiver.url, alice)
    ended_job(team, alice)
    delivery = only_delivery()

    assert notify_sweep()["deliveries"] == 1  # due, never sent: nudged again
    outbox.claim(WebhookDelivery, delivery.pk, max_attempts=webhooks.MAX_ATTEMPTS)  # and dies
    WebhookAttempt.objects.create(delivery=delivery, number=1, error=outbox.STOPPED_MID_ATTEMPT)
    nudges.clear()
    assert notify_sweep()["deliveries"] == 0  # its lease still runs
    wall.advance(outbox.LEASE_SECONDS + 1)
    assert notify_sweep()["deliveries"] == 1
    assert nudges == [("dashboard.tasks.webhook_deliver", delivery.pk)]

    assert webhooks.delivery_send(delivery.pk) == "succeeded"
    delivery.refresh_from_db()
    assert delivery.attempts == 2 and len(receiver.requests) == 1
    assert list(delivery.log.values_list("number", "error")) == [
        (1, outbox.STOPPED_MID_ATTEMPT),
        (2, ""),
    ]


def test_redeliver_sends_the_same_message_again(
    team: Team, alice: User, receiver: Receiver
) -> None:
    _, secret = hook_for(team, receiver.url, alice)
    ended_job(team, alice)
    first = only_delivery()
    with pytest.raises(ValueError, match="still being attempted"):
        webhooks.redeliver(first, actor=alice)
    webhooks.delivery_send(first.pk)
    first.refresh_from_db()

    again = webhooks.redeliver(first, actor=alice)
    assert webhooks.delivery_send(again.pk) == "succeeded"

    assert (again.message_id, again.body, again.redelivery_of_id) == (
        first.message_id,
        first.body,
        first.pk,
    )
    assert [r.body for r in receiver.requests] == [first.body.encode()] * 2
    standardwebhooks.Webhook(secret).verify(receiver.requests[1].body, receiver.requests[1].headers)
    assert team.audit_events.filter(action="webhook.redelivered").exists()


def test_only_the_events_a_webhook_takes_are_delivered(team: Team, alice: User) -> None:
    hook_for(team, "http://127.0.0.1:9/a", alice, ["job.failed"])
    ended_job(team, alice, "completed")
    assert not WebhookDelivery.objects.exists()
    ended_job(team, alice, "failed")
    assert list(WebhookDelivery.objects.values_list("event", flat=True)) == ["job.failed"]


def test_another_team_s_jobs_are_not_delivered(
    team: Team, other_team: Team, alice: User, charlie: User
) -> None:
    hook_for(team, "http://127.0.0.1:9/a", alice)
    ended_job(other_team, charlie)
    assert not WebhookDelivery.objects.exists()


def test_instance_events_carry_the_instance_as_it_was(team: Team, alice: User) -> None:
    hook_for(team, "http://127.0.0.1:9/a", alice)
    credential = make_credential(team, "bytez")
    instance = ModelInstance.objects.create(
        team=team, credential=credential, model="m", status="loading"
    )
    assert instance_transition(instance.pk, "running")
    assert instance_transition(instance.pk, "running")  # a check that saw no change
    assert instance_transition(instance.pk, "expired")

    rows = WebhookDelivery.objects.order_by("id")
    assert list(rows.values_list("event", flat=True)) == ["instance.running", "instance.expired"]
    bodies = [json.loads(row.body) for row in rows]
    assert [body["data"]["status"] for body in bodies] == ["running", "expired"]
    assert bodies[0]["data"]["id"] == instance.pk and bodies[0]["type"] == "instance.running"


def test_a_poll_round_s_events_cost_a_constant_number_of_queries(team: Team, alice: User) -> None:
    hook_for(team, "http://127.0.0.1:9/a", alice)
    credential = make_credential(team)
    counts = []
    for size in (5, 50):
        ids = [make_job(credential, ["x"], user=alice).pk for _ in range(size)]
        with CaptureQueriesContext(connection) as queries:
            receivers.on_job_ended(Job, job_ids=ids, status="completed")
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
    assert WebhookDelivery.objects.count() == 55


def test_the_secret_is_never_logged(
    team: Team, alice: User, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    _, secret = hook_for(team, receiver.url, alice)
    receiver.script = [500]
    ended_job(team, alice)
    with caplog.at_level(logging.DEBUG):
        webhooks.delivery_send(only_delivery().pk)
    assert secret not in caplog.text
    assert secret[6:] not in json.dumps(list(WebhookDelivery.objects.values()), default=str)


def test_a_failure_to_record_notifications_never_undoes_a_job_s_end(
    team: Team, alice: User, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    hook_for(team, "http://127.0.0.1:9/a", alice)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the outbox is on fire")

    monkeypatch.setattr(webhooks, "deliveries_create", broken)
    job = ended_job(team, alice, "failed")

    job.refresh_from_db()
    assert job.status == "failed" and not WebhookDelivery.objects.exists()
    assert "Notifications for" in caplog.text and "on fire" in caplog.text
