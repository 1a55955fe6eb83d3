"""Scores through the API: scorers at submit (refusals name the scorer and
save nothing), scorers added to a finished job (re-scored, no provider
call), the items' scores and the ``score=`` filter, and the job answer's
pass rates (the same data the job.completed webhook carries)."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.evals.scores import job_rescore
from dashboard.jobs import worker
from dashboard.models import AuditEvent, ItemScore, Job
from tests.api.conftest import assert_error
from tests.conftest import job_row, make_credential

pytestmark = pytest.mark.django_db


def run(job_id: int) -> Job:
    while worker.advance_job(job_id) == "deferred":
        Job.objects.filter(pk=job_id).update(next_check_at=None)
    return Job.objects.get(pk=job_id)


def dataset(api: Any) -> int:
    rows = [{"q": "one", "want": "1"}, {"q": "two", "want": "2"}, {"q": "three", "want": "3"}]
    return api.post("datasets", {"name": "numbers", "rows": rows}).json()["id"]


def test_submit_with_scorers_and_read_them_back(alice_api: Any, team: Any, sims: Any) -> None:
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url)
    body = {
        "credential": credential.pk,
        "model": "m",
        "dataset": dataset(alice_api),
        "prompt_template": "Say {q}",
        "scorers": [
            {"type": "contains", "expected_column": "q", "name": "echo"},
            {"type": "equals", "value": "nope", "name": "exact"},
        ],
    }
    created = alice_api.post("jobs", body)
    assert created.status_code == 201, created.content
    job = run(created.json()["id"])
    answer = alice_api.get(f"jobs/{job.pk}").json()
    assert [s["name"] for s in answer["scorers"]] == ["echo", "exact"]
    echo, exact = answer["scores"]
    assert (echo["passed"], echo["failed"], echo["pass_rate"]) == (3, 0, 1.0)
    assert (exact["passed"], exact["failed"]) == (0, 3)
    assert exact["ci95"][0] == 0.0 and 0.5 < exact["ci95"][1] < 0.6

    items = alice_api.get(f"jobs/{job.pk}/items").json()["items"]
    assert items[0]["scores"] == [
        {"scorer": "echo", "pass": True, "score": 1.0, "reason": ""},
        {"scorer": "exact", "pass": False, "score": 0.0, "reason": 'expected "nope"'},
    ]
    failing = alice_api.get(f"jobs/{job.pk}/items?score=exact:fail").json()["items"]
    assert [i["index"] for i in failing] == [0, 1, 2]
    assert alice_api.get(f"jobs/{job.pk}/items?score=exact:pass").json()["items"] == []
    assert_error(alice_api.get(f"jobs/{job.pk}/items?score=exact:maybe"), 400, "score")
    body = assert_error(alice_api.get(f"jobs/{job.pk}/items?score=nobody:fail"), 400, "score")
    assert "nobody" in body["fields"]["score"][0]


@pytest.mark.parametrize(
    ("scorer", "expected"),
    [
        (
            {"type": "equalz", "name": "exact", "value": "x"},
            'scorers[0] "exact": unknown type "equalz"',
        ),
        (
            {"type": "regex", "name": "r", "value": "(oops"},
            'scorers[0] "r": the regular expression',
        ),
        (
            {"type": "equals", "expected_column": "missing"},
            'scorers[0] "equals": the dataset has no column "missing"',
        ),
    ],
)
def test_refused_scorers_name_the_scorer_and_save_nothing(
    alice_api: Any, team: Any, scorer: dict[str, Any], expected: str
) -> None:
    credential = make_credential(team)
    body = {
        "credential": credential.pk,
        "model": "m",
        "dataset": dataset(alice_api),
        "prompt_template": "Say {q}",
        "scorers": [scorer],
    }
    answer = assert_error(alice_api.post("jobs", body), 400, "scorers")
    assert answer["fields"]["scorers"][0].startswith(expected), answer
    assert not Job.objects.exists()


def test_duplicate_names_and_another_teams_judge_are_refused(
    alice_api: Any, team: Any, other_team: Any
) -> None:
    credential, theirs = make_credential(team), make_credential(other_team)
    body = {"credential": credential.pk, "model": "m", "prompts": ["a"]}
    duplicate = [{"type": "contains", "value": "a"}, {"type": "contains", "value": "b"}]
    answer = assert_error(alice_api.post("jobs", {**body, "scorers": duplicate}), 400, "scorers")
    assert answer["fields"]["scorers"][0].startswith('scorers[1] "contains": another scorer')
    judge = {"type": "judge", "credential": theirs.pk, "model": "m", "rubric": "ok?"}
    answer = assert_error(alice_api.post("jobs", {**body, "scorers": [judge]}), 400, "scorers")
    assert f"no credential {theirs.pk} in the job's team" in answer["fields"]["scorers"][0]
    assert not Job.objects.exists()


def test_scorers_added_to_a_finished_job_score_it_without_calling_the_model(
    alice_api: Any,
    bob_api: Any,
    viewer_api: Any,
    team: Any,
    sims: Any,
    nudges: list[Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    sim = sims.get("together")
    credential = make_credential(team, base_url=sim.base_url)
    created = alice_api.post(
        "jobs", {"credential": credential.pk, "model": "m", "prompts": ["a", "b"]}
    )
    job = run(created.json()["id"])
    calls = sum(sim.requests.values())
    scorer = {"type": "regex", "value": r"answer [0-9a-f]{8} to: a$", "name": "is_a"}
    assert_error(viewer_api.post(f"jobs/{job.pk}/scorers", {"scorers": [scorer]}), 403)
    with django_capture_on_commit_callbacks(execute=True):
        answer = bob_api.post(f"jobs/{job.pk}/scorers", {"scorers": [scorer]})
    assert answer.status_code == 200, answer.content
    assert answer.json()["rescoring"] is True
    assert ("dashboard.tasks.job_rescore", job.pk, ["is_a"]) in nudges
    job_rescore(job.pk, ["is_a"])  # what the task runs
    [row] = alice_api.get(f"jobs/{job.pk}").json()["scores"]
    assert (row["name"], row["passed"], row["failed"]) == ("is_a", 1, 1)
    assert sum(sim.requests.values()) == calls  # the simulator saw no call
    assert AuditEvent.objects.filter(action="job.scorers_added").count() == 1
    # The name is taken now; nothing else is saved.
    again = assert_error(
        bob_api.post(f"jobs/{job.pk}/scorers", {"scorers": [scorer]}), 400, "scorers"
    )
    assert "another scorer" in again["fields"]["scorers"][0]
    assert len(Job.objects.get(pk=job.pk).scorers) == 1
    assert_error(bob_api.post(f"jobs/{job.pk}/scorers", {"scorers": []}), 400, "scorers")


def test_scorers_on_a_running_job_are_a_409(alice_api: Any, team: Any) -> None:
    job = job_row(team, prompts=["a"], status="running")
    answer = assert_error(
        alice_api.post(f"jobs/{job.pk}/scorers", {"scorers": [{"type": "length", "max": 3}]}), 409
    )
    assert "running" in answer["error"]
    assert Job.objects.get(pk=job.pk).scorers == [] and not ItemScore.objects.exists()
