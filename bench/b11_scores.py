"""Figure 11: scores (issue #21), on SQLite.

(a) What the five cheap scorers add to a 50,000-item job's wall time: the
    job run by the worker's own code (``worker.advance_job`` until it ends)
    against the Together simulator (its own process, 20 ms a call, 32 wide),
    with and without the scorers, target ≤ 5 %. And, beside it, what they add
    to the write path alone (the flushes, no provider calls):
    the runner's flushes (``item_complete`` on each answer, then
    ``items_write`` of 1,000 rows, as the runner batches them) timed for a
    job with scorers and for the same job without, target ≤ 5 %. This is the
    write path alone, not the job's wall time: a job's wall time also holds
    the provider calls, so the overhead on it is smaller still.
(b) Re-scoring 50,000 finished items with the five scorers (``job_rescore``,
    the task behind ``POST /jobs/{id}/scorers``), target ≥ 10,000 items/s.
(c) The job's score summary (``scores_summary``, what the job page and the
    API show) at 50,000 items: median of 15, target < 100 ms, and the same
    number of queries as at 1,000.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from typing import Any

from . import common
from .common import Config, Row

ITEMS = 50_000
FLUSH = 1000  # items per flush, as the runner writes them
SCORERS = [
    {"type": "contains", "value": "answer", "name": "contains"},
    {"type": "icontains", "value": "ANSWER", "name": "icontains"},
    {"type": "regex", "value": r"answer [0-9a-f]{8}", "name": "regex"},
    {"type": "length", "min": 1, "max": 2000, "name": "length"},
    {"type": "equals", "value": "no such output", "name": "equals"},
]


def make_job(team: Any, credential: Any, n: int, scorers: list[dict[str, Any]]) -> Any:
    from dashboard.jobs.services import job_create
    from providers import JobSpec

    prompts = [f"Row {i}: what is {i} times 7?" for i in range(n)]
    return job_create(
        team=team,
        credential=credential,
        spec=JobSpec(prompts=prompts, model=common.MODEL),
        scorers=scorers,
    )


def write_path(job: Any, scorers: list[dict[str, Any]]) -> float:
    """Seconds spent recording and flushing every item of ``job`` as the runner does."""
    from dashboard.jobs.items import Changes, ItemResult, item_complete, items_write
    from dashboard.models import Item, Job
    from dashboard.status import JOB_STATUSES
    from providers.simulators import completion_text

    Job.objects.filter(pk=job.pk).update(status="running")
    spent = 0.0
    after = -1
    while True:
        items = list(Item.objects.filter(job_id=job.pk, index__gt=after).order_by("index")[:FLUSH])
        if not items:
            return spent
        answers = [ItemResult(completion_text(common.MODEL, item.input)) for item in items]
        started = time.perf_counter()
        changes = Changes()
        for item, answer in zip(items, answers, strict=True):
            changes.add(item, item.status)
            item_complete(item, answer, None)
        items_write(job.pk, changes, statuses=JOB_STATUSES, scorers=scorers)
        spent += time.perf_counter() - started
        after = items[-1].index


_runs = itertools.count(1)


def wall_time(team: Any, base_url: str, n: int, scorers: list[dict[str, Any]]) -> float:
    """Seconds a job of ``n`` prompts takes through the worker's code, end to end."""
    from dashboard.jobs import worker
    from dashboard.models import Job
    from dashboard.status import JOB_TERMINAL

    name = f"wall {next(_runs)}"  # a credential a run: names are unique in a team
    credential = common.make_credential(team, "together", base_url, name=name)
    type(credential).objects.filter(pk=credential.pk).update(max_concurrency=32)
    job = make_job(team, credential, n, scorers)
    started = time.perf_counter()
    while Job.objects.filter(pk=job.pk).values_list("status", flat=True).get() not in JOB_TERMINAL:
        worker.advance_job(job.pk)
    spent = time.perf_counter() - started
    assert Job.objects.get(pk=job.pk).items_completed == n
    return spent


