"""DESIGN's API rows for datasets, jobs over a dataset, comparisons and
ratings: each answer's shape, and the malformed bodies."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.test import override_settings
from openpyxl import Workbook

from dashboard.models import Comparison, Dataset, Job, Price, Rating
from tests.api.conftest import BASE, assert_error
from tests.conftest import finish_items, make_credential

pytestmark = pytest.mark.django_db


def upload(api: Any, filename: str, data: bytes, **fields: Any) -> Any:
    handle = io.BytesIO(data)
    handle.name = filename
    return api.client.post(
        BASE + "datasets",
        {"file": handle, **fields},
        headers={"Authorization": f"Bearer {api.key}"},
    )


def test_upload_a_csv_file(alice_api: Any, team: Any) -> None:
    data = '\ufeffcity,note\nParis,"a, b"\nZürich,"two\nlines"\n'.encode()
    response = upload(alice_api, "cities.csv", data)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "cities" and body["columns"] == ["city", "note"] and body["rows"] == 2
    detail = alice_api.get(f"datasets/{body['id']}").json()
    assert detail["preview"] == [
        {"city": "Paris", "note": "a, b"},
        {"city": "Zürich", "note": "two\nlines"},
    ]
    listed = alice_api.get("datasets").json()
    assert [d["id"] for d in listed["results"]] == [body["id"]] and listed["next"] is None


def test_upload_an_xlsx_file_with_a_name(alice_api: Any, team: Any) -> None:
    book = Workbook()
    book.active.append(["q", "n"])
    book.active.append(["one", 1])
    handle = io.BytesIO()
    book.save(handle)
    response = upload(alice_api, "book.xlsx", handle.getvalue(), name="My sheet")
    assert response.status_code == 201, response.content
    assert response.json()["name"] == "My sheet" and response.json()["source"] == "xlsx"


def test_a_broken_jsonl_line_is_a_400_naming_it(alice_api: Any, team: Any) -> None:
    response = upload(alice_api, "d.jsonl", b'{"q": 1}\n{"q": \n')
    body = assert_error(response, 400, "file")
    assert body["error"].startswith("Line 2: not valid JSON")
    assert not Dataset.objects.exists()


def test_an_empty_file_and_a_file_over_the_limits(alice_api: Any, team: Any) -> None:
    assert "empty" in assert_error(upload(alice_api, "e.csv", b""), 400, "file")["error"]
    with override_settings(MAX_DATASET_BYTES=1000):
        body = assert_error(upload(alice_api, "big.csv", b"a\n" + b"x\n" * 5000), 413, "file")
        assert "1,000 bytes" in body["error"]
    with override_settings(MAX_DATASET_ROWS=3):
        body = assert_error(upload(alice_api, "rows.csv", b"a\n1\n2\n3\n4\n"), 413, "file")
        assert body["error"] == "Line 5: more than 3 rows; a dataset has at most 3 rows"
    assert not Dataset.objects.exists()


def test_json_rows(alice_api: Any, team: Any) -> None:
    response = alice_api.post("datasets", {"name": "api rows", "rows": [{"a": 1}, {"b": "x"}]})
    assert response.status_code == 201, response.content
    assert response.json()["columns"] == ["a", "b"] and response.json()["rows"] == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "rows": []}, "rows"),
        ({"name": "x", "rows": ["nope"]}, "rows"),
        ({"name": "x", "rows": [{"a{b}": 1}]}, "rows"),
        ({"name": "", "rows": [{"a": 1}]}, "name"),
        ({"rows": [{"a": 1}]}, "name"),
        ({"name": "x", "rows": [{"a": 1}], "extra": 1}, "extra"),
        ({"name": "x", "rows": [{"a": "b\u0000"}]}, "rows"),
        ({"name": "x", "rows": [{"a": 1}], "team": 999999}, "team"),
    ],
)
def test_malformed_dataset_bodies(
    alice_api: Any, team: Any, body: dict[str, Any], field: str
) -> None:
    assert_error(alice_api.post("datasets", body), 400, field)
    assert not Dataset.objects.exists()


def test_not_json_nor_multipart(alice_api: Any, team: Any) -> None:
    response = alice_api.client.post(
        BASE + "datasets",
        "a,b\n1,2\n",
        content_type="text/csv",
        headers={"Authorization": f"Bearer {alice_api.key}"},
    )
    assert "multipart/form-data" in assert_error(response, 400)["error"]
    assert_error(alice_api.post("datasets", raw="{not json"), 400)


def test_viewers_cannot_upload_and_others_see_404(
    viewer_api: Any, charlie_api: Any, alice_api: Any, team: Any
) -> None:
    assert_error(viewer_api.post("datasets", {"name": "x", "rows": [{"a": 1}]}), 403)
    created = alice_api.post("datasets", {"name": "x", "rows": [{"a": 1}]}).json()
    assert viewer_api.get(f"datasets/{created['id']}").status_code == 200
    assert_error(charlie_api.get(f"datasets/{created['id']}"), 404)
    assert charlie_api.get("datasets").json()["results"] == []


# --- jobs over a dataset ----------------------------------------------------------------------


def _dataset(api: Any) -> int:
    body = {"name": "people", "rows": [{"name": "Ada", "age": 36}, {"name": "Alan", "age": 41}]}
    return api.post("datasets", body).json()["id"]


def test_a_job_over_a_dataset(alice_api: Any, team: Any, nudges: Any) -> None:
    credential = make_credential(team)
    dataset = _dataset(alice_api)
    response = alice_api.post(
        "jobs",
        {
            "credential": credential.pk,
            "model": "m",
            "dataset": dataset,
            "prompt_template": "{name} is {age}.",
        },
    )
    assert response.status_code == 201, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert list(job.items.values_list("input", "input_fields")) == [
        ("Ada is 36.", {"name": "Ada", "age": 36}),
        ("Alan is 41.", {"name": "Alan", "age": 41}),
    ]
    answer = alice_api.get(f"jobs/{job.pk}").json()
    assert answer["dataset"] == dataset and answer["comparison"] is None


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"prompt_template": "{nmae}"}, "prompt_template", "{nmae} names no column"),
        ({"prompt_template": "{name"}, "prompt_template", "not closed"),
        ({"prompts": ["x"]}, "prompts", "not both"),
        ({"prompt_template": None}, "prompt_template", "prompt_template"),
        ({"dataset": None}, "dataset", "dataset"),
        ({"dataset": 999999}, "dataset", "No dataset with id 999999"),
    ],
)
def test_job_over_a_dataset_errors(
    alice_api: Any, team: Any, change: dict[str, Any], field: str, words: str
) -> None:
    credential = make_credential(team)
    body = {
        "credential": credential.pk,
        "model": "m",
        "dataset": _dataset(alice_api),
        "prompt_template": "{name}",
    }
    body = {k: v for k, v in {**body, **change}.items() if v is not None}
    error = assert_error(alice_api.post("jobs", body), 400, field)
    assert words in error["error"]
    assert not Job.objects.exists()


# --- comparisons ------------------------------------------------------------------------------


def test_create_read_and_rate_a_comparison(
    alice_api: Any, bob_api: Any, team: Any, nudges: Any
) -> None:
    together, lamini = make_credential(team, "together"), make_credential(team, "lamini")
    body = {
        "name": "people",
        "dataset": _dataset(alice_api),
        "prompt_template": "Who is {name}?",
        "targets": [
            {"credential": together.pk, "model": "t", "max_tokens": 20},
            {"credential": lamini.pk, "model": "l", "output_schema": {"age": "int"}},
        ],
    }
    created = alice_api.post("comparisons", body)
    assert created.status_code == 201, created.content
    pk, jobs = created.json()["id"], created.json()["jobs"]
    assert len(jobs) == 2 and set(
        Job.objects.filter(comparison_id=pk).values_list("pk", flat=True)
    ) == set(jobs)
    first, second = Job.objects.get(pk=jobs[0]), Job.objects.get(pk=jobs[1])
    finish_items(first, ["Ada!", None], {1: "boom"})
    finish_items(second, [{"age": 36}, {"age": 41}])

    answer = alice_api.get(f"comparisons/{pk}?limit=1").json()
    assert answer["name"] == "people" and answer["status"] == "pending"
    assert [t["job"] for t in answer["targets"]] == jobs
    assert answer["targets"][0]["provider"] == "together" and answer["targets"][0]["cost"] is None
    assert answer["targets"][1]["counts"]["valid"] == 2
    (row,) = answer["rows"]
    assert row["index"] == 0 and row["input"] == "Who is Ada?" and row["fields"]["name"] == "Ada"
    assert [c["output"] for c in row["cells"]] == ["Ada!", {"age": 36}]
    assert row["cells"][1]["valid"] is True
    second_page = alice_api.get(answer["next"]).json()
    assert [c["error"] for c in second_page["rows"][0]["cells"]] == ["boom", ""]
    assert second_page["next"] is None

    rated = bob_api.post(f"comparisons/{pk}/ratings", {"index": 0, "job": jobs[0], "score": -1})
    assert rated.status_code == 200, rated.content
    assert rated.json()["user"] == "bob" and rated.json()["score"] == -1
    bob_api.post(f"comparisons/{pk}/ratings", {"index": 0, "job": jobs[0], "score": 1})
    best = bob_api.post(f"comparisons/{pk}/ratings", {"index": 0, "best": jobs[1]})
    assert best.status_code == 200 and best.json()["best"] is True
    assert Rating.objects.get(job_id=jobs[0], user__username="bob").score == 1  # latest wins
    cells = alice_api.get(f"comparisons/{pk}").json()["rows"][0]["cells"]
    assert cells[0]["rating"]["up"] == 1 and cells[0]["rating"]["reviews"][0]["user"] == "bob"
    assert cells[1]["rating"]["best"] == 1
    targets = alice_api.get(f"comparisons/{pk}").json()["targets"]
    assert [t["wins"] for t in targets] == [0, 1]
    assert alice_api.get(f"jobs/{jobs[0]}").json()["comparison"] == pk


def _two_targets(team: Any) -> list[dict[str, Any]]:
    credential = make_credential(team)
    return [
        {"credential": credential.pk, "model": "a"},
        {"credential": credential.pk, "model": "b"},
    ]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"targets": "one"}, "targets"),
        ({"targets": [{"credential": 1, "model": "a"}]}, "targets"),
        ({"targets": [{"credential": 999999, "model": "a"}] * 2}, "targets"),
        ({"prompts": None}, "prompts"),
        ({"prompts": []}, "prompts"),
        ({"name": None}, "name"),
        ({"name": "  "}, "name"),
        ({"output_schema": {"x": "int"}}, "targets"),  # Together cannot give structured output
        ({"unknown": True}, "unknown"),
        ({"dataset": 999999, "prompt_template": "{a}", "prompts": None}, "dataset"),
    ],
)
def test_malformed_comparison_bodies(
    alice_api: Any, team: Any, change: dict[str, Any], field: str
) -> None:
    body = {"name": "c", "prompts": ["p"], "targets": _two_targets(team), **change}
    body = {k: v for k, v in body.items() if v is not None}
    assert_error(alice_api.post("comparisons", body), 400, field)
    assert not Comparison.objects.exists() and not Job.objects.exists()


def test_nine_targets_and_a_target_field_error(alice_api: Any, team: Any) -> None:
    targets = _two_targets(team)
    assert_error(
        alice_api.post("comparisons", {"name": "c", "prompts": ["p"], "targets": targets * 5}),
        400,
        "targets",
    )
    targets[1]["temperature"] = 99
    body = assert_error(
        alice_api.post("comparisons", {"name": "c", "prompts": ["p"], "targets": targets}),
        400,
        "targets",
    )
    assert "less than or equal to 5" in body["error"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"index": 0}, "__all__"),
        ({"index": 0, "score": 1}, "job"),
        ({"index": 0, "job": "JOB", "score": 2}, "score"),
        ({"index": 0, "job": "JOB", "score": 1, "best": "JOB"}, "__all__"),
        ({"index": -1, "best": "JOB"}, "index"),
        ({"index": 5, "best": "JOB"}, "index"),
        ({"index": 0, "best": 999999}, "best"),
        ({"index": "0", "best": "JOB"}, "index"),
        ({"index": 0, "best": "JOB", "note": "x"}, "note"),
    ],
)
def test_malformed_rating_bodies(
    alice_api: Any, team: Any, nudges: Any, body: dict[str, Any], field: str
) -> None:
    created = alice_api.post(
        "comparisons", {"name": "c", "prompts": ["p"], "targets": _two_targets(team)}
    )
    pk, jobs = created.json()["id"], created.json()["jobs"]
    body = {k: (jobs[0] if v == "JOB" else v) for k, v in body.items()}
    response = alice_api.post(f"comparisons/{pk}/ratings", body)
    if field == "__all__":
        assert_error(response, 400)
    else:
        assert_error(response, 400, field)
    assert not Rating.objects.exists()


def test_viewers_read_but_cannot_rate_and_others_get_404(
    alice_api: Any, viewer_api: Any, charlie_api: Any, team: Any, nudges: Any
) -> None:
    created = alice_api.post(
        "comparisons", {"name": "c", "prompts": ["p"], "targets": _two_targets(team)}
    )
    pk, jobs = created.json()["id"], created.json()["jobs"]
    assert viewer_api.get(f"comparisons/{pk}").status_code == 200
    assert_error(viewer_api.post(f"comparisons/{pk}/ratings", {"index": 0, "best": jobs[0]}), 403)
    assert_error(
        viewer_api.post(
            "comparisons", {"name": "c", "prompts": ["p"], "targets": _two_targets(team)}
        ),
        403,
    )
    assert_error(charlie_api.get(f"comparisons/{pk}"), 404)
    assert_error(charlie_api.post(f"comparisons/{pk}/ratings", {"index": 0, "best": jobs[0]}), 404)
    assert not Rating.objects.exists()


def test_a_dry_run_over_a_dataset_estimates_its_rows(alice_api: Any, team: Any) -> None:
    """The estimate is the same call for a dataset job as for pasted prompts:
    each rendered row counts, and nothing is saved."""
    credential = make_credential(team)
    Price.objects.create(
        team=team, provider="together", model="m", input_per_mtok=2, output_per_mtok=4
    )
    body = {
        "credential": credential.pk,
        "model": "m",
        "dataset": _dataset(alice_api),
        "prompt_template": "Who is {name}, aged {age}?",
        "max_tokens": 10,
        "dry_run": True,
    }
    response = alice_api.post("jobs", body)
    assert response.status_code == 200, response.content
    estimate = response.json()["estimate"]
    rendered = ["Who is Ada, aged 36?", "Who is Alan, aged 41?"]
    tokens_in = sum(-(-len(prompt) // 4) for prompt in rendered)
    assert estimate["items"] == 2 and estimate["tokens_out_max"] == 20
    assert estimate["tokens_in"] == tokens_in
    assert estimate["cost"] == pytest.approx((tokens_in * 2 + 20 * 4) / 1_000_000)
    assert not Job.objects.exists()


def test_a_priced_target_shows_its_cost(alice_api: Any, team: Any, nudges: Any) -> None:
    together = make_credential(team)
    Price.objects.create(
        team=team, provider="together", model="priced", input_per_mtok=1, output_per_mtok=1
    )
    body = {
        "name": "priced or not",
        "prompts": ["one", "two"],
        "targets": [
            {"credential": together.pk, "model": "priced"},
            {"credential": together.pk, "model": "free"},
        ],
    }
    pk, jobs = (lambda b: (b["id"], b["jobs"]))(alice_api.post("comparisons", body).json())
    for job_id in jobs:
        job = Job.objects.get(pk=job_id)
        finish_items(job, ["answer one", "answer two"])
        Job.objects.filter(pk=job_id).update(status="completed")
    targets = alice_api.get(f"comparisons/{pk}").json()["targets"]
    priced, free = targets
    assert priced["cost"] is not None and priced["cost"] > 0
    assert free["cost"] is None
