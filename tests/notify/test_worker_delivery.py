"""The whole path with a real worker process: a job runs on the simulator, ends,
and its webhook delivery reaches a receiver on loopback, sent by the task the
event nudged, signed so that standardwebhooks verifies it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import standardwebhooks
from django.contrib.auth.models import User

from dashboard.models import Team, WebhookDelivery
from dashboard.notify.webhooks import webhook_create
from tests.conftest import make_credential, make_job
from tests.notify.conftest import Receiver
from tests.workers import start_qcluster, stop

pytestmark = [pytest.mark.shared_db, pytest.mark.django_db(transaction=True)]


def test_a_worker_runs_the_job_and_delivers_its_event(
    team: Team, alice: User, sims: Any, receiver: Receiver, tmp_path: Path
) -> None:
    _, secret = webhook_create(team=team, url=receiver.url, events=["job.completed"], actor=alice)
    credential = make_credential(team, base_url=sims.get("together").base_url)
    worker = start_qcluster(tmp_path / "qcluster.log")
    try:
        job = make_job(credential, ["hello", "world"], user=alice)
        deadline = time.monotonic() + 30
        # Until the worker has recorded the answer, not just sent the request:
        # stopping it in between leaves the delivery pending (sent again later).
        settled = WebhookDelivery.objects.exclude(status="pending")
        while not (receiver.requests and settled.exists()) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop(worker)

    [request] = receiver.requests
    payload = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    assert payload["type"] == "job.completed" and payload["data"]["id"] == job.pk
    assert payload["data"]["progress"] == {"done": 2, "total": 2}
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("succeeded", 1, 200)
