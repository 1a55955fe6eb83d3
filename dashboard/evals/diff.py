"""Two jobs over the same rows, side by side: which rows' outputs changed,
and per scorer which rows went from pass to fail (regressions) or fail to
pass (improvements). ``against`` is the run before, ``job`` the run after.

A row is matched by its identity: ``source_index`` for a retry's items (the
row they redo), else ``index``. The counts are aggregate queries (constant
with rows); the rows are read a keyset page at a time, by row identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from dashboard.jobs import results
from dashboard.models import Item, ItemScore, Job

#: What ``only=`` takes: rows where some scorer went this way (against → job).
ONLY = ("regressions", "improvements")
#: Item columns a row of the diff needs.
COLUMNS = ("id", "job_id", "index", "source_index", "input", "status", "output", "error")


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _col(model: Any, name: str) -> str:
    return _q(model._meta.get_field(name).column)


def row_key(job: Job) -> str:
    """The field that names a row of ``job``: ``source_index`` when its items
    redo rows of another job (a retry), else ``index``. One small query."""
    redo = Item.objects.filter(job_id=job.pk, source_index__isnull=False).exists()
    return "source_index" if redo else "index"


@dataclass
class Diff:
    job: Job
    against: Job
    key: str = "index"
    against_key: str = "index"
    scorers: list[str] = field(default_factory=list)


def diff_of(job: Job, against: Job) -> Diff:
    """What the other calls need: each side's row key and the scorers both have."""
    theirs = {scorer["name"] for scorer in against.scorers}
    return Diff(
        job=job,
        against=against,
        key=row_key(job),
        against_key=row_key(against),
        scorers=[s["name"] for s in job.scorers if s["name"] in theirs],
    )


def _pairs_sql(diff: Diff) -> tuple[str, list[Any]]:
    """FROM … WHERE of the rows both jobs have: ``h`` this job's item, ``t``
    the other's (matched on each side's row key)."""
    table, job_col = _q(Item._meta.db_table), _col(Item, "job")
    sql = (
        f"FROM {table} AS h JOIN {table} AS t "  # noqa: S608 (names from the model, quoted)
        f"ON t.{job_col} = %s AND t.{_col(Item, diff.against_key)} = h.{_col(Item, diff.key)} "
        f"WHERE h.{job_col} = %s"
    )
    return sql, [diff.against.pk, diff.job.pk]


def row_counts(diff: Diff) -> dict[str, int]:
    """Rows in both jobs whose output is the same and changed, rows only in
    this job and only in the other. One query (the jobs' item counters)."""
    pairs, params = _pairs_sql(diff)
    output = _col(Item, "output")
    same = f"(h.{output} = t.{output} OR (h.{output} IS NULL AND t.{output} IS NULL))"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*), COALESCE(SUM(CASE WHEN {same} THEN 1 ELSE 0 END), 0) {pairs}",
            params,
        )
        both, unchanged = (int(x) for x in cursor.fetchone())
    return {
        "same": unchanged,
        "changed": both - unchanged,
        "only_here": max(0, diff.job.progress_total - both),
        "only_there": max(0, diff.against.progress_total - both),
    }


def _went(way: str) -> str:
    """The condition on a row's two verdicts (``ts`` before, ``hs`` after)."""
    passed = _col(ItemScore, "passed")
    if way == "regressions":
        return f"ts.{passed} AND NOT hs.{passed}"
    return f"hs.{passed} AND NOT ts.{passed}"


def _scores_join() -> str:
    item, scorer = _col(ItemScore, "item"), _col(ItemScore, "scorer")
    table, item_id = _q(ItemScore._meta.db_table), _col(Item, "id")
    return (
        f"JOIN {table} AS hs ON hs.{item} = h.{item_id} "
        f"JOIN {table} AS ts ON ts.{item} = t.{item_id} AND ts.{scorer} = hs.{scorer}"
    )


