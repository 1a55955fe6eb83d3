"""The API token pages: create (the key shown once), list, revoke."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from dashboard.models import ApiToken, AuditEvent

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(r"ljd_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def alice_client(client: Any, alice: Any, team: Any) -> Any:
    client.force_login(alice)
    return client


def create_token(client: Any, name: str = "notebook") -> tuple[Any, str]:
    response = client.post(reverse("token_list"), {"name": name})
    assert response.status_code == 200
    keys = set(KEY_RE.findall(response.content.decode()))
    assert len(keys) == 1, keys
    return response, keys.pop()


def api_status(key: str) -> int:
    return Client().get("/api/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code


def test_pages_need_a_login(client: Any, alice: Any) -> None:
    response = client.get(reverse("token_list"))
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    token, _ = ApiToken.issue(alice)
    response = client.post(reverse("token_revoke", args=[token.pk]))
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is None


def test_create_shows_the_key_once(alice_client: Any, alice: Any) -> None:
    response, key = create_token(alice_client, "eval notebook")
    page = response.content.decode()
    assert "shown only this once" in page and "Copy it now" in page
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get()
    assert token.user == alice and token.name == "eval notebook"
    assert token.key_hash == ApiToken.hash(key) and token.prefix == key[:10]
    assert api_status(key) == 200

    page = alice_client.get(reverse("token_list")).content.decode()
    assert key not in page and not KEY_RE.search(page)
    assert "eval notebook" in page and f"{token.prefix}…" in page
    assert AuditEvent.objects.filter(action="token.created", actor=alice).exists()


def test_list_shows_dates_and_only_my_tokens(alice_client: Any, alice: Any, bob: Any) -> None:
    ApiToken.issue(alice, "mine")
    ApiToken.issue(bob, "bobs")
    page = alice_client.get(reverse("token_list")).content.decode()
    assert "mine" in page and "bobs" not in page
    assert "never" in page  # not used yet


def test_empty_name_is_refused(alice_client: Any) -> None:
    response = alice_client.post(reverse("token_list"), {"name": "  "})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not ApiToken.objects.exists()


def test_revoke_then_the_api_answers_401(alice_client: Any, alice: Any) -> None:
    _, key = create_token(alice_client)
    token = ApiToken.objects.get()
    response = alice_client.post(reverse("token_revoke", args=[token.pk]), follow=True)
    page = response.content.decode()
    assert "revoked" in page
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert api_status(key) == 401
    assert reverse("token_revoke", args=[token.pk]) not in page  # no second revoke button
    again = alice_client.post(reverse("token_revoke", args=[token.pk]), follow=True)
    assert "already revoked" in again.content.decode()
    assert AuditEvent.objects.filter(action="token.revoked").count() == 1


def test_another_users_token_is_404(client: Any, alice: Any, bob: Any, team: Any) -> None:
    token, key = ApiToken.issue(alice)
    client.force_login(bob)
    assert client.post(reverse("token_revoke", args=[token.pk])).status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None and api_status(key) == 200


def test_revoke_is_post_only_and_unknown_ids_are_404(alice_client: Any, alice: Any) -> None:
    token, _ = ApiToken.issue(alice)
    assert alice_client.get(reverse("token_revoke", args=[token.pk])).status_code == 405
    assert alice_client.post("/account/tokens/99999999/revoke").status_code == 404
    assert alice_client.post("/account/tokens/123456789012345678901234/revoke").status_code == 404


def test_forms_need_the_csrf_token(alice: Any, team: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(reverse("token_list"), {"name": "x"}).status_code == 403
    token, _ = ApiToken.issue(alice)
    assert client.post(reverse("token_revoke", args=[token.pk])).status_code == 403
    token.refresh_from_db()
    assert token.revoked_at is None and ApiToken.objects.count() == 1
    page = client.get(reverse("token_list")).content.decode()
    assert page.count('name="csrfmiddlewaretoken"') >= 3  # log out, create, revoke


def test_page_escapes_the_token_name(alice_client: Any) -> None:
    alice_client.post(reverse("token_list"), {"name": "<b>x</b>"})
    page = alice_client.get(reverse("token_list")).content.decode()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