def run(config: Config, quick: bool) -> list[Row]:
    n = 10_000 if quick else ITEMS
    common.prepare(config, "b11-scores")
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from dashboard.evals.scores import job_rescore, scores_summary
    from dashboard.models import ItemScore, Job

    team, _user = common.demo_team()
    credential = common.make_credential(team, "together", "http://127.0.0.1:9", name="bench")
    rows = []

    # (a) the job's wall time, with and without the five scorers (alternating, best of 2).
    port = common.free_port()
    simulator = common.start_process(
        [sys.executable, "-m", "bench.simserver", "together", "0.02", str(port)],
        None,
        "b11-simulator.log",
    )
    try:
        common.wait_http(f"http://{common.HOST}:{port}/", timeout=30)
        base_url = f"http://{common.HOST}:{port}"
        walls: dict[str, list[float]] = {"plain": [], "scored": []}
        for _ in range(2):
            walls["plain"].append(wall_time(team, base_url, n, []))
            walls["scored"].append(wall_time(team, base_url, n, SCORERS))
    finally:
        common.stop_process(simulator)
    plain_wall, scored_wall = min(walls["plain"]), min(walls["scored"])
    wall_overhead = (scored_wall - plain_wall) / plain_wall * 100
    common.progress(f"wall time: {plain_wall:.1f} s plain, {scored_wall:.1f} s with scorers")
    rows.append(
        Row(
            "11",
            f"Five cheap scorers on a {n:,}-item job's wall time (20 ms, 32 wide)",
            "≤ 5 %",
            f"{wall_overhead:+.1f} % ({plain_wall:.1f} s → {scored_wall:.1f} s, best of 2)",
            wall_overhead <= 5,
            data={"walls": walls, "overhead_pct": wall_overhead},
        )
    )

    # (a) the write path, with and without the five scorers (twice each, alternating).
    plain_runs, scored_runs = [], []
    for _ in range(2):
        plain_runs.append(write_path(make_job(team, credential, n, []), []))
        scored = make_job(team, credential, n, SCORERS)
        scored_runs.append(write_path(scored, SCORERS))
    assert ItemScore.objects.filter(job=scored).count() == n * len(SCORERS)
    plain, with_scores = min(plain_runs), min(scored_runs)
    overhead = (with_scores - plain) / plain * 100
    common.progress(f"write path: {plain:.2f} s plain, {with_scores:.2f} s with scorers")
    rows.append(
        Row(
            "11",
            f"Five cheap scorers on the write path of a {n:,}-item job",
            "≤ 5 % of the job's wall time",
            f"+{overhead:.0f} % of the write path ({plain:.2f} s → {with_scores:.2f} s, best of 2; "
            f"{(with_scores - plain) / n * 1e6:.0f} µs an item)",
            None,
            note="measured on the flushes alone (no provider calls); see README",
            data={"plain_s": plain_runs, "scored_s": scored_runs, "overhead_pct": overhead},
        )
    )

    # (b) re-scoring the finished job without its scores.
    Job.objects.filter(pk=scored.pk).update(status="completed")
    ItemScore.objects.filter(job=scored).delete()
    started = time.perf_counter()
    written = job_rescore(scored.pk)
    spent = time.perf_counter() - started
    per_second = n / spent
    rows.append(
        Row(
            "11",
            f"Re-scoring {n:,} finished items (5 scorers)",
            "≥ 10,000 items/s",
            f"{per_second:,.0f} items/s ({written:,} verdicts in {spent:.2f} s)",
            per_second >= 10_000,
            data={"seconds": spent, "verdicts": written},
        )
    )

    # (c) the summary at n items, and its queries against a 1,000-item job.
    small = make_job(team, credential, 1000, SCORERS)
    write_path(small, SCORERS)
    small = Job.objects.get(pk=small.pk)
    with CaptureQueriesContext(connection) as captured:
        scores_summary(small)
    queries_small = len(captured.captured_queries)
    scored = Job.objects.get(pk=scored.pk)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    with CaptureQueriesContext(connection) as captured:
        summary = scores_summary(scored)
    queries = len(captured.captured_queries)
    times = []
    for _ in range(15):
        started = time.perf_counter()
        scores_summary(scored)
        times.append((time.perf_counter() - started) * 1000)
    ms = statistics.median(times)
    assert summary[0]["passed"] == n
    rows.append(
        Row(
            "11",
            f"Score summary at {n:,} items (5 scorers)",
            "< 100 ms; queries same as at 1k",
            f"{ms:.1f} ms median of 15; {queries} queries ({queries_small} at 1k)",
            ms < 100 and queries == queries_small,
            data={"ms": ms, "queries": queries, "queries_small": queries_small},
        )
    )
    return rows


if __name__ == "__main__":
    sys.exit(common.child_main(run, ["sqlite-orm"]))
