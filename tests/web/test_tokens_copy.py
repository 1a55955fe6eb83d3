"""A new API token can be copied with a button (app.js; the text stays selectable)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_client(client: Any, bob: Any, team: Any) -> Any:
    client.force_login(bob)
    return client


def test_a_new_token_has_a_copy_button(bob_client: Any) -> None:
    page = bob_client.post(reverse("token_list"), {"name": "notebook"}).content.decode()
    assert 'data-copy="new-token-key"' in page and 'id="new-token-key"' in page
