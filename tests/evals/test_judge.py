"""The judge end to end on simulators: a job on Together judged by a model
on the OpenAI-compatible simulator. Its calls are a judge job linked to the
judged job (cost, budget, the page), its answers the judged items' scores,
an off-schema answer asked again once, and a finished job judged later
without a call to the judged model."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.urls import reverse
from django.utils.module_loading import import_string

from dashboard.evals import judge as judge_module
from dashboard.evals.scorers import JUDGE_SCHEMA, ScorerError, normalize_scorers
from dashboard.evals.scores import scores_summary
from dashboard.evals.services import scorers_add
from dashboard.jobs import worker
from dashboard.jobs.serialize import job_json
from dashboard.jobs.services import job_create
from dashboard.models import Item, ItemScore, Job, Price
from providers import JobSpec
from providers.simulators import openai_compat as openai_sim
from tests.api.conftest import api_for
from tests.conftest import make_credential

pytestmark = pytest.mark.django_db

RUBRIC = "Is the answer polite and on topic?"
JUDGE_MODEL = "judge-model"
CHAT = "POST /v1/chat/completions"


def run(job_id: int) -> None:
    while worker.advance_job(job_id) == "deferred":
        Job.objects.filter(pk=job_id).update(next_check_at=None)


def settle(
    nudges: list[tuple[Any, ...]],
    capture: Any,
    before_run: Callable[[Job], None] | None = None,
) -> None:
    """Do what a worker would with the tasks enqueued (and those they enqueue
    in turn): run the jobs, make and finish the judge jobs."""
    while nudges:
        func, *args = nudges.pop(0)
        with capture(execute=True):
            if func == "dashboard.tasks.advance_job":
                job = Job.objects.get(pk=args[0])
                if before_run is not None:
                    before_run(job)
                run(job.pk)
            else:
                import_string(func)(*args)


@pytest.fixture
def judged(team: Any, sims: Any) -> Callable[..., Job]:
    """A job on the Together simulator over three rows with a ``answer``
    column, and a judge scorer on the OpenAI-compatible simulator."""
    together = sims.get("together")
    openai = sims.get("openai")
    credential = make_credential(team, base_url=together.base_url, max_concurrency=2)
    judge_credential = make_credential(team, "openai", base_url=openai.base_url + "/v1")

    def make(*, with_judge: bool = True) -> Job:
        scorers = normalize_scorers(
            [
                {
                    "type": "judge",
                    "name": "polite",
                    "credential": judge_credential.pk,
                    "model": JUDGE_MODEL,
                    "rubric": RUBRIC,
                    "expected_column": "answer",
                }
            ]
            if with_judge
            else [],
            columns=["answer"],
            team=team,
        )
        return job_create(
            team=team,
            credential=credential,
            spec=JobSpec(prompts=[f"row {i}" for i in range(3)], model="test-model"),
            input_fields=[{"answer": f"expected {i}"} for i in range(3)],
            input_columns=["answer"],
            scorers=scorers,
        )

    make.judge_credential = judge_credential  # type: ignore[attr-defined]
    make.together, make.openai = together, openai  # type: ignore[attr-defined]
    return make


def judge_scores(job: Job) -> dict[int, tuple[bool | None, float | None, str]]:
    rows = ItemScore.objects.filter(job=job, scorer="polite").order_by("index")
    return {row.index: (row.passed, row.score, row.reason) for row in rows}


def test_a_judge_job_judges_every_completed_row(
    team: Any, sims: Any, judged: Any, nudges: Any, django_capture_on_commit_callbacks: Any
) -> None:
    Price.objects.create(
        team=team,
        provider="openai",
        model=JUDGE_MODEL,
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("2"),
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = judged()
    settle(nudges, django_capture_on_commit_callbacks)
    job.refresh_from_db()
    assert job.status == "completed" and job.items_completed == 3

    judge = Job.objects.get(judge_of=job)
    assert (judge.judge_scorer, judge.provider, judge.model) == ("polite", "openai", JUDGE_MODEL)
    assert judge.status == "completed" and judge.progress_total == 3 and judge.items_valid == 3
    assert judge.spec["output_schema"] == JUDGE_SCHEMA
    outputs = dict(Item.objects.filter(job=job).values_list("index", "output"))
    for item in judge.items.order_by("index"):
        assert item.source_index == item.index
        assert RUBRIC in item.input
        assert f"row {item.source_index}" in item.input
        assert outputs[item.source_index] in item.input
        assert f"expected {item.source_index}" in item.input
    # Three calls to the judge; the judged model was called three times, no more.
    assert judged.openai.count(CHAT) == 3
    assert sum(judged.together.requests.values()) == 3

    # Each judged row has the judge's answer as its score.
    answers = dict(judge.items.values_list("source_index", "output"))
    scores = judge_scores(job)
    assert scores == {
        i: (answers[i]["pass"], pytest.approx(answers[i]["score"]), answers[i]["reason"])
        for i in range(3)
    }
    assert all(0 <= score <= 1 for _, score, _ in scores.values())
    [summary] = scores_summary(job)
    assert summary["passed"] + summary["failed"] == 3 and summary["unscored"] == 0

    # The judge's calls are paid for like any job's.
    assert judge.cost_actual is not None and judge.cost_actual > 0

    assert job_json(job)["judges"] == [{"scorer": "polite", "job": judge.pk}]
    assert job_json(judge)["judge_of"] == {"job": job.pk, "scorer": "polite"}
    assert job_json(judge)["judges"] == [] and job_json(job)["judge_of"] is None


def test_the_pages_link_the_judged_job_and_its_judge(
    team: Any,
    alice: Any,
    client: Any,
    judged: Any,
    nudges: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        job = judged()
    settle(nudges, django_capture_on_commit_callbacks)
    judge = Job.objects.get(judge_of=job)
    client.force_login(alice)
    page = client.get(reverse("job_detail", args=[job.pk])).content.decode()
    link = reverse("job_detail", args=[judge.pk])
    assert f'<a href="{link}">Judge “polite”: job {judge.pk}</a> — 3 of 3 judged' in page
    back = client.get(link).content.decode()
    assert (
        f'judges <a href="{reverse("job_detail", args=[job.pk])}">job {job.pk}</a> '
        "with scorer “polite”" in back
    )


def test_the_budget_refuses_the_judge_and_the_rows_stay_unscored(
    team: Any, sims: Any, judged: Any, nudges: Any, django_capture_on_commit_callbacks: Any
) -> None:
    Price.objects.create(
        team=team,
        provider="openai",
        model=JUDGE_MODEL,
        input_per_mtok=Decimal("1000"),
        output_per_mtok=Decimal("1000"),
    )
    team.monthly_budget_usd = Decimal("0.01")
    team.save(update_fields=["monthly_budget_usd"])
    with django_capture_on_commit_callbacks(execute=True):
        job = judged()
    settle(nudges, django_capture_on_commit_callbacks)
    job.refresh_from_db()
    assert job.status == "completed"
    assert not Job.objects.filter(judge_of=job).exists()
    assert judged.openai.count(CHAT) == 0
    scores = judge_scores(job)
    assert set(scores) == {0, 1, 2}
    for passed, score, reason in scores.values():
        assert passed is None and score is None
        assert reason.startswith("the budget refused the judge's job: This job's estimated cost")
    assert job.events.filter(message__startswith="Judge “polite” did not run: the budget").exists()


OFF_SCHEMA = {"pass": "yes", "score": 7, "reason": "fine"}


def off_schema_for(monkeypatch: pytest.MonkeyPatch, bad: Callable[[str], bool]) -> set[str]:
    """The simulator answers off the judge's schema for the prompts ``bad``
    picks (by their seed, recorded as each judge job is about to run)."""
    seeds: set[str] = set()
    original = openai_sim.sample_value

    def sample_value(schema: Any, seed: str) -> Any:
        if schema == JUDGE_SCHEMA and seed in seeds:
            return OFF_SCHEMA
        return original(schema, seed)

    monkeypatch.setattr(openai_sim, "sample_value", sample_value)

    def before_run(job: Job) -> None:
        if job.judge_of_id is not None:
            for prompt in job.items.values_list("input", flat=True):
                if bad(prompt):
                    seeds.add(openai_sim._digest(job.model, prompt)[:12])

    return before_run  # type: ignore[return-value]


def test_an_off_schema_answer_is_asked_again_once_with_the_error(
    team: Any,
    judged: Any,
    nudges: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    before_run = off_schema_for(
        monkeypatch, lambda prompt: "row 1" in prompt and "did not match" not in prompt
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = judged()
    settle(nudges, django_capture_on_commit_callbacks, before_run)  # type: ignore[arg-type]
    first = Job.objects.get(judge_of=job, retry_of=None)
    assert first.items_invalid == 1
    repair = Job.objects.get(judge_of=job, retry_of=first)
    assert repair.judge_scorer == "polite" and repair.progress_total == 1
    (item,) = repair.items.all()
    assert item.source_index == 1
    assert "did not match the required JSON schema" in item.input and RUBRIC in item.input
    assert repair.status == "completed" and repair.items_valid == 1
    scores = judge_scores(job)
    assert set(scores) == {0, 1, 2} and all(passed is not None for passed, _, _ in scores.values())
    assert scores[1][2] == repair.items.get().output["reason"]
    assert job_json(job)["judges"] == [
        {"scorer": "polite", "job": first.pk},
        {"scorer": "polite", "job": repair.pk},
    ]
    # The task run again asks nothing twice and keeps the verdicts.
    assert judge_module.judge_finish(first.pk) is None
    assert Job.objects.filter(judge_of=job).count() == 2 and judge_scores(job) == scores


def test_an_answer_still_off_schema_leaves_the_row_unscored(
    team: Any,
    judged: Any,
    nudges: Any,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    before_run = off_schema_for(monkeypatch, lambda prompt: "row 2" in prompt)
    with django_capture_on_commit_callbacks(execute=True):
        job = judged()
    settle(nudges, django_capture_on_commit_callbacks, before_run)  # type: ignore[arg-type]
    assert Job.objects.filter(judge_of=job).count() == 2  # the judge and one repair, no more
    scores = judge_scores(job)
    assert scores[0][0] is not None and scores[1][0] is not None
    passed, score, reason = scores[2]
    assert passed is None and score is None
    assert reason.startswith("the judge's answer did not fit the schema: ") and "pass" in reason
    job.refresh_from_db()
    [summary] = scores_summary(job)
    assert summary["unscored"] == 1 and summary["passed"] + summary["failed"] == 2


def test_judging_a_finished_job_calls_only_the_judge(
    team: Any,
    alice: Any,
    sims: Any,
    judged: Any,
    nudges: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        job = judged(with_judge=False)
    settle(nudges, django_capture_on_commit_callbacks)
    together = judged.together
    calls = sum(together.requests.values())
    assert calls == 3 and not Job.objects.filter(judge_of=job).exists()
    job.refresh_from_db()
    scorer = {
        "type": "judge",
        "name": "polite",
        "credential": judged.judge_credential.pk,
        "model": JUDGE_MODEL,
        "rubric": RUBRIC,
        "value": "a greeting",
    }
    with django_capture_on_commit_callbacks(execute=True):
        scorers_add(job, [scorer], user=alice, via="api")
    settle(nudges, django_capture_on_commit_callbacks)
    assert sum(together.requests.values()) == calls  # not one call to the judged model
    assert judged.openai.count(CHAT) == 3
    judge = Job.objects.get(judge_of=job)
    assert all("a greeting" in prompt for prompt in judge.items.values_list("input", flat=True))
    assert set(judge_scores(job)) == {0, 1, 2}
    # Asked again, nothing is judged twice.
    assert judge_module.judge_start(job.pk) == []


def test_a_judge_without_structured_output_is_refused_at_submit(team: Any) -> None:
    together = make_credential(team)
    with pytest.raises(ScorerError) as refused:
        normalize_scorers(
            [
                {
                    "type": "judge",
                    "name": "strict",
                    "credential": together.pk,
                    "model": "m",
                    "rubric": RUBRIC,
                }
            ],
            columns=None,
            team=team,
        )
    [message] = refused.value.fields["scorers"]
    assert message.startswith('scorers "strict": a judge answers as structured output')
    assert "Together" in message


def test_the_api_refuses_a_judge_without_structured_output(
    team: Any, bob: Any, client: Any
) -> None:
    together = make_credential(team)
    api = api_for(client, bob)
    judge = {"type": "judge", "credential": together.pk, "model": "m", "rubric": RUBRIC}
    body = {"credential": together.pk, "model": "m", "prompts": ["hello"]}
    response = api.post("jobs", {**body, "scorers": [judge]})
    assert response.status_code == 400 and not Job.objects.exists()
    [message] = response.json()["fields"]["scorers"]
    assert message.startswith('scorers "judge": a judge answers as structured output')
    # Its expected value is checked like any scorer's.
    response = api.post("jobs", {**body, "scorers": [{**judge, "expected_column": "nope"}]})
    assert response.status_code == 400
    [message] = response.json()["fields"]["scorers"]
    assert (
        message == 'scorers[0] "judge": expected_column "nope" needs a dataset; this job has none.'
    )


def test_a_judge_call_that_fails_leaves_its_row_unscored_with_the_error(
    team: Any, judged: Any, nudges: Any, django_capture_on_commit_callbacks: Any
) -> None:
    judged.openai.add_fault(
        status=400,
        body={"error": {"message": "the judge refused", "type": "invalid_request_error"}},
        times=100,
        path="/v1/chat/completions",
    )
    with django_capture_on_commit_callbacks(execute=True):
        job = judged()
    settle(nudges, django_capture_on_commit_callbacks)
    judge = Job.objects.get(judge_of=job)
    assert judge.items_completed == 0 and judge.status == "failed"
    assert not Job.objects.filter(retry_of=judge).exists()  # failed calls are not "repaired"
    scores = judge_scores(job)
    assert set(scores) == {0, 1, 2}
    for passed, _, reason in scores.values():
        assert passed is None and reason.startswith("the judge's call failed: ")
        assert "the judge refused" in reason
