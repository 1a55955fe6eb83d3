"""GET /api/v1/jobs/{id}/items, the job's counts, and retries of failed or
invalid rows, as DESIGN's API rows for jobs and items say."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.models import Job
from tests.api.conftest import assert_error
from tests.conftest import finish_items, make_credential, make_job

pytestmark = pytest.mark.django_db


def _finished(team: Any, prompts: list[str], outputs: list[Any], errors: dict[int, str]) -> Job:
    job = make_job(make_credential(team, "lamini"), prompts, output_schema={"n": "int"})
    finish_items(job, outputs, errors)
    Job.objects.filter(pk=job.pk).update(status="completed")
    job.refresh_from_db()
    return job


def test_items_page_in_index_order_with_next(alice_api: Any, team: Any) -> None:
    job = make_job(make_credential(team), [f"p{i}" for i in range(5)])
    finish_items(job, ["a", None, "c"], {1: "boom"})
    first = alice_api.get(f"jobs/{job.pk}/items?limit=2").json()
    assert [item["index"] for item in first["items"]] == [0, 1]
    assert first["items"][1] == {
        "index": 1,
        "source_index": None,
        "input": "p1",
        "fields": None,
        "status": "failed",
        "output": None,
        "error": "boom",
        "attempts": 0,
        "cached_from": None,
        "latency_ms": None,
        "tokens_in": None,
        "tokens_out": None,
        "tokens_estimated": False,
        "valid": None,
        "validation_error": "",
        "from_job": None,
        "scores": [],
    }
    seen = [item["index"] for item in first["items"]]
    url = first["next"]
    while url:
        page = alice_api.get(url).json()
        seen += [item["index"] for item in page["items"]]
        url = page["next"]
    assert seen == [0, 1, 2, 3, 4]
    job_answer = alice_api.get(f"jobs/{job.pk}").json()
    assert job_answer["counts"] == {
        "pending": 2,
        "running": 0,
        "completed": 2,
        "failed": 1,
        "cancelled": 0,
        "valid": 0,
        "invalid": 0,
    }
    assert job_answer["outputs"] == ["a", None, "c", None, None]
    assert job_answer["cost"] == {"estimated": None, "actual": None}
    assert job_answer["dataset"] is None and job_answer["comparison"] is None


def test_items_filter_by_status_and_validity(alice_api: Any, team: Any) -> None:
    job = _finished(team, ["a", "b", "c", "d"], [{"n": 1}, {"n": "x"}, {"n": 3}], {3: "boom"})
    failed = alice_api.get(f"jobs/{job.pk}/items?status=failed").json()["items"]
    assert [item["index"] for item in failed] == [3]
    invalid = alice_api.get(f"jobs/{job.pk}/items?valid=false").json()["items"]
    assert [(i["index"], i["valid"]) for i in invalid] == [(1, False)]
    assert "is not of type 'integer'" in invalid[0]["validation_error"]
    valid = alice_api.get(f"jobs/{job.pk}/items?valid=true").json()["items"]
    assert [item["index"] for item in valid] == [0, 2]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=²", "limit"),
        ("status=sleeping", "status"),
        ("valid=maybe", "valid"),
        ("after=x", "after"),
        ("sort=index", "sort"),
        ("status=%00", "status"),
    ],
)
def test_bad_item_queries_are_400s(alice_api: Any, team: Any, query: str, field: str) -> None:
    job = make_job(make_credential(team), ["a"])
    assert_error(alice_api.get(f"jobs/{job.pk}/items?{query}"), 400, field)


def test_another_teams_items_are_a_404(charlie_api: Any, team: Any) -> None:
    job = make_job(make_credential(team), ["a"])
    assert_error(charlie_api.get(f"jobs/{job.pk}/items"), 404)


def test_retry_invalid_with_repair_then_merged(alice_api: Any, team: Any) -> None:
    job = _finished(team, ["a", "b", "c"], [{"n": 1}, {"n": "x"}], {2: "boom"})
    response = alice_api.post(f"jobs/{job.pk}/retry", {"invalid_only": True, "repair": True})
    assert response.status_code == 201, response.content
    repaired = response.json()
    assert repaired["retry_of"] == job.pk and repaired["progress"]["total"] == 1
    (item,) = alice_api.get(f"jobs/{repaired['id']}/items").json()["items"]
    assert item["source_index"] == 1 and "previous answer did not match" in item["input"]
    finish_items(Job.objects.get(pk=repaired["id"]), [{"n": 2}])
    failed = alice_api.post(f"jobs/{job.pk}/retry", {"failed_only": True}).json()
    finish_items(Job.objects.get(pk=failed["id"]), [{"n": 3}])
    merged = alice_api.get(f"jobs/{job.pk}/items?merged=true").json()["items"]
    assert [i["output"] for i in merged] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [i["from_job"] for i in merged] == [None, repaired["id"], failed["id"]]


def test_retry_body_mistakes(alice_api: Any, team: Any) -> None:
    job = _finished(team, ["a", "b"], [{"n": 1}], {1: "boom"})
    assert_error(alice_api.post(f"jobs/{job.pk}/retry", {"repair": True}), 400, "repair")
    assert_error(
        alice_api.post(f"jobs/{job.pk}/retry", {"failed_only": True, "invalid_only": True}),
        400,
        "invalid_only",
    )
    assert_error(alice_api.post(f"jobs/{job.pk}/retry", {"invalid_only": "yes"}), 400)
    error = assert_error(alice_api.post(f"jobs/{job.pk}/retry", {"invalid_only": True}), 409)
    assert "No row of this job is invalid" in error["error"]


def test_credential_connection_test(alice_api: Any, team: Any, sims: Any) -> None:
    from tests.conftest import make_credential as credential_for

    bytez = credential_for(team, "bytez", base_url=sims.get("bytez").base_url)
    answer = alice_api.post(f"credentials/{bytez.pk}/test").json()
    assert answer["ok"] is True and answer["billed"] is False and answer["auth_failed"] is False
    bad = credential_for(team, "bytez", base_url=sims.get("bytez").base_url, secret="nope")
    answer = alice_api.post(f"credentials/{bad.pk}/test").json()
    assert answer["ok"] is False and answer["auth_failed"] is True
    bad.refresh_from_db()
    assert bad.health == "auth_failed"
    together = credential_for(team, "together", base_url=sims.get("together").base_url)
    assert_error(alice_api.post(f"credentials/{together.pk}/test"), 400, "confirm_billed")
    answer = alice_api.post(f"credentials/{together.pk}/test", {"confirm_billed": True}).json()
    assert answer["ok"] is True and answer["billed"] is True


def test_an_oversized_body_is_a_413(alice_api: Any, team: Any, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    credential = make_credential(team)
    body = {"credential": credential.pk, "model": "m", "prompts": ["x" * 100] * 200}
    error = assert_error(alice_api.post("jobs", body), 413)
    assert "too large" in error["error"]
    assert not Job.objects.exists()
