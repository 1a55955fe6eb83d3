"""The diff page: counts, per-scorer regressions, the regressions filter,
the outputs side by side escaped (long ones clipped behind a toggle), bad
input as a form error, another team's job a 404; and the job page's link."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.models import Item, ItemScore
from tests.conftest import job_row

pytestmark = pytest.mark.django_db

EXACT = {"type": "equals", "name": "exact", "value": "x"}


def scored(job: Any, passed: list[bool]) -> None:
    for item in Item.objects.filter(job=job):
        ItemScore.objects.create(
            item=item, job=job, index=item.index, scorer="exact", passed=passed[item.index]
        )


def test_the_page_shows_counts_regressions_and_escaped_outputs(
    client: Any, alice: Any, team: Any
) -> None:
    long = "y" * 1000
    before = job_row(team, prompts=["a", "b", "c"], outputs=["1", "2", long], scorers=[EXACT])
    after = job_row(
        team,
        prompts=["a", "b", "c"],
        outputs=["1", "<script>alert(1)</script>", long],
        scorers=[EXACT],
    )
    scored(before, [True, True, False])
    scored(after, [True, False, False])
    client.force_login(alice)
    page = client.get(f"/jobs/{after.pk}/diff?against={before.pk}")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "2 same" in html and "1 changed" in html
    assert "exact: regression" in html
    assert "<details><summary>Show all (1000 characters)</summary>" in html

    only = client.get(f"/jobs/{after.pk}/diff?against={before.pk}&only=regressions")
    rows = only.content.decode().split('id="diff-rows"')[1]
    assert "&lt;script&gt;" in rows and long not in rows


def test_bad_input_is_a_form_error_and_another_teams_job_a_404(
    client: Any, alice: Any, team: Any, other_team: Any
) -> None:
    ours, theirs = job_row(team, outputs=["1"]), job_row(other_team, outputs=["2"])
    client.force_login(alice)
    bad = client.get(f"/jobs/{ours.pk}/diff?against=abc")
    assert bad.status_code == 400 and "Give a job&#x27;s id" in bad.content.decode()
    assert client.get(f"/jobs/{ours.pk}/diff?against={ours.pk}").status_code == 400
    assert client.get(f"/jobs/{ours.pk}/diff?against={theirs.pk}&only=x").status_code == 400
    assert client.get(f"/jobs/{ours.pk}/diff?against={theirs.pk}").status_code == 404
    assert client.get(f"/jobs/{theirs.pk}/diff?against={ours.pk}").status_code == 404
    assert client.get(f"/jobs/{ours.pk}/diff").status_code == 200  # just the form


def test_the_job_page_links_to_the_diff(client: Any, alice: Any, team: Any) -> None:
    first = job_row(team, outputs=["1"])
    retry = job_row(team, outputs=["2"], retry_of=first)
    client.force_login(alice)
    html = client.get(f"/jobs/{retry.pk}/").content.decode()
    assert "Compare with another run…" in html
    assert f'href="/jobs/{retry.pk}/diff?against={first.pk}"' in html