def scorer_counts(diff: Diff) -> list[dict[str, Any]]:
    """Per scorer both jobs have: rows that passed before and fail now
    (regressions), and the other way round (improvements). One query."""
    if not diff.scorers:
        return []
    pairs, params = _pairs_sql(diff)
    scorer = _col(ItemScore, "scorer")
    select, where = pairs.split(" WHERE ", 1)
    marks = ", ".join(["%s"] * len(diff.scorers))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT hs.{scorer}, "
            f"SUM(CASE WHEN {_went('regressions')} THEN 1 ELSE 0 END), "
            f"SUM(CASE WHEN {_went('improvements')} THEN 1 ELSE 0 END) "
            f"{select} {_scores_join()} WHERE {where} AND hs.{scorer} IN ({marks}) "
            f"GROUP BY hs.{scorer}",
            [*params, *diff.scorers],
        )
        counted = {name: (int(r or 0), int(i or 0)) for name, r, i in cursor.fetchall()}
    return [
        {
            "name": name,
            "regressions": counted.get(name, (0, 0))[0],
            "improvements": counted.get(name, (0, 0))[1],
        }
        for name in diff.scorers
    ]


@dataclass
class Row:
    index: int  # the row's identity
    here: Item | None
    there: Item | None
    scores: list[dict[str, Any]] = field(default_factory=list)
    against_scores: list[dict[str, Any]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return (self.here.output if self.here else None) != (
            self.there.output if self.there else None
        )

    @property
    def went(self) -> dict[str, str]:
        """Per scorer that moved on this row: "regression" or "improvement"."""
        before = {s["scorer"]: s["pass"] for s in self.against_scores}
        moved = {}
        for score in self.scores:
            old, new = before.get(score["scorer"]), score["pass"]
            if old is True and new is False:
                moved[score["scorer"]] = "regression"
            elif old is False and new is True:
                moved[score["scorer"]] = "improvement"
        return moved


def rows_page(
    diff: Diff, *, after: int | None, size: int, only: str | None = None
) -> tuple[list[Row], int | None]:
    """The rows after row ``after`` (by identity), ``size`` of them, and the
    position of the next page (None on the last). Without ``only`` every row
    of either job; with it, the rows of both where some shared scorer went
    that way. A fixed number of queries, whatever the jobs' sizes."""
    start = -1 if after is None else after
    if only is None:
        here = _side(diff.job, diff.key, start, size + 1)
        there = _side(diff.against, diff.against_key, start, size + 1)
    else:
        here, there = _moved(diff, only, start, size + 1)
    keys = sorted(set(here) | set(there))
    more = len(keys) > size
    keys = keys[:size]
    page_items = [here[k] for k in keys if k in here] + [there[k] for k in keys if k in there]
    scores = results.item_scores(page_items)
    rows = []
    for key in keys:
        h, t = here.get(key), there.get(key)
        rows.append(
            Row(
                index=key,
                here=h,
                there=t,
                scores=scores.get(h.pk, []) if h else [],
                against_scores=scores.get(t.pk, []) if t else [],
            )
        )
    return rows, (keys[-1] if more and keys else None)


def _side(job: Job, key: str, after: int, limit: int) -> dict[int, Item]:
    items = (
        Item.objects.filter(job_id=job.pk, **{f"{key}__gt": after})
        .order_by(key)
        .only(*COLUMNS)[:limit]
    )
    return {getattr(item, key): item for item in items}


def _moved(
    diff: Diff, only: str, after: int, limit: int
) -> tuple[dict[int, Item], dict[int, Item]]:
    """The rows of both jobs where some shared scorer went ``only``'s way."""
    if not diff.scorers:
        return {}, {}
    pairs, params = _pairs_sql(diff)
    key, item_id, score_item = _col(Item, diff.key), _col(Item, "id"), _col(ItemScore, "item")
    scorer, table = _col(ItemScore, "scorer"), _q(ItemScore._meta.db_table)
    marks = ", ".join(["%s"] * len(diff.scorers))
    sql = (
        f"SELECT h.{item_id}, t.{item_id} {pairs} AND h.{key} > %s AND EXISTS ("  # noqa: S608 (names from the model, quoted)
        f"SELECT 1 FROM {table} AS hs JOIN {table} AS ts ON ts.{score_item} = t.{item_id} "
        f"AND ts.{scorer} = hs.{scorer} WHERE hs.{score_item} = h.{item_id} "
        f"AND hs.{scorer} IN ({marks}) AND {_went(only)}) ORDER BY h.{key} LIMIT %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, after, *diff.scorers, limit])
        found = cursor.fetchall()
    items = Item.objects.only(*COLUMNS).in_bulk([i for pair in found for i in pair])
    here = {getattr(items[h], diff.key): items[h] for h, _ in found}
    there = {getattr(items[h], diff.key): items[t] for h, t in found}
    return here, there
