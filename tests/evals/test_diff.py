"""Diffs between two jobs over the same rows: the counts (rows same,
changed, only on one side; per scorer regressions and improvements, with
against = before and the job = after), the regressions filter, keyset
paging by row identity (a retry's source_index), and the cost, constant
with rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dashboard.evals import diff
from dashboard.models import Item, ItemScore, Job
from tests.conftest import job_row

pytestmark = pytest.mark.django_db

EXACT = {"type": "equals", "name": "exact", "value": "x"}
SHORT = {"type": "length", "name": "short", "max": 5}


def verdicts(job: Job, scorer: str, passed: list[bool | None]) -> None:
    items = {item.index: item for item in Item.objects.filter(job=job)}
    ItemScore.objects.bulk_create(
        ItemScore(item=items[i], job=job, index=i, scorer=scorer, passed=p)
        for i, p in enumerate(passed)
    )


def two_runs(team: Any, n: int = 6) -> tuple[Job, Job]:
    """``before`` and ``after`` over rows 0..n-1; after changes rows 1 and 3."""
    prompts = [f"p{i}" for i in range(n)]
    before = job_row(team, prompts=prompts, outputs=[f"o{i}" for i in range(n)], scorers=[EXACT])
    outputs = [f"o{i}" if i not in (1, 3) else f"new {i}" for i in range(n)]
    after = job_row(team, prompts=prompts, outputs=outputs, scorers=[EXACT, SHORT])
    return before, after


def test_counts_and_regressions_go_from_against_to_the_job(team: Any) -> None:
    before, after = two_runs(team)
    verdicts(before, "exact", [True, True, False, False, True, None])
    verdicts(after, "exact", [True, False, True, False, False, True])
    verdicts(after, "short", [True] * 6)  # only the job has it: not compared
    d = diff.diff_of(after, before)
    assert diff.row_counts(d) == {"same": 4, "changed": 2, "only_here": 0, "only_there": 0}
    # rows 1 and 4 passed before and fail now; row 2 failed before and passes
    assert diff.scorer_counts(d) == [{"name": "exact", "regressions": 2, "improvements": 1}]
    # the other way round, they swap
    back = diff.diff_of(before, after)
    assert diff.scorer_counts(back) == [{"name": "exact", "regressions": 1, "improvements": 2}]

    rows, more = diff.rows_page(d, after=None, size=10, only="regressions")
    assert [r.index for r in rows] == [1, 4] and more is None
    assert rows[0].changed and not rows[1].changed
    assert rows[0].went == {"exact": "regression"}
    assert rows[0].here.output == "new 1" and rows[0].there.output == "o1"
    rows, _ = diff.rows_page(d, after=None, size=10, only="improvements")
    assert [r.index for r in rows] == [2]


def test_paging_by_row_covers_each_row_once(team: Any) -> None:
    before = job_row(team, prompts=["a", "b", "c"], outputs=["1", "2", "3"])
    after = job_row(team, prompts=["a", "b", "c", "d", "e"], outputs=["1", "x", "3", "4", "5"])
    d = diff.diff_of(after, before)
    assert diff.row_counts(d) == {"same": 2, "changed": 1, "only_here": 2, "only_there": 0}
    seen, position = [], None
    while True:
        rows, position = diff.rows_page(d, after=position, size=2)
        seen += [(r.index, r.here is not None, r.there is not None) for r in rows]
        if position is None:
            break
    assert seen == [
        (0, True, True),
        (1, True, True),
        (2, True, True),
        (3, True, False),
        (4, True, False),
    ]


def test_a_retry_matches_the_rows_it_redoes(team: Any) -> None:
    first = job_row(
        team, prompts=["a", "b", "c", "d"], outputs=["1", None, "3", None], errors={1: "x", 3: "y"}
    )
    retry = job_row(team, prompts=["b", "d"], outputs=["2", "4"], retry_of=first)
    Item.objects.filter(job=retry, index=0).update(source_index=1)
    Item.objects.filter(job=retry, index=1).update(source_index=3)
    d = diff.diff_of(retry, first)
    assert (d.key, d.against_key) == ("source_index", "index")
    assert diff.row_counts(d) == {"same": 0, "changed": 2, "only_here": 0, "only_there": 2}
    rows, _ = diff.rows_page(d, after=None, size=10)
    assert [(r.index, r.here and r.here.output, r.there.output) for r in rows] == [
        (0, None, "1"),
        (1, "2", None),
        (2, None, "3"),
        (3, "4", None),
    ]


def _queries(team: Any, n: int) -> int:
    before, after = two_runs(team, n)
    verdicts(before, "exact", [i % 2 == 0 for i in range(n)])
    verdicts(after, "exact", [i % 3 == 0 for i in range(n)])
    with CaptureQueriesContext(connection) as queries:
        d = diff.diff_of(after, before)
        diff.row_counts(d)
        diff.scorer_counts(d)
        diff.rows_page(d, after=None, size=5)
        diff.rows_page(d, after=None, size=5, only="regressions")
    return len(queries)


def test_the_cost_is_constant_with_rows(team: Any) -> None:
    assert _queries(team, 8) == _queries(team, 120)
