"""Figure 8, load: 50 concurrent clients polling job partials for 60 s against
gunicorn (``config.wsgi``, 2 sync workers) on PostgreSQL with the Redis broker.

Each client is one open job page: it polls ``/jobs/<id>/live?after=..&done=..``
with the ``HX-Request`` header and a logged-in session cookie, follows the
cursor each answer carries (as htmx does), and waits 1 s between polls (the
page's ``every 1s``). Fifty jobs are running, and a writer thread appends a log
line to each of them every second, so most answers carry new text. Errors are
answers other than 200 and 286, and failed requests. A short second phase with
no pause between polls shows the capacity.
"""

from __future__ import annotations

import asyncio
import html
import re
import statistics
import sys
import threading
import time
from typing import Any

from . import common
from .common import Config, Row

CLIENTS = 50
PAUSE = 1.0
POLLER = re.compile(r'hx-get="(/jobs/\d+/live\?after=\d+&amp;done=\d+)"')


def make_jobs(team: Any, credential: Any, user: Any) -> list[tuple[int, int]]:
    """Fifty running jobs with a timeline and a log; (job id, last event id)."""
    from django.utils import timezone

    from dashboard.jobs.items import items_create
    from dashboard.models import Job, JobEvent

    now = timezone.now()
    jobs = Job.objects.bulk_create(
        [
            Job(
                team=team,
                credential=credential,
                credential_name=credential.name,
                provider="gridrepublic",
                model=common.MODEL,
                spec={"model": common.MODEL},
                status="running",
                provider_status="running",
                progress_total=1,
                created_by=user,
                created_at=now,
                started_at=now,
            )
            for i in range(CLIENTS)
        ]
    )
    events = []
    for i, job in enumerate(jobs):
        items_create(job, [f"Prompt {i}"])
        events += [JobEvent(job=job, message=f"Event {i}") for i in range(10)]
        events += [JobEvent(job=job, kind="log", message=f"log line {i}\n") for i in range(20)]
    JobEvent.objects.bulk_create(events)
    result = []
    for job in jobs:
        last = JobEvent.objects.filter(job=job).order_by("-pk").values_list("pk", flat=True)[0]
        result.append((job.pk, last))
    return result


class LogWriter(threading.Thread):
    """Appends one log line to every job each second, as a provider's log grows."""

    def __init__(self, job_ids: list[int]) -> None:
        super().__init__(daemon=True)
        self.job_ids = job_ids
        self.stop = threading.Event()
        self.lines = 0

    def run(self) -> None:
        from django.db import connection

        from dashboard.models import JobEvent

        try:
            while not self.stop.wait(1.0):
                JobEvent.objects.bulk_create(
                    [
                        JobEvent(job_id=pk, kind="log", message=f"tick {self.lines}\n")
                        for pk in self.job_ids
                    ]
                )
                self.lines += 1
        finally:
            connection.close()


async def client(
    http: Any, url: str, until: float, pause: float, results: list[tuple[float, int]], offset: float
) -> None:
    # Pages are opened at different moments: spread the first polls over one pause.
    await asyncio.sleep(offset)
    while time.monotonic() < until:
        started = time.perf_counter()
        try:
            response = await http.get(url)
            status = response.status_code
            match = POLLER.search(response.text) if status == 200 else None
            if match:
                url = html.unescape(match.group(1))
        except Exception:
            status = -1
        results.append((time.perf_counter() - started, status))
        if pause:
            await asyncio.sleep(pause)


async def load(
    base: str, cookie: str, jobs: list[tuple[int, int]], seconds: float, pause: float
) -> list[tuple[float, int]]:
    import httpx
    from django.conf import settings

    results: list[tuple[float, int]] = []
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(
        base_url=base,
        cookies={settings.SESSION_COOKIE_NAME: cookie},
        headers={"HX-Request": "true"},
        timeout=10.0,
        limits=limits,
    ) as http:
        until = time.monotonic() + seconds
        await asyncio.gather(
            *(
                client(
                    http,
                    f"/jobs/{pk}/live?after={last}&done=0",
                    until,
                    pause,
                    results,
                    pause * i / len(jobs),
                )
                for i, (pk, last) in enumerate(jobs)
            )
        )
    return results


