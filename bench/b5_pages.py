"""Figure 5, pages at 100,000 jobs (SQLite): median server time and SQL queries
of the job list (the history's first page), a deep history page (row 50,000,
reached by its keyset cursor), a filtered history page, a job page, its live
partial and the dashboard home.

Requests go through ``django.test.Client`` in this process (the whole
middleware stack, templates included; no network), logged in with
``force_login``. The query count of every page is taken at 1,000 jobs and again
at 100,000: it must be the same (no query per row, no count of the table).
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import timedelta
from typing import Any

from . import common
from .common import Config, Row

TOTAL = 100_000
SMALL = 1_000
LIMIT_MS = 50.0
USERS = ("bench", "bench-bob", "bench-carol")
MODELS = ("llama-3-8b", "mixtral-8x7b", "qwen-2-72b")


def make_jobs(team: Any, credential: Any, users: list[Any], start: int, stop: int) -> None:
    """Jobs ``start`` .. ``stop - 1`` (older as the number grows), in bulk."""
    from django.utils import timezone

    from dashboard.models import Job

    now = timezone.now()
    batch: list[Any] = []
    for i in range(start, stop):
        status = (
            "running"
            if i < 20
            else "failed"
            if i % 31 == 0
            else "cancelled"
            if i % 47 == 0
            else "completed"
        )
        created = now - timedelta(seconds=30 * i + 5)
        batch.append(
            Job(
                team=team,
                credential=credential,
                credential_name=credential.name,
                provider="together",
                model=MODELS[i % 3],
                spec={"model": MODELS[i % 3], "max_tokens": 128},
                status=status,
                provider_status="",
                error="Provider said: 500 upstream error" if status == "failed" else "",
                progress_total=2,
                **common.two_prompt_counters(status),
                created_by=users[i % len(users)],
                created_at=created,
                started_at=created + timedelta(seconds=1),
                finished_at=None if status == "running" else created + timedelta(seconds=4),
            )
        )
        if len(batch) == 5000:
            Job.objects.bulk_create(batch)
            batch = []
    if batch:
        Job.objects.bulk_create(batch)


def detail_job(team: Any, credential: Any, user: Any) -> Any:
    """A finished two-prompt job with a realistic timeline and a log."""
    from dashboard.models import JobEvent

    job = common.submit(team, credential, ["What is 2+2?", "Name a colour."], user=user)
    events = [JobEvent(job=job, message=f"Step {i}: retry, poll or note") for i in range(20)]
    events += [
        JobEvent(job=job, kind="stream", message=f"token {i} ", unit=i % 2) for i in range(20)
    ]
    JobEvent.objects.bulk_create(events)
    common.finish(job, ["4", "Blue"])
    return job


def deep_cursor(team: Any, offset: int) -> str:
    from dashboard.core.keyset import Position, cursor_encode
    from dashboard.models import Job

    row = (
        Job.objects.filter(team=team)
        .order_by("-created_at", "-id")
        .values("created_at", "id")[offset]
    )
    return cursor_encode(Position.of(row))


def pages(team: Any, job: Any, total: int) -> list[tuple[str, str]]:
    from dashboard.models import JobEvent

    last = JobEvent.objects.filter(job=job).order_by("-pk").values_list("pk", flat=True).first()
    return [
        ("dashboard home", "/"),
        ("job list / history, first page (50 rows)", "/jobs/"),
        (
            "history, deep page (the middle row's cursor)",
            f"/jobs/?cursor={deep_cursor(team, total // 2)}",
        ),
        ("history, status=failed, first page", "/jobs/?status=failed"),
        ("job page (2 prompts, 40 events)", f"/jobs/{job.pk}/"),
        ("job live partial", f"/jobs/{job.pk}/live?after={last}&done=2"),
    ]


def count_queries(client: Any, url: str) -> tuple[int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm: template cache, session
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, HTTP_HX_REQUEST="true") if "/live" in url else client.get(url)
    return len(queries), response.status_code


def timed(client: Any, url: str, runs: int) -> float:
    extra = {"HTTP_HX_REQUEST": "true"} if "/live" in url else {}
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        client.get(url, **extra)
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def run(config: Config, quick: bool) -> list[Row]:
    runs = 7 if quick else 15
    common.prepare(config, "b5-pages")
    from django.contrib.auth.models import User
    from django.test import Client

    from dashboard.models import Membership, Role

    team, user = common.demo_team()
    users = [user]
    for name in USERS[1:]:
        other = User.objects.create_user(name)
        Membership.objects.create(team=team, user=other, role=Role.MEMBER)
        users.append(other)
    credential = common.make_credential(team, "together", "http://127.0.0.1:9", name="bench")
    client = Client()
    client.force_login(user)

    make_jobs(team, credential, users, 0, SMALL)
    job = detail_job(team, credential, user)
    small = {label: count_queries(client, url) for label, url in pages(team, job, SMALL + 1)}
    started = time.perf_counter()
    make_jobs(team, credential, users, SMALL, TOTAL)
    common.progress(f"{TOTAL:,} jobs in {time.perf_counter() - started:.1f} s")
    from django.db import connection

    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")

    rows = []
    for label, url in pages(team, job, TOTAL + 1):
        queries, status = count_queries(client, url)
        ms = timed(client, url, runs)
        before = small[label][0]
        ok = status in (200, 286) and ms < LIMIT_MS and queries == before
        common.progress(f"{label}: {ms:.1f} ms, {queries} queries ({before} at {SMALL:,})")
        rows.append(
            Row(
                "5",
                f"Page at 100k jobs: {label}",
                f"< {LIMIT_MS:.0f} ms; queries same as at 1k",
                f"{ms:.1f} ms median of {runs}; {queries} queries ({before} at 1k)"
                + ("" if status in (200, 286) else f"; HTTP {status}"),
                ok,
                data={"ms": ms, "queries": queries, "queries_small": before, "url": url},
            )
        )
    return rows


if __name__ == "__main__":
    sys.exit(common.child_main(run, ["sqlite-orm"]))
