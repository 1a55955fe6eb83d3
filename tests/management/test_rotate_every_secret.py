"""rotate_encryption_key re-encrypts every encrypted field, webhook secrets
included: after it, the old key can go and every webhook still signs with
the secret its receiver was given."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import standardwebhooks
from django.contrib.auth.models import User
from django.core.management import CommandError

from dashboard.models import Credential, Webhook
from dashboard.notify import webhooks
from tests.conftest import make_credential
from tests.management import test_commands
from tests.management.test_commands import new_key, run

pytestmark = pytest.mark.django_db

keys = test_commands.keys  # the fixture that switches DASHBOARD_ENCRYPTION_KEYS


def stored() -> dict[str, dict[int, str]]:
    return {
        "credentials": dict(Credential.objects.values_list("pk", "secret")),
        "webhooks": dict(Webhook.objects.values_list("pk", "secret")),
    }


def hook(team: Any, alice: User) -> tuple[Webhook, str]:
    return webhooks.webhook_create(
        team=team, url="https://hooks.example.com/in", events=["job.completed"], actor=alice
    )


def test_after_a_rotation_without_the_old_key_a_webhook_signs_with_its_secret(
    keys: Any, team: Any, alice: User
) -> None:
    old, new = new_key(), new_key()
    keys(old)
    make_credential(team, secret="provider-key")
    webhook, secret = hook(team, alice)
    before = stored()

    keys(new, old)
    assert "Re-encrypted 2 secret(s)" in run("rotate_encryption_key")
    assert stored()["webhooks"][webhook.pk] != before["webhooks"][webhook.pk]

    keys(new)  # following the command's advice: the old key is removed
    webhook.refresh_from_db()
    assert webhook.reveal_secret() == secret
    seen: list[httpx.Request] = []

    def keep(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    answer = webhooks.post(webhook, "msg_1", '{"a":1}', transport=httpx.MockTransport(keep))
    assert answer.ok, answer.error
    [request] = seen
    standardwebhooks.Webhook(secret).verify(request.content, dict(request.headers))
    assert Credential.objects.get().reveal_secret() == "provider-key"


def test_an_unreadable_webhook_secret_stops_the_rotation_and_changes_nothing(
    keys: Any, team: Any, alice: User
) -> None:
    old, current = new_key(), new_key()
    keys(current)
    make_credential(team, secret="readable")
    keys(old)
    lost, _ = hook(team, alice)
    before = stored()

    keys(current)  # the key that encrypted the webhook's secret is missing
    with pytest.raises(
        CommandError, match=f"[Ww]ebhooks {lost.pk} cannot be decrypted.*nothing was changed"
    ):
        run("rotate_encryption_key")
    assert stored() == before
