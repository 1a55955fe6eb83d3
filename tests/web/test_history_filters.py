"""The history as a person searches it: the status in view, part of a model
name, and how many jobs match."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from tests.conftest import make_credential, make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_client(client: Any, bob: Any, team: Any) -> Any:
    client.force_login(bob)
    return client


def test_history_model_filter_takes_part_of_a_name_and_counts_the_result(
    bob_client: Any, team: Any
) -> None:
    credential = make_credential(team)
    make_job(credential, model="meta-llama/Llama-2-7b-chat-hf")
    make_job(credential, model="mistral-7b")
    page = bob_client.get(reverse("job_list"), {"model": "llama"}).content.decode()
    assert "meta-llama/Llama-2-7b-chat-hf" in page and "mistral-7b" not in page
    assert "1 job matches these filters." in page
    page = bob_client.get(reverse("job_list")).content.decode()
    assert 'id="job-count">2 jobs.' in page
    # Status and model are in view, not folded under "More filters".
    start = page.rindex("<details", 0, page.index("More filters"))  # not the menu's
    folded = page[start : page.index("</details>", start)]
    assert 'name="status"' not in folded and 'name="model"' not in folded
    assert 'name="provider"' in folded


def test_history_count_is_bounded(bob_client: Any, team: Any, monkeypatch: Any) -> None:
    credential = make_credential(team)
    for _ in range(3):
        make_job(credential)
    monkeypatch.setattr("dashboard.web.history.COUNT_LIMIT", 2)
    page = bob_client.get(reverse("job_list")).content.decode()
    assert 'id="job-count">More than 2 jobs.' in page
