"""Odd input on the pages: NUL characters never reach the database (PostgreSQL
refuses them in text and jsonb: a 500), and a catalog page's ``since`` is a
finite number or ignored."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dashboard.accounts.credentials import CredentialForm
from dashboard.models import Credential, Membership, ModelCatalogEntry
from tests.conftest import make_credential

pytestmark = pytest.mark.django_db

HTMX = {"HX-Request": "true"}


@pytest.fixture
def bytez(team: Any) -> Credential:
    credential = make_credential(team, "bytez")
    ModelCatalogEntry.objects.bulk_create(
        [
            ModelCatalogEntry(credential=credential, name=name, fetched_at=timezone.now())
            for name in ("openai-community/gpt2", "org/other")
        ]
    )
    return credential


def test_a_nul_in_the_catalog_search_is_ignored(
    client: Client, bob: Any, bytez: Credential
) -> None:
    client.force_login(bob)
    url = reverse("model_catalog", args=[bytez.pk])
    response = client.get(url, {"q": "gp\x00t2"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "openai-community/gpt2" in body and "org/other" not in body
    assert "\x00" not in body


@pytest.mark.parametrize("since", ["nan", "NaN", "inf", "-inf", "1e400", "x"])
def test_since_must_be_a_finite_number(
    client: Client, bob: Any, bytez: Credential, nudges: list, since: str
) -> None:
    """A `since` that is not a time never keeps the partial polling."""
    client.force_login(bob)
    response = client.get(reverse("model_catalog", args=[bytez.pk]), {"since": since}, headers=HTMX)
    assert response.status_code in (200, 286)
    assert "data-poll" not in response.content.decode(), since


def _credential_data(**changes: str) -> dict[str, str]:
    data = {
        "provider": "together",
        "name": "Main",
        "secret": "tok-123456",
        "base_url": "",
        "options": "",
        "max_concurrency": "4",
        "requests_per_minute": "",
    }
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Ma\x00in"),
        ("secret", "tok\x00"),
        ("base_url", "https://api.together.xyz/\x00"),
        ("options", '{"region": "eu\\u0000"}'),
        ("options", '{"re\\u0000gion": "eu"}'),
        ("options", '{"nested": {"list": ["\\u0000"]}}'),
    ],
)
def test_nul_in_a_credential_form_is_a_field_error(team: Any, field: str, value: str) -> None:
    form = CredentialForm(_credential_data(**{field: value}), team=team)
    assert not form.is_valid()
    assert field in form.errors, form.errors


def test_nul_in_the_credential_page_form_is_shown_not_stored(
    client: Client, alice: Any, team: Any
) -> None:
    client.force_login(alice)
    response = client.post(reverse("credential_list"), _credential_data(options='{"a": "\\u0000"}'))
    assert response.status_code == 200 and "NUL" in response.content.decode()
    assert not Credential.objects.exists()


def test_nul_in_the_member_form_is_a_field_error(client: Client, alice: Any, team: Any) -> None:
    client.force_login(alice)
    response = client.post(
        reverse("team_member_add"), {"username": "bo\x00b", "role": "member", "team": team.pk}
    )
    assert response.status_code == 400
    assert "Null characters are not allowed" in response.content.decode()
    assert Membership.objects.filter(team=team).count() == 2
    response = client.post(
        reverse("team_settings"), {"cost_per_gb_second": "1\x00", "team": team.pk}
    )
    assert response.status_code == 400
