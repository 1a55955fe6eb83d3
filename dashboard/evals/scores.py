"""Scores per item, and what they add up to.

Verdicts are written as items complete, in the flush that writes their
outputs (``on_items_completed``, connected to ``core.events.items_completed``),
and again when scorers are added to a finished job (``job_rescore``, a task:
its items' outputs are read in keyset batches, never a provider call). A
job's pass rates are one aggregate query over its ItemScore rows, whatever
its size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Q

from dashboard.core import clock
from dashboard.models import Item, ItemScore, Job, JobEvent
from dashboard.status import ItemStatus

from .scorers import CHEAP, verdict

logger = logging.getLogger(__name__)

#: Items read per query when a finished job is scored again.
RESCORE_BATCH = 2000
#: The columns scoring needs of an item.
SCORED_COLUMNS = ("id", "index", "output", "input_fields", "valid", "validation_error")
SCORE_COLUMNS = ("item_id", "job_id", "index", "scorer", "passed", "score", "reason")


def wilson(passed: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of ``passed`` out of ``n`` (95 % for z=1.96);
    None when nothing was scored. Unlike p ± z·se it stays in [0, 1] and is
    honest at 0/n and n/n."""
    if n <= 0:
        return None
    p = passed / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def scores_summary(job: Job) -> list[dict[str, Any]]:
    """Per scorer of the job, in its order: passed, failed, unscored (finished
    items with no verdict, and rows that could not be scored), the pass rate
    and its 95 % Wilson interval. One query (none for a job without scorers)."""
    if not job.scorers:
        return []
    counts = {
        row["scorer"]: row
        for row in ItemScore.objects.filter(job_id=job.pk)
        .values("scorer")
        .annotate(
            n_pass=Count("id", filter=Q(passed=True)), n_fail=Count("id", filter=Q(passed=False))
        )
        .order_by()
    }
    finished = job.progress_done
    summary = []
    for scorer in job.scorers:
        row = counts.get(scorer["name"], {})
        passed, failed = row.get("n_pass", 0), row.get("n_fail", 0)
        n = passed + failed
        interval = wilson(passed, n)
        summary.append(
            {
                "name": scorer["name"],
                "type": scorer["type"],
                "passed": passed,
                "failed": failed,
                "unscored": max(0, finished - n),
                "pass_rate": passed / n if n else None,
                "ci95": list(interval) if interval else None,
            }
        )
    return summary


# --- writing verdicts ---------------------------------------------------------------------------


def cheap(scorers: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The scorers computed as an item completes (not the judge)."""
    return [s for s in scorers if s["type"] in CHEAP]


def score_rows(job_id: int, scorers: list[dict[str, Any]], items: Iterable[Item]) -> list[tuple]:
    """One row (SCORE_COLUMNS) per item per cheap scorer."""
    rows = []
    for item in items:
        for scorer in scorers:
            passed, score, reason = verdict(
                scorer, item.output, item.input_fields, item.valid, item.validation_error
            )
            rows.append((item.pk, job_id, item.index, scorer["name"], passed, score, reason))
    return rows


#: Verdicts a statement at most (and as many as the database's limit on
#: parameters allows: 4,680 on SQLite): a flush of 1,000 items with five
#: scorers is one statement on PostgreSQL, two on SQLite.
WRITE_ROWS = 5000


def scores_write(rows: list[tuple]) -> None:
    """Insert the rows, a verdict already there (a retry, a re-score) replaced:
    ``INSERT … ON CONFLICT (item, scorer) DO UPDATE``, WRITE_ROWS a statement.
    On PostgreSQL one array a column, unnested (a short statement parsed once);
    on SQLite a VALUES list as long as its limit on parameters allows. They
    were cut at 1,000 rows, five statements a flush of five scorers: each lets
    go of the GIL while the database writes, and a worker with calls in flight
    waits to take it back."""
    if not rows:
        return
    quote = connection.ops.quote_name
    table = quote(ItemScore._meta.db_table)
    fields = [ItemScore._meta.get_field(name) for name in SCORE_COLUMNS]
    columns = [field.column for field in fields]  # type: ignore[union-attr]
    names = ", ".join(quote(c) for c in columns)
    updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in columns[-3:])
    conflict = f"ON CONFLICT ({quote(columns[0])}, {quote(columns[3])}) DO UPDATE SET {updates}"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            arrays = ", ".join(f"%s::{field.db_type(connection)}[]" for field in fields)  # type: ignore[union-attr]
            sql = f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) {conflict}"  # noqa: S608 (names from the model, quoted)
            for start in range(0, len(rows), WRITE_ROWS):
                batch = rows[start : start + WRITE_ROWS]
                cursor.execute(sql, [list(column) for column in zip(*batch, strict=True)])
            return
        limit = connection.features.max_query_params or 65535
        size = max(1, min(WRITE_ROWS, limit // len(columns)))
        row = "(" + ", ".join(["%s"] * len(columns)) + ")"
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            cursor.execute(
                f"INSERT INTO {table} ({names}) VALUES {', '.join([row] * len(batch))} "  # noqa: S608 (names from the model, quoted)
                f"{conflict}",
                [value for values in batch for value in values],
            )


def on_items_completed(
    sender: Any, *, job_id: int, scorers: list[dict[str, Any]], items: list[Item], **kwargs: Any
) -> None:
    """Score items that just completed, in the sender's transaction (the
    flush that wrote their outputs). A bug in a scorer is logged and rolled
    back alone: the outputs are still written, the rows left unscored."""
    chosen = cheap(scorers)
    if not chosen or not items:
        return
    try:
        with transaction.atomic():
            scores_write(score_rows(job_id, chosen, items))
    except Exception:
        logger.exception("Scores of job %s were not written", job_id)


# --- scorers added to a finished job -----------------------------------------------------------


def job_rescore(job_id: int, names: list[str] | None = None) -> int:
    """Score the job's completed items with its scorers named ``names`` (all
    its cheap ones for None), RESCORE_BATCH items a query, upserted. Reads
    outputs already stored: no provider is called. Returns the rows written."""
    job = Job.objects.filter(pk=job_id).only("id", "scorers").first()
    if job is None:
        return 0
    chosen = [s for s in cheap(job.scorers) if names is None or s["name"] in names]
    if not chosen:
        return 0
    written, after = 0, -1
    while True:
        items = list(
            Item.objects.filter(job_id=job_id, status=ItemStatus.COMPLETED, index__gt=after)
            .order_by("index")
            .only(*SCORED_COLUMNS)[:RESCORE_BATCH]
        )
        if not items:
            break
        rows = score_rows(job_id, chosen, items)
        with transaction.atomic():
            scores_write(rows)
        written += len(rows)
        after = items[-1].index
        if len(items) < RESCORE_BATCH:
            break
    JobEvent.objects.create(
        job_id=job_id,
        message=f"Scored {written // len(chosen)} item(s) with "
        f"{', '.join(s['name'] for s in chosen)}",
        created_at=clock.now(),
    )
    return written
