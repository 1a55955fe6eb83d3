"""The webhooks pages (team admins: add, the secret once, the delivery log,
redeliver, delete) and the user's e-mail opt-in on the account page."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from dashboard.jobs.services import job_transition
from dashboard.models import NotificationPreference, Webhook, WebhookDelivery
from dashboard.notify import webhooks
from tests.conftest import make_credential, make_job
from tests.notify.conftest import Receiver

pytestmark = pytest.mark.django_db


def page(response: Any) -> str:
    return response.content.decode()


def test_an_admin_adds_a_webhook_and_sees_its_secret_once(
    client: Any, alice: Any, team: Any, receiver: Receiver
) -> None:
    client.force_login(alice)
    response = client.post(
        reverse("webhook_list"), {"url": receiver.url, "events": ["job.failed", "instance.failed"]}
    )
    html = page(response)
    hook = Webhook.objects.get()
    secret = hook.reveal_secret()
    assert response.status_code == 200 and secret in html and "shown only this once" in html
    assert response["Cache-Control"].startswith("max-age=0")
    assert hook.events == ["job.failed", "instance.failed"]
    again = page(client.get(reverse("webhook_list")))
    assert receiver.url in again and secret not in again


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://169.254.169.254/latest/", "metadata"),
        ("ftp://example.com/x", "http:// or https://"),
    ],
)
def test_internal_and_odd_urls_are_refused_on_the_page(
    client: Any, alice: Any, team: Any, url: str, problem: str
) -> None:
    client.force_login(alice)
    response = client.post(reverse("webhook_list"), {"url": url, "events": ["job.failed"]})
    assert response.status_code == 400 and problem in page(response)
    assert not Webhook.objects.exists()


def test_the_delivery_log_shows_attempts_and_redeliver_sends_again(
    client: Any, alice: Any, team: Any, receiver: Receiver, scheduled: list[Any]
) -> None:
    client.force_login(alice)
    hook, _ = webhooks.webhook_create(
        team=team, url=receiver.url, events=["job.cancelled"], actor=alice
    )
    job = make_job(make_credential(team), ["x"], user=alice)
    job_transition(job.pk, "cancelled")
    receiver.script = [503]
    delivery = WebhookDelivery.objects.get()
    webhooks.delivery_send(delivery.pk)

    html = page(client.get(reverse("webhook_detail", args=[hook.pk])))
    assert "HTTP 503" in html and "receiver is down" in html and delivery.message_id in html
    assert "Redeliver<span" not in html  # still pending: a retry is due
    WebhookDelivery.objects.filter(pk=delivery.pk).update(status="failed", next_attempt_at=None)

    response = client.post(reverse("delivery_redeliver", args=[delivery.pk]), follow=True)

    assert f"queued again as {delivery.pk + 1}" in page(response)
    again = WebhookDelivery.objects.get(redelivery_of=delivery)
    assert again.message_id == delivery.message_id and again.status == "pending"


def test_webhook_pages_are_for_admins(client: Any, bob: Any, alice: Any, team: Any) -> None:
    hook, _ = webhooks.webhook_create(
        team=team, url="http://127.0.0.1:9/x", events=["job.failed"], actor=alice
    )
    client.force_login(bob)
    assert client.get(reverse("webhook_list")).status_code == 403
    assert client.get(reverse("webhook_detail", args=[hook.pk])).status_code == 403
    assert client.post(reverse("webhook_delete", args=[hook.pk])).status_code == 403
    assert "Webhooks</a>" not in page(client.get(reverse("home")))
    client.force_login(alice)
    assert "Webhooks</a>" in page(client.get(reverse("home")))
    client.post(reverse("webhook_delete", args=[hook.pk]))
    assert not Webhook.objects.exists()


def test_a_user_opts_in_to_e_mail_on_the_account_page(client: Any, bob: Any, team: Any) -> None:
    client.force_login(bob)
    html = page(client.get(reverse("token_list")))
    assert "E-mail me when a job I submitted ends" in html

    missing = client.post(reverse("account_notifications"), {"email_on_job_end": "on"}, follow=True)
    assert "Give the address" in page(missing)
    response = client.post(
        reverse("account_notifications"),
        {"email": "bob@example.com", "email_on_job_end": "on"},
        follow=True,
    )

    assert "go to bob@example.com" in page(response)
    bob.refresh_from_db()
    assert bob.email == "bob@example.com"
    assert NotificationPreference.objects.get(user=bob).email_on_job_end
    assert "checked" in page(client.get(reverse("token_list")))
    client.post(reverse("account_notifications"), {"email": "bob@example.com"})
    assert not NotificationPreference.objects.get(user=bob).email_on_job_end
