"""The job history at 100,000 jobs: page render time and SQL queries, and the
export's throughput and peak memory.

    cd /work/main && DJANGO_SETTINGS_MODULE=config.test_settings python -m bench.history_bench

It keeps its own SQLite database under var/bench/ (``BENCH_DATABASE_URL`` points
it elsewhere, e.g. PostgreSQL) and reuses the jobs of an earlier run unless
``--fresh`` is given.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from .common import two_prompt_counters

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"
TEAM = "Bench team"
USERS = ("bench-alice", "bench-bob", "bench-carol")


def configure() -> None:
    """Settings for a standalone run: its own data directory and database, the
    test client's host allowed, logs quiet. Must run before django.setup()."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")
    os.environ["DASHBOARD_DATA_DIR"] = str(BENCH_DIR)
    os.environ["DATABASE_URL"] = (
        os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{BENCH_DIR / 'history.sqlite3'}"
    )
    os.environ["ALLOWED_HOSTS"] = "testserver"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def populate(total: int, *, fresh: bool) -> Any:
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.utils import timezone

    from dashboard.models import Credential, Job, Membership, Role, Team

    call_command("migrate", verbosity=0)
    team = Team.objects.filter(name=TEAM).first()
    if team is not None and not fresh and Job.objects.filter(team=team).count() == total:
        print(f"Reusing {total:,} jobs in {BENCH_DIR}")
        return team
    if team is not None:
        Job.objects.filter(team=team).delete()
        team.delete()
    team = Team.objects.create(name=TEAM)
    users = []
    for name in USERS:
        user = User.objects.filter(username=name).first() or User.objects.create_user(name)
        Membership.objects.create(team=team, user=user, role=Role.ADMIN)
        users.append(user)
    credential = Credential.objects.create(
        team=team,
        provider="together",
        name="bench",
        secret="bench-secret",
        base_url="http://127.0.0.1:9",
    )
    started = time.perf_counter()
    now = timezone.now()
    jobs = (_job(i, team, credential, users, now - timedelta(seconds=30 * i)) for i in range(total))
    insert_rows(jobs)
    print(f"Created {total:,} jobs in {time.perf_counter() - started:.1f} s")
    return team


def insert_rows(jobs: Iterable[Any]) -> None:
    """One executemany for every job: bulk_create's SQLite batches are a few
    dozen rows each, which makes 100,000 jobs take four times as long."""
    from django.db import connection, transaction

    from dashboard.models import Job

    fields = [f for f in Job._meta.local_concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    table = connection.ops.quote_name(Job._meta.db_table)
    rows = ([f.get_db_prep_save(f.pre_save(job, True), connection) for f in fields] for job in jobs)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


def _job(i: int, team: Any, credential: Any, users: list[Any], created: Any) -> Any:
    from dashboard.models import Job

    status = "failed" if i % 31 == 0 else "cancelled" if i % 47 == 0 else "completed"
    return Job(
        team=team,
        credential=credential,
        credential_name=credential.name,
        provider="together",
        model=("llama-3-8b", "mixtral-8x7b", "qwen-2-72b")[i % 3],
        spec={"model": "m", "max_tokens": 128, "options": {}},
        status=status,
        provider_status=status.upper(),
        error="Provider said: 500 upstream error" if status == "failed" else "",
        progress_total=2,
        **two_prompt_counters(status),
        created_by=users[i % len(users)],
        created_at=created,
        started_at=created + timedelta(seconds=1),
        finished_at=created + timedelta(seconds=4 + i % 7),
    )


def measure(client: Any, url: str, runs: int) -> tuple[float, int, int]:
    """Median milliseconds, SQL queries and status of GET ``url``."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    count = len(queries)  # now: the next request clears the connection's query log
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        client.get(url)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), count, response.status_code


def middle_cursor(team: Any, total: int) -> str:
    """Follow the pages' own cursors (1,000 rows a step) to the middle of the history."""
    from dashboard.core.keyset import cursor_encode, keyset_page
    from dashboard.jobs.history import JobFilters, jobs_for_page

    queryset = jobs_for_page(team=team, filters=JobFilters())
    position = None
    for _ in range(total // 2 // 1000):
        position = keyset_page(queryset, position=position, size=1000).next_position
    return cursor_encode(position) if position else ""


def export(client: Any, url: str) -> tuple[float, int]:
    """Seconds and bytes of a full streamed export."""
    started = time.perf_counter()
    response = client.get(url)
    size = sum(len(chunk) for chunk in response.streaming_content)
    return time.perf_counter() - started, size


def peak_memory(run: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=15, help="timed renders per page")
    parser.add_argument("--fresh", action="store_true", help="recreate the jobs")
    args = parser.parse_args(argv)
    configure()

    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from dashboard.models import Job

    team = populate(args.jobs, fresh=args.fresh)
    client = Client()
    client.force_login(User.objects.get(username=USERS[0]))
    cursor = middle_cursor(team, args.jobs)

    print(f"\n{'what':<44} {'median ms':>10} {'queries':>8}")
    pages = [
        ("history, first page (50 rows)", "/jobs/"),
        ("history, first page (200 rows)", "/jobs/?per_page=200"),
        ("history, middle page (50 rows)", f"/jobs/?cursor={cursor}"),
        ("history, status=failed (3%), first page", "/jobs/?status=failed"),
        (
            "history, created_by filter, middle page",
            f"/jobs/?created_by={USERS[1]}&cursor={cursor}",
        ),
        ("history, text search (scan), first page", "/jobs/?q=report+777"),
    ]
    for label, url in pages:
        runs = 3 if "q=" in url else args.runs
        ms, queries, status = measure(client, url, runs)
        flag = "" if status == 200 else f"  (HTTP {status})"
        print(f"{label:<44} {ms:>10.1f} {queries:>8}{flag}")

    print(
        f"\n{'export (all rows)':<26} {'seconds':>8} {'rows/s':>9} {'MB':>8} {'peak MB':>8} {'queries':>8}"
    )
    rows = Job.objects.filter(team=team).count()
    for fmt in ("csv", "jsonl"):
        url = f"/jobs/export.{fmt}"
        seconds, size = export(client, url)
        with CaptureQueriesContext(connection) as queries:
            peak = peak_memory(lambda url=url: export(client, url))
        count = len(queries)
        print(
            f"{fmt + f' ({rows:,} rows)':<26} {seconds:>8.2f} {rows / seconds:>9,.0f} "
            f"{size / 1e6:>8.1f} {peak / 1e6:>8.1f} {count:>8}"
        )
    print("\npeak MB: tracemalloc peak during a second, traced run of the same export.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
