"""A comparison's scores: each target's pass rates, and per pair of targets
and scorer whether the difference on the same rows is more than chance
(McNemar's exact test on the paired rows); where a judge and human ratings
cover the same cells, their agreement (percent, Cohen's kappa) and the cells
where they disagree. Each is one aggregate query for the whole comparison,
whatever its size: the database counts, Python only does the arithmetic.

A cell is (row index, target job). A human label is the sign of the cell's
ratings summed (+1 pass, -1 fail; a tie between reviewers is no label). The
judge's verdict is the ItemScore of a scorer whose type is ``judge``.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

from django.db import connection, transaction

from dashboard.evals import significance
from dashboard.evals.scores import scores_summary
from dashboard.evals.services import NotFinished, scorers_add
from dashboard.models import Item, ItemScore, Job, Rating
from dashboard.status import JOB_TERMINAL

#: Disagreeing cells per page.
DISAGREEMENTS_PAGE = 50


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _col(model: Any, field: str) -> str:
    return _q(model._meta.get_field(field).column)


def _table(model: Any) -> str:
    return _q(model._meta.db_table)


def comparison_scores(targets: list[Job]) -> dict[str, Any]:
    """``scores`` per target (by job id), ``significance`` and ``agreement``."""
    return {
        "scores": {job.pk: scores_summary(job) for job in targets},
        "significance": paired(targets),
        "agreement": agreement(targets),
    }


def shared_scorers(a: Job, b: Job) -> list[str]:
    """The names of the scorers both jobs have, in ``a``'s order."""
    theirs = {scorer["name"] for scorer in b.scorers}
    return [scorer["name"] for scorer in a.scorers if scorer["name"] in theirs]


