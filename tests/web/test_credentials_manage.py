"""The credentials page: admins edit a credential (name, limits, base URL) and
replace its secret, audited, the old secret never shown; members test the
connection (a billed check only once confirmed, with the model they name);
health says what the last call saw and when, for every call."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from dashboard.accounts.credentials import BilledCheckNotConfirmed, credential_test
from dashboard.instances.catalog import catalog_refresh
from dashboard.models import AuditEvent, Credential, Membership, Role
from tests.conftest import SECRET, make_credential

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client: Client, alice: User, team: Any) -> Client:
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(bob: User, team: Any) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def flash(response: Any) -> str:
    return " ".join(str(m) for m in response.wsgi_request._messages)


def row(client: Client, credential: Credential) -> str:
    body = client.get(reverse("credential_list")).content.decode()
    match = re.search(rf'<tr id="credential-{credential.pk}">.*?</tr>', body, re.S)
    assert match, body
    return match.group(0)


# --- edit --------------------------------------------------------------------------------------


def test_an_admin_edits_name_limits_and_base_url(
    alice_client: Client, team: Any, alice: User
) -> None:
    credential = make_credential(team, name="Main", base_url="https://api.together.xyz")
    url = reverse("credential_edit", args=[credential.pk])
    form = alice_client.get(url).content.decode()
    assert 'value="Main"' in form and SECRET not in form
    assert re.search(r'<input type="password" name="new_secret"[^>]*>', form)
    response = alice_client.post(
        url,
        {
            "name": "Main EU",
            # The same host: the stored secret goes on (another host needs it again).
            "base_url": "https://api.together.xyz/eu/",
            "max_concurrency": "12",
            "requests_per_minute": "600",
            "new_secret": "",
        },
    )
    assert response.status_code == 302 and "saved" in flash(response)
    credential.refresh_from_db()
    assert (credential.name, credential.base_url) == ("Main EU", "https://api.together.xyz/eu/")
    assert (credential.max_concurrency, credential.requests_per_minute) == (12, 600)
    assert credential.reveal_secret() == SECRET
    event = AuditEvent.objects.get(action="credential.updated")
    assert event.actor == alice
    assert event.details == {
        "fields": ["base_url", "max_concurrency", "name", "requests_per_minute"]
    }


def test_replacing_the_secret_is_audited_and_never_shows_either(
    alice_client: Client, team: Any, sims: Any
) -> None:
    sim = sims.get("bytez")
    credential = make_credential(team, "bytez", base_url=sim.base_url, secret="old-key-1234")
    credential_test(credential, actor=None)
    assert Credential.objects.get(pk=credential.pk).health == "auth_failed"
    url = reverse("credential_edit", args=[credential.pk])
    response = alice_client.post(
        url,
        {
            "name": credential.name,
            "base_url": sim.base_url,
            "max_concurrency": "4",
            "new_secret": f"  {SECRET}  ",
        },
    )
    assert response.status_code == 302
    credential.refresh_from_db()
    assert credential.reveal_secret() == SECRET
    # The old verdict was about the old secret.
    assert (credential.health, credential.health_detail) == ("unknown", "")
    assert AuditEvent.objects.get(action="credential.updated").details == {"fields": ["secret"]}
    for page in (alice_client.get(url), alice_client.get(reverse("credential_list"))):
        body = page.content.decode()
        assert SECRET not in body and "old-key-1234" not in body


def test_edit_form_errors(alice_client: Client, team: Any, settings: Any) -> None:
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = []
    make_credential(team, name="Taken")
    credential = make_credential(team, name="Main", base_url="https://api.together.xyz")
    url = reverse("credential_edit", args=[credential.pk])
    base = {"name": "Main", "base_url": "https://api.together.xyz", "max_concurrency": "4"}
    for changes, field_error in [
        ({"name": "Taken"}, "already has a credential with this name"),
        ({"name": "Ma\x00in"}, "Null characters are not allowed"),
        ({"base_url": "http://169.254.169.254/"}, "DASHBOARD_ALLOWED_PRIVATE_HOSTS"),
        ({"max_concurrency": "0"}, "Between 1 and 2000"),
        ({"max_concurrency": "2001"}, "Between 1 and 2000"),
        ({"requests_per_minute": "0"}, "Between 1 and 1,000,000, or empty"),
        ({"tokens_per_minute": "1000000001"}, "Between 1 and 1,000,000,000, or empty"),
        ({"new_secret": "   "}, "The new secret is empty"),
    ]:
        response = alice_client.post(url, {**base, **changes})
        assert response.status_code == 200 and field_error in response.content.decode(), changes
    credential.refresh_from_db()
    assert credential.name == "Main" and not AuditEvent.objects.exists()


def test_an_empty_base_url_means_the_providers_public_endpoint(
    alice_client: Client, team: Any
) -> None:
    credential = make_credential(team, name="Main", base_url="https://gateway.example")
    alice_client.post(
        reverse("credential_edit", args=[credential.pk]),
        {"name": "Main", "base_url": "", "max_concurrency": "4", "new_secret": "key-for-it"},
    )
    credential.refresh_from_db()
    assert credential.base_url == "https://api.together.xyz"


def test_only_admins_edit_and_other_teams_see_nothing(
    bob_client: Client, team: Any, other_team: Any, charlie: User
) -> None:
    credential = make_credential(team, name="Main")
    url = reverse("credential_edit", args=[credential.pk])
    assert bob_client.get(url).status_code == 403
    assert bob_client.post(url, {"name": "Mine", "max_concurrency": "4"}).status_code == 403
    assert "Edit" not in row(bob_client, credential)
    outsider = Client()
    outsider.force_login(charlie)
    assert outsider.get(url).status_code == 404
    assert outsider.post(reverse("credential_test", args=[credential.pk])).status_code == 404
    assert Credential.objects.get(pk=credential.pk).name == "Main"


# --- test connection ------------------------------------------------------------------------------


def test_a_free_check_runs_at_once_and_says_how_long_it_took(
    bob_client: Client, team: Any, sims: Any, bob: User
) -> None:
    sim = sims.get("bytez")
    credential = make_credential(team, "bytez", base_url=sim.base_url)
    response = bob_client.post(reverse("credential_test", args=[credential.pk]))
    message = flash(response)
    assert response.status_code == 302 and message.startswith("Connection OK")
    assert re.search(r"\(\d+ ms\)", message)
    assert sim.count("GET /model/list") == 1
    credential.refresh_from_db()
    assert credential.health == "ok" and credential.health_checked_at is not None
    assert "status-completed" in row(bob_client, credential)
    event = AuditEvent.objects.get(action="credential.tested")
    assert event.actor == bob and event.details == {"ok": True, "billed": False}


def test_a_billed_check_asks_first_and_uses_the_model_named(
    bob_client: Client, team: Any, sims: Any
) -> None:
    sim = sims.get("together")
    credential = make_credential(team, "together", base_url=sim.base_url)
    page = row(bob_client, credential)
    assert "may be billed" in page and 'name="confirm_billed"' in page and 'name="model"' in page
    response = bob_client.post(reverse("credential_test", args=[credential.pk]))
    assert "may be billed" in flash(response) and sum(sim.requests.values()) == 0
    response = bob_client.post(
        reverse("credential_test", args=[credential.pk]),
        {"confirm_billed": "on", "model": "my-org/my-model"},
    )
    assert "Connection OK" in flash(response) and "may have been billed" in flash(response)
    assert sim.count("POST /inference") == 1


def test_a_refused_key_turns_health_to_authentication_failed(
    bob_client: Client, team: Any, sims: Any
) -> None:
    sim = sims.get("openai")
    credential = make_credential(team, "openai", base_url=sim.base_url, secret="wrong-key-123")
    response = bob_client.post(reverse("credential_test", args=[credential.pk]))
    assert flash(response).startswith("Connection failed")
    body = row(bob_client, credential)
    assert "Authentication failed" in body and "refused the credential" in body
    assert "status-completed" not in body  # never a green OK beside it


def test_viewers_cannot_test(client: Client, team: Any, sims: Any) -> None:
    viewer = User.objects.create_user("vera", password="pw-for-tests-123")
    Membership.objects.create(team=team, user=viewer, role=Role.VIEWER)
    client.force_login(viewer)
    credential = make_credential(team, "bytez", base_url=sims.get("bytez").base_url)
    assert client.post(reverse("credential_test", args=[credential.pk])).status_code == 403
    assert "Test connection" not in row(client, credential)


def test_the_service_for_the_api(team: Any, sims: Any, alice: User) -> None:
    sim = sims.get("together")
    credential = make_credential(team, "together", base_url=sim.base_url)
    with pytest.raises(BilledCheckNotConfirmed):
        credential_test(credential, actor=alice, via="api")
    result = credential_test(credential, actor=alice, confirm_billed=True, via="api")
    assert set(result) == {"ok", "detail", "latency_ms", "billed", "auth_failed", "checked_at"}
    assert result["ok"] is True and result["billed"] is True and result["auth_failed"] is False
    event = AuditEvent.objects.get(action="credential.tested")
    assert event.details == {"ok": True, "billed": True, "via": "api"}


# --- health from the other calls ------------------------------------------------------------------


def test_a_401_from_the_catalog_turns_health_at_once(
    bob_client: Client, team: Any, sims: Any
) -> None:
    sim = sims.get("bytez")
    credential = make_credential(team, "bytez", base_url=sim.base_url)
    credential_test(credential, actor=None)
    assert Credential.objects.get(pk=credential.pk).health == "ok"
    sim.add_fault(status=401, body={"error": "Invalid API key"}, path="/model/list")
    catalog_refresh(credential.pk)
    body = row(bob_client, credential)
    assert "Authentication failed" in body and "Invalid API key" in body


def test_a_paused_credential_says_when_the_next_call_may_go(bob_client: Client, team: Any) -> None:
    """A provider's Retry-After holds every call: the page says until when."""
    from datetime import timedelta

    from dashboard.core import clock

    credential = make_credential(team, requests_per_minute=600)
    assert "Paused" not in row(bob_client, credential)
    Credential.objects.filter(pk=credential.pk).update(
        paused_until=clock.now() + timedelta(seconds=30)
    )
    assert "Paused: the next call may go at" in row(bob_client, credential)
