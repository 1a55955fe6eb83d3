"""GET /api/v1/jobs/{id}/diff?against=ID: the answer's shape and paging,
its 400s on bad input, and another team's job (either side) as a 404."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.models import Item, ItemScore
from tests.api.conftest import assert_error
from tests.conftest import job_row

pytestmark = pytest.mark.django_db

EXACT = {"type": "equals", "name": "exact", "value": "x"}


def test_the_diff_answer_and_its_pages(alice_api: Any, team: Any) -> None:
    before = job_row(team, prompts=["a", "b", "c"], outputs=["1", "2", "3"], scorers=[EXACT])
    after = job_row(
        team, prompts=["a", "b", "c"], outputs=["1", "<b>two</b>", "3"], scorers=[EXACT]
    )
    for job, passed in ((before, [True, True, False]), (after, [True, False, True])):
        for item in Item.objects.filter(job=job):
            ItemScore.objects.create(
                item=item, job=job, index=item.index, scorer="exact", passed=passed[item.index]
            )
    answer = alice_api.get(f"jobs/{after.pk}/diff?against={before.pk}&limit=2")
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert body["rows"] == {"same": 2, "changed": 1, "only_here": 0, "only_there": 0}
    assert body["scorers"] == [{"name": "exact", "regressions": 1, "improvements": 1}]
    assert [i["index"] for i in body["items"]] == [0, 1]
    row = body["items"][1]
    assert (row["output"], row["against_output"], row["changed"]) == ("<b>two</b>", "2", True)
    assert row["scores"][0]["pass"] is False and row["against_scores"][0]["pass"] is True
    rest = alice_api.get(body["next"]).json()
    assert [i["index"] for i in rest["items"]] == [2] and rest["next"] is None

    only = alice_api.get(f"jobs/{after.pk}/diff?against={before.pk}&only=regressions").json()
    assert [i["index"] for i in only["items"]] == [1]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "against"),
        ("against=abc", "against"),
        ("against=0", "against"),
        ("against=SELF", "against"),
        ("against=OTHER&only=everything", "only"),
        ("against=OTHER&limit=0", "limit"),
        ("against=OTHER&limit=201", "limit"),
        ("against=OTHER&after=x", "after"),
        ("against=OTHER&color=red", "color"),
    ],
)
def test_bad_input_is_a_400(alice_api: Any, team: Any, query: str, field: str) -> None:
    job, other = job_row(team, outputs=["1"]), job_row(team, outputs=["2"])
    query = query.replace("SELF", str(job.pk)).replace("OTHER", str(other.pk))
    body = assert_error(alice_api.get(f"jobs/{job.pk}/diff?{query}"), 400)
    assert field in body["fields"] or field in body["error"], body


def test_another_teams_job_is_a_404_on_either_side(
    alice_api: Any, team: Any, other_team: Any
) -> None:
    ours, theirs = job_row(team, outputs=["1"]), job_row(other_team, outputs=["2"])
    assert_error(alice_api.get(f"jobs/{ours.pk}/diff?against={theirs.pk}"), 404)
    assert_error(alice_api.get(f"jobs/{theirs.pk}/diff?against={ours.pk}"), 404)
    assert_error(alice_api.get(f"jobs/{ours.pk}/diff?against=999999"), 404)