def paired(targets: list[Job]) -> list[dict[str, Any]]:
    """Per pair of targets (a before b, in the targets' order) and per scorer
    both have: over the rows both scored (paired by index), how many only a
    passed, only b, both and neither, and McNemar's exact p. One query: each
    row's verdict per target (a GROUP BY over the targets' scores), then the
    pairs' counts over those."""
    pairs = [(a, b, shared_scorers(a, b)) for a, b in combinations(targets, 2)]
    names = sorted({name for _, _, shared in pairs for name in shared})
    if not names:
        return []
    ids = [job.pk for job in targets]
    job, index, scorer, passed = (_col(ItemScore, f) for f in ("job", "index", "scorer", "passed"))
    verdicts = ", ".join(
        f"MAX(CASE WHEN {job} = %s THEN (CASE WHEN {passed} THEN 1 ELSE 0 END) END) AS v{n}"
        for n in range(len(ids))
    )
    position = {job_id: n for n, job_id in enumerate(ids)}
    sums, order = [], []
    for a, b, _ in pairs:
        va, vb = f"v{position[a.pk]}", f"v{position[b.pk]}"
        for left, right in ((1, 0), (0, 1), (1, 1), (0, 0)):
            sums.append(f"SUM(CASE WHEN {va} = {left} AND {vb} = {right} THEN 1 ELSE 0 END)")
        order.append((a, b))
    marks = ", ".join(["%s"] * len(ids))
    name_marks = ", ".join(["%s"] * len(names))
    sql = (
        f"SELECT s, {', '.join(sums)} FROM ("  # noqa: S608 (names from the model, quoted)
        f"SELECT {scorer} AS s, {verdicts} FROM {_table(ItemScore)} "
        f"WHERE {job} IN ({marks}) AND {scorer} IN ({name_marks}) AND {passed} IS NOT NULL "
        f"GROUP BY {scorer}, {index}) AS per_row GROUP BY s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*ids, *ids, *names])
        counted = {row[0]: row[1:] for row in cursor.fetchall()}
    out = []
    for number, (a, b, shared) in enumerate(pairs):
        for name in shared:
            row = counted.get(name)
            only_a, only_b, both, neither = (
                (int(x or 0) for x in row[4 * number : 4 * number + 4]) if row else (0, 0, 0, 0)
            )
            out.append(
                {
                    "scorer": name,
                    "a": a.pk,
                    "b": b.pk,
                    "p": significance.mcnemar_exact(only_a, only_b),
                    "only_a": only_a,
                    "only_b": only_b,
                    "both": both,
                    "neither": neither,
                }
            )
    return out


def judges(targets: list[Job]) -> dict[str, list[int]]:
    """Each judge scorer's name, and the targets that have it."""
    found: dict[str, list[int]] = {}
    for job in targets:
        for scorer in job.scorers:
            if scorer["type"] == "judge":
                found.setdefault(scorer["name"], []).append(job.pk)
    return found


def _judged_cells(by_name: dict[str, list[int]]) -> tuple[str, list[Any]]:
    """FROM … WHERE over the cells a judge scored and reviewers labelled: the
    ratings summed per cell, the cell's item (unique on job, index), its
    judge verdict (unique on item, scorer). Columns: scorer, index, job,
    passed, human (the ratings' sum), reason."""
    r_job, r_index, r_score = (_col(Rating, f) for f in ("job", "index", "score"))
    i_id, i_job, i_index = (_col(Item, f) for f in ("id", "job", "index"))
    s_item, s_scorer, s_passed = (_col(ItemScore, f) for f in ("item", "scorer", "passed"))
    jobs = sorted({job_id for ids in by_name.values() for job_id in ids})
    which = " OR ".join(
        f"(h.j = %s AND s.{s_scorer} IN ({', '.join(['%s'] * len(names))}))"
        for names in (_names_of(by_name, job_id) for job_id in jobs)
    )
    params: list[Any] = [*jobs]
    for job_id in jobs:
        params += [job_id, *_names_of(by_name, job_id)]
    sql = (
        f"FROM (SELECT {r_job} AS j, {r_index} AS x, SUM({r_score}) AS total "  # noqa: S608
        f"FROM {_table(Rating)} WHERE {r_job} IN ({', '.join(['%s'] * len(jobs))}) "
        f"AND {r_score} IS NOT NULL GROUP BY {r_job}, {r_index}) AS h "
        f"JOIN {_table(Item)} AS i ON i.{i_job} = h.j AND i.{i_index} = h.x "
        f"JOIN {_table(ItemScore)} AS s ON s.{s_item} = i.{i_id} "
        f"WHERE h.total <> 0 AND s.{s_passed} IS NOT NULL AND ({which})"
    )
    return sql, params


def _names_of(by_name: dict[str, list[int]], job_id: int) -> list[str]:
    return sorted(name for name, ids in by_name.items() if job_id in ids)


def agreement(targets: list[Job]) -> list[dict[str, Any]]:
    """Per judge scorer, over the cells it scored that reviewers also rated:
    how many, the percent where they agree, and Cohen's kappa. One query."""
    by_name = judges(targets)
    if not by_name:
        return []
    cells, params = _judged_cells(by_name)
    passed, scorer = _col(ItemScore, "passed"), _col(ItemScore, "scorer")
    sql = (
        f"SELECT s.{scorer}, "
        f"SUM(CASE WHEN s.{passed} AND h.total > 0 THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN s.{passed} AND h.total < 0 THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN NOT s.{passed} AND h.total > 0 THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN NOT s.{passed} AND h.total < 0 THEN 1 ELSE 0 END) "
        f"{cells} GROUP BY s.{scorer}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        counted = {row[0]: [int(x or 0) for x in row[1:]] for row in cursor.fetchall()}
    out = []
    for name in by_name:
        table = counted.get(name)
        if not table or not sum(table):
            continue
        result = significance.cohen_kappa(*table)
        out.append({"scorer": name, **result, "disagree": table[1] + table[2]})
    return out


@dataclass
class Disagreement:
    index: int
    job: int
    judge: bool
    human: int  # +1 or -1: the reviewers' verdict
    reason: str


def disagreements(
    targets: list[Job], scorer: str, *, after: tuple[int, int] | None, size: int
) -> tuple[list[Disagreement], tuple[int, int] | None]:
    """The cells where the judge ``scorer`` and the reviewers disagree, by
    (index, job), a page after ``after``; and the position of the next page
    (None on the last). One query."""
    by_name = {name: ids for name, ids in judges(targets).items() if name == scorer}
    if not by_name:
        return [], None
    cells, params = _judged_cells(by_name)
    passed, reason = _col(ItemScore, "passed"), _col(ItemScore, "reason")
    sql = (
        f"SELECT h.x, h.j, s.{passed}, h.total, s.{reason} {cells} "
        f"AND ((s.{passed} AND h.total < 0) OR (NOT s.{passed} AND h.total > 0))"
    )
    if after is not None:
        sql += " AND (h.x > %s OR (h.x = %s AND h.j > %s))"
        params += [after[0], after[0], after[1]]
    sql += " ORDER BY h.x, h.j LIMIT %s"
    params.append(size + 1)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    found = [
        Disagreement(index=x, job=j, judge=bool(p), human=1 if total > 0 else -1, reason=why or "")
        for x, j, p, total, why in rows[:size]
    ]
    more = len(rows) > size
    return found, ((found[-1].index, found[-1].job) if more else None)


def comparison_scorers_add(
    targets: list[Job], raw: Any, *, user: Any = None, via: str = ""
) -> list[dict[str, Any]]:
    """Add the scorers ``raw`` to every target (all or none: ScorerError or
    NotFinished leave every target as it was); each target's finished items
    are then scored by a task, once this commits."""
    running = [job.pk for job in targets if job.status not in JOB_TERMINAL]
    if running:
        raise NotFinished(
            f"Target job(s) {', '.join(map(str, running))} have not ended; "
            "add scorers once every target has."
        )
    added: list[dict[str, Any]] = []
    with transaction.atomic():
        for job in targets:
            added = scorers_add(job, raw, user=user, via=via)
    return added