def summary(results: list[tuple[float, int]], seconds: float) -> dict[str, float]:
    times = sorted(t * 1000 for t, _ in results)
    errors = sum(1 for _, status in results if status not in (200, 286))
    cut = statistics.quantiles(times, n=100) if len(times) >= 2 else times * 99
    return {
        "requests": len(results),
        "errors": errors,
        "rate": len(results) / seconds,
        "p50": statistics.median(times),
        "p95": cut[94],
        "p99": cut[98],
        "max": times[-1],
    }


def run(config: Config, quick: bool) -> list[Row]:
    seconds = 10.0 if quick else 60.0
    burst = 5.0 if quick else 10.0
    env = common.prepare(config, "b8-load")
    team, user = common.demo_team()
    credential = common.make_credential(team, "gridrepublic", "http://127.0.0.1:9")
    jobs = make_jobs(team, credential, user)
    cookie = common.session_cookie(user)
    port = common.free_port()
    base = f"http://{common.HOST}:{port}"
    server = common.start_process(
        [
            common.PYTHON,
            "-m",
            "gunicorn",
            "config.wsgi",
            "--workers",
            "2",
            "--bind",
            f"{common.HOST}:{port}",
            "--timeout",
            "30",
        ],
        env,
        "gunicorn.log",
    )
    writer = LogWriter([pk for pk, _ in jobs])
    try:
        common.wait_http(f"{base}/healthz")
        asyncio.run(load(base, cookie, jobs[:2], 1.0, 0.1))  # warm both workers
        writer.start()
        cpu = time.process_time()
        steady = summary(asyncio.run(load(base, cookie, jobs, seconds, PAUSE)), seconds)
        steady["client_cpu_ms"] = (time.process_time() - cpu) * 1000 / max(1, steady["requests"])
        common.progress(f"load, 1 poll/s per client: {fmt(steady)}")
        cpu = time.process_time()
        flat = summary(asyncio.run(load(base, cookie, jobs, burst, 0.0)), burst)
        flat["client_cpu_ms"] = (time.process_time() - cpu) * 1000 / max(1, flat["requests"])
        common.progress(f"load, no pause: {fmt(flat)}")
    finally:
        writer.stop.set()
        writer.join(timeout=5)
        common.stop_process(server)
    ok = steady["errors"] == 0 and flat["errors"] == 0 and steady["requests"] > 0
    return [
        Row(
            "8",
            f"Load: {CLIENTS} clients polling job partials {seconds:.0f} s (gunicorn -w 2, "
            f"{config.label})",
            "report p50/p95; zero errors",
            f"p50 {steady['p50']:.1f} ms, p95 {steady['p95']:.1f} ms, {steady['requests']:,} "
            f"requests ({steady['rate']:.0f}/s), {steady['errors']} errors; no pause: "
            f"{flat['rate']:.0f}/s, p95 {flat['p95']:.0f} ms, {flat['errors']} errors",
            ok,
            data={"steady": steady, "no_pause": flat, "log_lines": writer.lines},
        )
    ]


def fmt(stats: dict[str, float]) -> str:
    return (
        f"{stats['requests']:,} requests, {stats['rate']:.0f}/s, p50 {stats['p50']:.1f} ms, "
        f"p95 {stats['p95']:.1f} ms, p99 {stats['p99']:.1f} ms, max {stats['max']:.0f} ms, "
        f"{stats['errors']} errors; load generator {stats.get('client_cpu_ms', 0):.1f} ms CPU/request"
    )


if __name__ == "__main__":
    sys.exit(common.child_main(run, ["pg-redis"]))
