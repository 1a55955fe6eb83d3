"""DESIGN's webhook rows: POST (the secret in that answer only), GET (no
secret), DELETE (204) and the deliveries; team admins only; malformed bodies
and internal URLs refused."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.core import netguard
from dashboard.jobs.services import job_transition
from dashboard.models import Team, Webhook, WebhookDelivery
from dashboard.notify import webhooks
from tests.api.conftest import Api, assert_error
from tests.conftest import make_credential, make_job

pytestmark = pytest.mark.django_db

URL = "https://hooks.example.com/llm"


def test_a_webhook_s_secret_is_in_the_create_answer_only(alice_api: Api, team: Team) -> None:
    response = alice_api.post("webhooks", {"url": URL, "events": ["job.failed", "job.completed"]})

    assert response.status_code == 201, response.content
    created = response.json()
    assert created["secret"].startswith("whsec_")
    assert (created["url"], created["events"]) == (URL, ["job.completed", "job.failed"])
    hook = Webhook.objects.get(pk=created["id"])
    assert hook.reveal_secret() == created["secret"] != hook.secret
    listed = alice_api.get("webhooks").json()
    assert listed == [{k: v for k, v in created.items() if k != "secret"}]
    later = b"".join(alice_api.bodies[1:])
    assert created["secret"].encode() not in later
    assert team.audit_events.filter(action="webhook.created").exists()


def test_deleting_a_webhook_is_a_204_and_takes_its_deliveries(
    alice_api: Api, team: Team, alice: Any
) -> None:
    hook, _ = webhooks.webhook_create(team=team, url=URL, events=["job.failed"], actor=alice)
    job = make_job(make_credential(team), ["x"], user=alice)
    job_transition(job.pk, "failed")
    assert WebhookDelivery.objects.count() == 1

    response = alice_api.delete(f"webhooks/{hook.pk}")

    assert response.status_code == 204 and response.content == b""
    assert not Webhook.objects.exists() and not WebhookDelivery.objects.exists()
    assert_error(alice_api.delete(f"webhooks/{hook.pk}"), 404)


def test_deliveries_are_listed_newest_first_in_pages(
    alice_api: Api, team: Team, alice: Any
) -> None:
    hook, _ = webhooks.webhook_create(team=team, url=URL, events=["job.failed"], actor=alice)
    credential = make_credential(team)
    ids = []
    for _ in range(3):
        job = make_job(credential, ["x"], user=alice)
        job_transition(job.pk, "failed")
        ids.append(job.pk)

    first = alice_api.get(f"webhooks/{hook.pk}/deliveries?limit=2").json()
    second = alice_api.get(first["next"]).json()

    rows = first["results"] + second["results"]
    assert [row["object_id"] for row in rows] == ids[::-1] and second["next"] is None
    assert set(rows[0]) == {
        "id",
        "event",
        "object_id",
        "attempts",
        "status",
        "response_status",
        "next_attempt_at",
        "last_error",
        "created_at",
        "redelivery_of",
    }
    assert (rows[0]["event"], rows[0]["status"], rows[0]["attempts"]) == (
        "job.failed",
        "pending",
        0,
    )
    assert rows[0]["next_attempt_at"].endswith("Z")
    assert_error(alice_api.get(f"webhooks/{hook.pk}/deliveries?cursor=zz"), 400, "cursor")
    assert_error(alice_api.get(f"webhooks/{hook.pk}/deliveries?limit=0"), 400, "limit")
    assert_error(alice_api.get(f"webhooks/{hook.pk}/deliveries?page=2"), 400, "page")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": ["job.failed"]}, "url"),
        ({"url": URL}, "events"),
        ({"url": URL, "events": []}, "events"),
        ({"url": URL, "events": ["job.exploded"]}, "events"),
        ({"url": URL, "events": "job.failed"}, "events"),
        ({"url": 5, "events": ["job.failed"]}, "url"),
        ({"url": "ftp://example.com/x", "events": ["job.failed"]}, "url"),
        ({"url": "not a url", "events": ["job.failed"]}, "url"),
        ({"url": "http://[::1/hook", "events": ["job.failed"]}, "url"),
        ({"url": "http://exa mple.com/", "events": ["job.failed"]}, "url"),
        ({"url": URL + "/" + "x" * 500, "events": ["job.failed"]}, "url"),
        ({"url": "http://169.254.169.254/latest/meta-data/", "events": ["job.failed"]}, "url"),
        ({"url": "http://10.0.0.5/hook", "events": ["job.failed"]}, "url"),
        ({"url": URL, "events": ["job.failed"], "secret": "whsec_mine"}, "secret"),
        ({"url": URL, "events": ["job.failed"], "team": 999999}, "team"),
    ],
)
def test_malformed_or_internal_webhooks_are_a_400(
    alice_api: Api, body: dict[str, Any], field: str
) -> None:
    assert_error(alice_api.post("webhooks", body), 400, field)
    assert not Webhook.objects.exists()


def test_a_name_that_resolves_to_metadata_is_refused(
    alice_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(netguard, "_resolve", lambda host: ["169.254.169.254"])
    body = assert_error(
        alice_api.post("webhooks", {"url": URL, "events": ["job.failed"]}), 400, "url"
    )
    assert "metadata" in body["fields"]["url"][0]


def test_webhooks_are_for_team_admins(
    alice_api: Api, bob_api: Api, viewer_api: Api, charlie_api: Api, team: Team, alice: Any
) -> None:
    hook, _ = webhooks.webhook_create(team=team, url=URL, events=["job.failed"], actor=alice)
    body = {"url": URL, "events": ["job.failed"]}
    assert_error(bob_api.post("webhooks", body), 403)
    assert bob_api.get("webhooks").json() == [] and viewer_api.get("webhooks").json() == []
    assert_error(bob_api.delete(f"webhooks/{hook.pk}"), 403)
    assert_error(bob_api.get(f"webhooks/{hook.pk}/deliveries"), 403)
    assert_error(charlie_api.delete(f"webhooks/{hook.pk}"), 404)
    assert_error(charlie_api.get(f"webhooks/{hook.pk}/deliveries"), 404)
    assert charlie_api.get("webhooks").json() == []
    assert Webhook.objects.count() == 1
