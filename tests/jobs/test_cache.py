"""cache: true: an item whose request the team already has answered takes
that output without a call; a changed parameter or another team calls."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse

from dashboard.jobs import worker
from dashboard.jobs.serialize import job_json
from dashboard.models import Job, Price
from tests.conftest import make_credential, make_job

pytestmark = pytest.mark.django_db

PROMPTS = ["alpha", "beta", "gamma"]


def run(job: Job) -> Job:
    while worker.advance_job(job.pk) == "deferred":
        Job.objects.filter(pk=job.pk).update(next_check_at=None)
    job.refresh_from_db()
    return job


def test_a_second_identical_job_makes_no_call(
    team: Any, sims: Any, client: Any, alice: Any
) -> None:
    sim = sims.get("together")
    Price.objects.create(
        team=team,
        provider="together",
        model="test-model",
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("2"),
    )
    credential = make_credential(team, base_url=sim.base_url)
    first = run(make_job(credential, PROMPTS, max_tokens=20))
    assert sim.count("POST /inference") == 3
    second = make_job(credential, PROMPTS, max_tokens=20)
    Job.objects.filter(pk=second.pk).update(cache=True)
    second = run(second)
    assert second.status == "completed" and second.items_completed == 3
    assert sim.count("POST /inference") == 3  # not one more call
    sources = {i.index: i.pk for i in first.items.all()}
    for item in second.items.all():
        assert item.cached_from_id == sources[item.index]
        assert (item.tokens_in, item.tokens_out) == (0, 0)
        assert item.output == first.items.get(index=item.index).output
    answer = job_json(second)
    assert answer["cache"]["hits"] == 3 and answer["cache"]["saved"] > 0
    assert answer["outputs"] == job_json(first)["outputs"]
    assert not second.cost_so_far  # no cost for the copies
    client.force_login(alice)
    page = client.get(reverse("job_detail", args=[second.pk])).content.decode()
    assert "3 rows from the cache" in page and "saved" in page


def test_a_changed_parameter_or_prompt_calls(team: Any, sims: Any) -> None:
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url)
    run(make_job(credential, PROMPTS, max_tokens=20))
    changed = make_job(credential, [*PROMPTS[:2], "delta"], max_tokens=21)
    Job.objects.filter(pk=changed.pk).update(cache=True)
    changed = run(changed)
    assert sim.count("POST /inference") == 6  # max_tokens differs: every row calls
    same_params = make_job(credential, [*PROMPTS[:2], "delta"], max_tokens=20)
    Job.objects.filter(pk=same_params.pk).update(cache=True)
    same_params = run(same_params)
    assert sim.count("POST /inference") == 7  # only the new prompt
    assert job_json(same_params)["cache"] == {"hits": 2, "saved": None}  # no price set


def test_another_teams_items_are_never_reused(team: Any, other_team: Any, sims: Any) -> None:
    sim = sims.get("together")
    run(make_job(make_credential(team, base_url=sim.base_url), PROMPTS))
    theirs = make_job(make_credential(other_team, base_url=sim.base_url), PROMPTS)
    Job.objects.filter(pk=theirs.pk).update(cache=True)
    theirs = run(theirs)
    assert sim.count("POST /inference") == 6
    assert not theirs.items.filter(cached_from__isnull=False).exists()


def test_without_cache_every_row_calls(team: Any, sims: Any) -> None:
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url)
    run(make_job(credential, PROMPTS))
    run(make_job(credential, PROMPTS))
    assert sim.count("POST /inference") == 6


def test_cache_through_the_api(team: Any, sims: Any, client: Any, alice: Any) -> None:
    from tests.api.conftest import api_for

    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url)
    run(make_job(credential, PROMPTS))
    api = api_for(client, alice)
    body = {"credential": credential.pk, "model": "test-model", "prompts": PROMPTS, "cache": True}
    created = api.post("jobs", body)
    assert created.status_code == 201, created.content
    job = run(Job.objects.get(pk=created.json()["id"]))
    assert job.cache and sim.count("POST /inference") == 3
    answer = api.get(f"jobs/{job.pk}").json()
    assert answer["cache"]["hits"] == 3
    items = api.get(f"jobs/{job.pk}/items").json()["items"]
    assert all(item["cached_from"] for item in items)
    bad = api.post("jobs", {**body, "cache": "maybe"})
    assert bad.status_code == 400 and "cache" in bad.json()["fields"]


def test_the_new_job_form_has_the_cache_checkbox(team: Any, client: Any, alice: Any) -> None:
    make_credential(team)
    client.force_login(alice)
    page = client.get(reverse("job_new")).content.decode()
    assert 'name="cache"' in page and "Use the cache" in page
