"""A comparison's scores through the API: each target's pass rates, McNemar
per pair of targets over the rows both scored (hand-written ItemScore rows),
the judge's agreement with reviewers' ratings and the cells where they
disagree, scorers added to every target; and the cost, constant with rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard.evals.significance import mcnemar_exact
from dashboard.models import Comparison, Item, ItemScore, Job, Rating
from tests.api.conftest import assert_error
from tests.conftest import job_row, make_user

pytestmark = pytest.mark.django_db

JUDGE = {"type": "judge", "name": "judge", "credential": 1, "model": "m", "rubric": "ok?"}
EXACT = {"type": "equals", "name": "exact", "value": "x"}


def comparison_of(
    team: Any, n: int, targets: int = 2, scorers: Any = None
) -> tuple[Comparison, list[Job]]:
    comparison = Comparison.objects.create(team=team, name="c")
    jobs = [
        job_row(
            team,
            prompts=[f"p{i}" for i in range(n)],
            outputs=[f"out {t} {i}" for i in range(n)],
            comparison=comparison,
            scorers=scorers if scorers is not None else [EXACT, JUDGE],
        )
        for t in range(targets)
    ]
    return comparison, jobs


def verdicts(job: Job, scorer: str, passed: list[bool | None]) -> None:
    items = {item.index: item for item in Item.objects.filter(job=job)}
    ItemScore.objects.bulk_create(
        ItemScore(item=items[i], job=job, index=i, scorer=scorer, passed=p, reason=f"why {i}")
        for i, p in enumerate(passed)
    )


def test_paired_counts_and_mcnemar_per_pair(alice_api: Any, team: Any) -> None:
    comparison, (a, b) = comparison_of(team, 12)
    # rows 0-8: only b passes; row 9: only a; row 10 both; row 11 a unscored
    verdicts(a, "exact", [False] * 9 + [True, True, None])
    verdicts(b, "exact", [True] * 9 + [False, True, True])
    answer = alice_api.get(f"comparisons/{comparison.pk}").json()
    pair, judged = answer["significance"]
    assert (judged["scorer"], judged["p"], judged["only_a"] + judged["both"]) == ("judge", 1.0, 0)
    assert pair == {
        "scorer": "exact",
        "a": a.pk,
        "b": b.pk,
        "p": pytest.approx(0.021484375),
        "only_a": 1,
        "only_b": 9,
        "both": 1,
        "neither": 0,
    }
    first, second = answer["targets"]
    exact = next(s for s in first["scores"] if s["name"] == "exact")
    assert (exact["passed"], exact["failed"], exact["unscored"]) == (2, 9, 1)
    assert next(s for s in second["scores"] if s["name"] == "exact")["passed"] == 11


def test_three_targets_give_three_pairs_and_only_shared_scorers(alice_api: Any, team: Any) -> None:
    comparison, jobs = comparison_of(team, 6, targets=3, scorers=[EXACT])
    for job, pattern in zip(jobs, ([True] * 6, [False] * 6, [True, False] * 3), strict=True):
        verdicts(job, "exact", pattern)
    other = {"type": "length", "name": "short", "max": 3}
    Job.objects.filter(pk=jobs[2].pk).update(scorers=[EXACT, other])
    pairs = alice_api.get(f"comparisons/{comparison.pk}").json()["significance"]
    got = {(p["a"], p["b"]): (p["only_a"], p["only_b"], p["both"], p["neither"]) for p in pairs}
    a, b, c = (job.pk for job in jobs)
    assert got == {(a, b): (6, 0, 0, 0), (a, c): (3, 0, 3, 0), (b, c): (0, 3, 0, 3)}
    assert {p["scorer"] for p in pairs} == {"exact"}
    assert next(p for p in pairs if p["b"] == b)["p"] == pytest.approx(mcnemar_exact(6, 0))


def test_agreement_of_the_judge_with_ratings(
    alice_api: Any, team: Any, alice: Any, bob: Any
) -> None:
    comparison, (a, b) = comparison_of(team, 6)
    verdicts(a, "judge", [True, True, False, False, True, None])
    verdicts(b, "judge", [True, False, True, True, True, True])
    carol = make_user("carol")
    ratings = [
        # (job, index, user, score)
        (a, 0, alice, 1),  # agree (pass)
        (a, 1, alice, -1),  # disagree: judge pass, human fail
        (a, 2, alice, -1),  # agree (fail)
        (a, 3, alice, 1),
        (a, 3, bob, -1),  # a tie: no human label
        (a, 5, alice, 1),  # the judge could not score it: not a cell
        (b, 0, alice, 1),
        (b, 0, bob, 1),
        (b, 0, carol, -1),  # majority pass: agree
        (b, 1, bob, 1),  # disagree: judge fail, human pass
    ]
    for job, index, user, score in ratings:
        Rating.objects.create(job=job, index=index, user=user, score=score)
    Rating.objects.create(job=b, index=4, user=bob, best=True)  # a pick, no score
    answer = alice_api.get(f"comparisons/{comparison.pk}").json()
    [agreement] = answer["agreement"]
    # cells: a0 (P,P), a1 (P,F), a2 (F,F), b0 (P,P), b1 (F,P): 3 of 5 agree
    # table both pass 2, judge only 1, human only 1, both fail 1: kappa 1/6
    assert agreement["scorer"] == "judge"
    assert agreement["cells"] == 5
    assert agreement["percent"] == pytest.approx(60.0)
    assert agreement["kappa"] == pytest.approx(1 / 6)
    assert agreement["disagree"] == 2

    url = f"comparisons/{comparison.pk}/disagreements?scorer=judge&limit=1"
    first = alice_api.get(url).json()
    assert first["cells"] == [
        {"index": 1, "job": a.pk, "judge": True, "human": -1, "reason": "why 1"}
    ]
    second = alice_api.get(first["next"]).json()
    assert second["cells"] == [
        {"index": 1, "job": b.pk, "judge": False, "human": 1, "reason": "why 1"}
    ]
    assert second["next"] is None


def test_disagreements_refuse_bad_input_and_hide_other_teams(
    alice_api: Any, charlie_api: Any, team: Any
) -> None:
    comparison, _ = comparison_of(team, 2)
    base = f"comparisons/{comparison.pk}/disagreements"
    assert_error(alice_api.get(f"{base}?scorer=exact"), 400, "scorer")  # not a judge
    assert_error(alice_api.get(f"{base}?scorer=judge&after=zz"), 400, "after")
    assert_error(alice_api.get(f"{base}?scorer=judge&limit=0"), 400)
    assert_error(charlie_api.get(f"{base}?scorer=judge"), 404)
    assert_error(charlie_api.get(f"comparisons/{comparison.pk}"), 404)


def test_scorers_added_to_every_target(
    alice_api: Any, viewer_api: Any, charlie_api: Any, team: Any, nudges: Any
) -> None:
    comparison, (a, b) = comparison_of(team, 3, scorers=[])
    url = f"comparisons/{comparison.pk}/scorers"
    body = {"scorers": [{"type": "contains", "value": "out", "name": "says"}]}
    assert_error(viewer_api.post(url, body), 403)
    assert_error(charlie_api.post(url, body), 404)
    assert_error(alice_api.post(url, {"scorers": [{"type": "nope"}]}), 400, "scorers")
    assert_error(alice_api.post(url, {"scorers": []}), 400, "scorers")
    assert Job.objects.get(pk=a.pk).scorers == []

    answer = alice_api.post(url, body)
    assert answer.status_code == 200, answer.content
    got = answer.json()
    assert [t["job"] for t in got["targets"]] == [a.pk, b.pk]
    assert [t["scores"][0]["name"] for t in got["targets"]] == ["says", "says"]
    assert got["rescoring"] is True
    for job in (a, b):
        assert [s["name"] for s in Job.objects.get(pk=job.pk).scorers] == ["says"]

    # The same name again is refused on every target, and nothing changes.
    assert_error(alice_api.post(url, body), 400, "scorers")
    assert len(Job.objects.get(pk=b.pk).scorers) == 1


def test_scorers_on_a_comparison_still_running_are_a_409(alice_api: Any, team: Any) -> None:
    comparison, (a, b) = comparison_of(team, 2, scorers=[])
    Job.objects.filter(pk=b.pk).update(status="running")
    body = {"scorers": [{"type": "contains", "value": "out"}]}
    answer = assert_error(alice_api.post(f"comparisons/{comparison.pk}/scorers", body), 409)
    assert str(b.pk) in answer["error"]
    assert Job.objects.get(pk=a.pk).scorers == []


def _queries(alice_api: Any, team: Any, alice: Any, n: int) -> int:
    comparison, (a, b) = comparison_of(team, n)
    for job in (a, b):
        verdicts(job, "exact", [i % 3 == 0 for i in range(n)])
        verdicts(job, "judge", [i % 2 == 0 for i in range(n)])
        Rating.objects.bulk_create(
            Rating(job=job, index=i, user=alice, score=1 if i % 4 else -1) for i in range(n)
        )
    alice_api.get(f"comparisons/{comparison.pk}")  # the token's first use is written once
    with CaptureQueriesContext(connection) as queries:
        answer = alice_api.get(f"comparisons/{comparison.pk}")
    assert answer.status_code == 200
    assert answer.json()["agreement"][0]["cells"] == 2 * n
    return len(queries)


def test_the_answer_costs_the_same_queries_at_any_size(
    alice_api: Any, team: Any, alice: Any
) -> None:
    assert _queries(alice_api, team, alice, 5) == _queries(alice_api, team, alice, 60)
