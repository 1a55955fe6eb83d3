"""Figure 7, worker memory: the RSS of each qcluster worker process after 100
jobs and after 10,000 (``VmRSS`` from ``/proc``). Target: growth within 50 MB.

Tiny one-prompt Together jobs against a zero-latency simulator go through the
real path (``job_create``, its on_commit enqueue, a real qcluster with two
workers). django-q2 recycles a worker every 500 tasks by default, which would
hide a leak, so the cluster here is ``manage.py qcluster`` with recycling off
(``python -m bench.common qcluster`` with ``BENCH_NO_RECYCLE=1``): one process
per worker for all the jobs. Jobs are created in waves so the queue stays short, and the RSS
is sampled every 1,000 jobs.

On this 2-core machine the cluster finishes about 30 tiny jobs a second, so
10,000 jobs take 5-6 minutes; django-q2's monitor spends about as much CPU per
job as the workers (with ``save_limit`` 1000 it loads up to 1,000 saved results
for every result it stores). The run is time-boxed (360 s, or
``BENCH_MEMORY_SECONDS``; ``python -m bench --full`` lifts it); if it stops
short of 10,000 the figure is the growth measured so far plus a linear
projection to 10,000 from the slope of the second half. The CPU time of the
cluster's processes per job is printed too (workers, monitor, pusher).
"""

from __future__ import annotations

import os
import sys
import time

from . import common
from .common import Config, Row

FIRST = 100
TOTAL = 10_000
LIMIT_MB = 50.0
WAVE = 250
CHECKPOINT = 1_000


def time_box(quick: bool) -> float:
    if os.environ.get("BENCH_FULL") == "1":
        return 1800.0
    return float(os.environ.get("BENCH_MEMORY_SECONDS") or (60 if quick else 360))


def run(config: Config, quick: bool) -> list[Row]:
    total = TOTAL
    budget = time_box(quick)
    env = common.prepare(config, "b7-memory")
    from providers.simulators import get_simulator_class

    sim = get_simulator_class("together")(latency=0.0, host=common.HOST)
    sim.start()
    samples: list[tuple[int, dict[int, float]]] = []
    try:
        team, user = common.demo_team()
        credential = common.make_credential(team, "together", sim.base_url, max_concurrency=4)
        with common.cluster(env, workers=2, recycle=False) as workers:
            pids = workers.worker_pids()
            samples.append((0, rss(pids)))
            started = time.perf_counter()
            created = submit_wave(team, credential, user, FIRST, 0)
            wait_done(created, time.monotonic() + 60)
            samples.append((FIRST, rss(pids)))
            deadline = time.monotonic() + budget
            next_mark = CHECKPOINT
            done = FIRST
            while done < total and time.monotonic() < deadline:
                if created < total and created - done < 2 * WAVE:
                    created += submit_wave(
                        team, credential, user, min(WAVE, total - created), created
                    )
                time.sleep(0.1)
                done = finished_count()
                if done >= next_mark:
                    samples.append((done, rss(pids)))
                    common.progress(f"{done:,} jobs: {fmt(samples[-1][1])} MB")
                    next_mark += CHECKPOINT
            done = finished_count()
            seconds = time.perf_counter() - started
            if samples[-1][0] != done:
                samples.append((done, rss(pids)))
            same_workers = sorted(workers.worker_pids()) == sorted(pids)
            cpu = workers.cpu_seconds()
    finally:
        sim.stop()
    row = figure(samples, pids, done, total, seconds, same_workers, budget)
    tasks = max(1, done)
    common.progress(
        "cluster CPU per job: "
        + ", ".join(f"{role} {used * 1000 / tasks:.1f} ms" for role, used in sorted(cpu.items()))
    )
    row.data["cpu_ms_per_job"] = {role: used * 1000 / tasks for role, used in cpu.items()}
    return [row]


def figure(
    samples: list[tuple[int, dict[int, float]]],
    pids: list[int],
    done: int,
    total: int,
    seconds: float,
    same_workers: bool,
    budget: float,
) -> Row:
    first = samples[1][1]
    last_n, last = samples[-1]
    growth = max(last[pid] - first[pid] for pid in pids)
    # Slope over the second half of the run (after warm-up caches have filled).
    half = [s for s in samples if s[0] >= last_n / 2] or samples[-2:]
    mid_n, mid = half[0]
    slope = (
        max((last[pid] - mid[pid]) / (last_n - mid_n) * 1000 for pid in pids)
        if last_n > mid_n
        else 0.0
    )
    rate = done / seconds if seconds else 0.0
    projected = growth + max(0.0, slope) * (total - last_n) / 1000
    complete = done >= total
    ok = same_workers and growth <= LIMIT_MB and (complete or projected <= LIMIT_MB)
    per_worker = ", ".join(f"{first[pid]:.0f} -> {last[pid]:.0f}" for pid in pids)
    measured = f"+{growth:.1f} MB worst after {done:,} jobs ({per_worker} MB)"
    if not complete:
        measured += f"; slope {slope:+.2f} MB/1k jobs -> +{projected:.1f} MB projected at {total:,}"
    measured += f"; {rate:.0f} jobs/s"
    note = ""
    if not complete:
        note = (
            f"Time-boxed at {budget:.0f} s: {done:,} of {total:,} jobs ({rate:.0f} jobs/s on this "
            f"machine; all {total:,} take ~{total / max(rate, 0.1) / 60:.0f} min, run "
            "`python -m bench --only 7 --full`). The 10,000 figure is projected."
        )
    if not same_workers:
        note = "A worker process was replaced during the run. " + note
    common.progress(
        "memory samples: "
        + "; ".join(f"{n:,}: {fmt(values)}" for n, values in samples)
        + f" MB; {seconds:.0f} s"
    )
    return Row(
        "7",
        f"Worker RSS after {FIRST} vs {total:,} jobs (2 workers, no recycling)",
        f"growth <= {LIMIT_MB:.0f} MB",
        measured,
        ok,
        note=note,
        data={"samples": samples, "seconds": seconds, "slope": slope, "projected": projected},
    )


def rss(pids: list[int]) -> dict[int, float]:
    return {pid: common.rss_mb(pid) for pid in pids}


def fmt(values: dict[int, float]) -> str:
    return "/".join(f"{value:.1f}" for value in values.values())


def submit_wave(team: object, credential: object, user: object, count: int, start: int) -> int:
    for i in range(start, start + count):
        common.submit(team, credential, [f"tiny {i}"], user=user, max_tokens=4)
    return count


def finished_count() -> int:
    from dashboard.models import Job
    from dashboard.status import JOB_TERMINAL

    return Job.objects.filter(status__in=JOB_TERMINAL).count()


def wait_done(expected: int, deadline: float) -> int:
    while True:
        done = finished_count()
        if done >= expected or time.monotonic() > deadline:
            return done
        time.sleep(0.25)


if __name__ == "__main__":
    sys.exit(common.child_main(run, ["sqlite-orm", "pg-redis"]))
