"""Figure 3, poll efficiency: 500 running GridRepublic jobs and 200 MyMagic jobs.

The engine's own functions run in this process against the simulators (whose
clocks the benchmark moves, so each round sees what it should): jobs go through
``job_create`` and ``advance_job`` (the real submit), then each poll round is
``due_units`` + ``poll_round`` for one credential, exactly what
``poll_credential`` does per round, under ``CaptureQueriesContext``; HTTP
requests are counted at the simulators.

Printed: GridRepublic status requests per round (batched: at most one per 50
jobs; MyMagic documents no batch status call, so one per job), and SQL queries
per round at 100 jobs and at 700 jobs, for steady rounds (jobs running, logs
growing) and for the round where every job changes status (queued -> running).
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from typing import Any

from . import common
from .common import Config, Row

GR_PER_REQUEST = 50
STEP = 10.0  # simulator seconds queued, then 2 x STEP running


class Clock:
    """The simulators' clock, moved by the benchmark."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def create_jobs(team: Any, credential: Any, count: int, **spec: Any) -> list[int]:
    prompts = [[f"Prompt {i} of {credential.name}"] for i in range(count)]
    return common.submit_async_in_process(team, credential, prompts, **spec)


def poll_once(credential: Any, sim: Any, route: str) -> tuple[int, int, int, list[str]]:
    """One round for one credential: (units polled, SQL queries, HTTP requests, the
    queries' statements, shortened)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from dashboard.core.connect import build_provider
    from dashboard.jobs.poller import due_units, poll_round

    provider = build_provider(credential)
    # Every unit is due: look a day ahead instead of waiting out the poll interval.
    later = timezone.now() + timedelta(days=1)
    before = sim.count(route)
    with provider, CaptureQueriesContext(connection) as queries:
        units = due_units(credential.pk, later)
        poll_round(provider, units, credential)
    statements = [shorten_sql(q["sql"]) for q in queries.captured_queries]
    return len(units), len(queries), sim.count(route) - before, statements


def shorten_sql(sql: str) -> str:
    verb = sql.split(" ", 1)[0]
    table = next((w.strip('"') for w in sql.split() if w.strip('"').startswith("dashboard_")), "")
    return f"{verb} {table}"


def tally(statements: list[str]) -> str:
    counts: dict[str, int] = {}
    for statement in statements:
        counts[statement] = counts.get(statement, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def phase(
    team: Any, sims: dict[str, Any], clock: Clock, gr_jobs: int, mm_jobs: int
) -> dict[str, Any]:
    from dashboard.models import Job

    start = clock.now
    gr_cred = common.make_credential(team, "gridrepublic", sims["gridrepublic"].base_url)
    mm_cred = common.make_credential(team, "mymagic", sims["mymagic"].base_url)
    create_jobs(team, gr_cred, gr_jobs)
    create_jobs(team, mm_cred, mm_jobs, question="Summarize this.")
    gr_route = "GET /remotejobs/v2/jobs/(?P<ids>[^/]+)"
    mm_route = "GET /v1/job_status/(?P<job_id>[^/]+)"
    result: dict[str, Any] = {"jobs": gr_jobs + mm_jobs}
    # Simulator time since submit -> what the round sees.
    for label, offset in (
        ("queued", 1.0),  # first answer: provider status recorded
        ("transition", STEP + 1.0),  # every job queued -> running
        ("steady1", STEP + 4.0),  # running, logs grow
        ("steady2", STEP + 7.0),
        ("steady3", STEP + 10.0),
    ):
        clock.now = start + offset
        gr = poll_once(gr_cred, sims["gridrepublic"], gr_route)
        mm = poll_once(mm_cred, sims["mymagic"], mm_route)
        result[label] = {"gr": gr, "mm": mm}
    running = Job.objects.filter(credential__in=[gr_cred, mm_cred], status="running").count()
    result["running"] = running
    clock.now = start + 10 * STEP  # leave them all finished for the next phase
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Units, queries and requests per round, without the statements."""
    return {
        key: {slug: list(value[slug][:3]) for slug in value} if isinstance(value, dict) else value
        for key, value in result.items()
    }


