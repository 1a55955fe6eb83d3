"""GET /api/v1/comparisons: the caller's teams' comparisons, newest first,
paged with a keyset `next` like every list (it answered 405)."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.models import Job
from tests.api.conftest import Api, assert_error
from tests.conftest import make_credential

pytestmark = pytest.mark.django_db


def start(api: Api, credential: Any, name: str) -> dict[str, Any]:
    body = {
        "name": name,
        "prompts": ["p"],
        "targets": [
            {"credential": credential.pk, "model": "a"},
            {"credential": credential.pk, "model": "b"},
        ],
    }
    response = api.post("comparisons", body)
    assert response.status_code == 201, response.content
    return response.json()


def test_the_list_is_newest_first_and_paged(alice_api: Api, team: Any, nudges: Any) -> None:
    credential = make_credential(team)
    made = [start(alice_api, credential, f"c{i}") for i in range(3)]
    first = alice_api.get("comparisons?limit=2")
    assert first.status_code == 200, first.content
    page = first.json()
    assert [c["name"] for c in page["results"]] == ["c2", "c1"]
    newest = page["results"][0]
    assert newest["id"] == made[2]["id"] and newest["status"] == "pending"
    assert [t["job"] for t in newest["targets"]] == made[2]["jobs"]
    assert [t["model"] for t in newest["targets"]] == ["a", "b"]
    assert newest["targets"][0]["provider"] == "together"
    assert newest["targets"][0]["credential"] == credential.pk
    assert newest["created_at"].endswith("Z")
    assert page["next"] and "limit=2" in page["next"]
    second = alice_api.get(page["next"]).json()
    assert [c["name"] for c in second["results"]] == ["c0"] and second["next"] is None
    assert alice_api.get("comparisons").json()["next"] is None  # default limit 50


def test_a_comparison_shows_the_status_of_its_targets(
    alice_api: Api, team: Any, nudges: Any
) -> None:
    made = start(alice_api, make_credential(team), "c")
    Job.objects.filter(pk__in=made["jobs"]).update(status="completed")
    (listed,) = alice_api.get("comparisons").json()["results"]
    assert listed["status"] == "completed"
    assert {t["status"] for t in listed["targets"]} == {"completed"}


def test_another_teams_comparison_is_absent(
    alice_api: Api, charlie_api: Api, team: Any, other_team: Any, nudges: Any
) -> None:
    start(alice_api, make_credential(team), "ours")
    start(charlie_api, make_credential(other_team), "theirs")
    assert [c["name"] for c in alice_api.get("comparisons").json()["results"]] == ["ours"]
    assert [c["name"] for c in charlie_api.get("comparisons").json()["results"]] == ["theirs"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=x", "limit"),
        ("cursor=nonsense!", "cursor"),
        ("page=2", "page"),
    ],
)
def test_bad_paging_is_a_400(alice_api: Api, team: Any, query: str, field: str) -> None:
    assert_error(alice_api.get(f"comparisons?{query}"), 400, field)


def test_a_page_costs_the_same_queries_whatever_its_size(
    alice_api: Api, team: Any, nudges: Any, django_assert_max_num_queries: Any
) -> None:
    credential = make_credential(team)
    for i in range(6):
        start(alice_api, credential, f"c{i}")
    with django_assert_max_num_queries(8):
        response = alice_api.get("comparisons?limit=6")
    assert len(response.json()["results"]) == 6


def test_the_list_needs_a_token(alice_api: Api) -> None:
    assert_error(alice_api.get("comparisons", key=None), 401)