def run(config: Config, quick: bool) -> list[Row]:
    common.prepare(config, "b3-poll")
    from providers.simulators import get_simulator_class

    clock = Clock()
    sims = {
        slug: get_simulator_class(slug)(step_seconds=STEP, clock=clock, host=common.HOST)
        for slug in ("gridrepublic", "mymagic")
    }
    for sim in sims.values():
        sim.start()
    try:
        team, _ = common.demo_team()
        started = time.perf_counter()
        small = phase(team, sims, clock, 71, 29)
        common.progress(f"100 jobs measured ({time.perf_counter() - started:.1f} s)")
        big = phase(team, sims, clock, 500, 200)
        common.progress(f"700 jobs measured ({time.perf_counter() - started:.1f} s)")
    finally:
        for sim in sims.values():
            sim.stop()

    for label in ("steady1", "transition"):
        for result in (small, big):
            for slug in ("gr", "mm"):
                common.detail(
                    f"{result['jobs']} jobs, {label}, {slug}: {tally(result[label][slug][3])}"
                )
    gr_units, _, gr_requests, _ = big["steady1"]["gr"]
    mm_units, _, mm_requests, _ = big["steady1"]["mm"]
    allowed = -(-gr_units // GR_PER_REQUEST)
    steady = [f"steady{i}" for i in (1, 2, 3)]

    def queries(result: dict[str, Any], rounds: list[str]) -> int:
        """Most queries of any of these rounds (both credentials together)."""
        return max(result[r]["gr"][1] + result[r]["mm"][1] for r in rounds)

    def per_credential(result: dict[str, Any], rounds: list[str]) -> str:
        gr = max(result[r]["gr"][1] for r in rounds)
        mm = max(result[r]["mm"][1] for r in rounds)
        return f"GR {gr} + MM {mm}"

    steady_small, steady_big = queries(small, steady), queries(big, steady)
    first_small, first_big = queries(small, ["queued"]), queries(big, ["queued"])
    change_small, change_big = queries(small, ["transition"]), queries(big, ["transition"])
    rows = []
    if config.db == "sqlite":  # the requests do not depend on the database
        rows.append(
            Row(
                "3",
                f"Poll: GridRepublic status requests per round ({gr_units} jobs)",
                f"<= 1 per {GR_PER_REQUEST} jobs = {allowed}",
                f"{gr_requests} (MyMagic has no batch call: {mm_requests} for {mm_units} jobs)",
                gr_requests <= allowed and big["running"] == 700,
                data={"gr_requests": gr_requests, "mm_requests": mm_requests},
            )
        )
    steady_note = ""
    if steady_big > steady_small and config.db == "sqlite":
        steady_note = (
            "SQLite: Django 5.2 caps a statement at 999 parameters, so bulk_update/bulk_create "
            "split into one statement per ~124 units (the same round is constant on PostgreSQL)."
        )
    rows.append(
        Row(
            "3",
            f"Poll: SQL queries per round, steady ({config.label})",
            "same at 100 and 700 jobs",
            f"{steady_small} at 100, {steady_big} at 700 "
            f"(GR+MM; first answers {first_small} -> {first_big})",
            steady_big <= steady_small and first_big <= first_small,
            note=steady_note,
            data={"small": summary(small), "big": summary(big)},
        )
    )
    per_job = (change_big - change_small) / 600
    rows.append(
        Row(
            "3",
            f"Poll: SQL queries, round where every job starts running ({config.label})",
            "same at 100 and 700 jobs",
            f"{change_small} at 100, {change_big} at 700",
            change_big <= change_small,
            note=""
            if change_big <= change_small
            else (
                f"{per_job:.2f} queries per job whose status changes. The round writes jobs "
                "and events in bulk; on SQLite, Django's 999-parameter cap splits each bulk "
                "statement into batches of about a hundred rows."
            ),
        )
    )
    return rows


if __name__ == "__main__":
    sys.exit(common.child_main(run, ["sqlite-orm", "pg-redis"]))
