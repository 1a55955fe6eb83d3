"""Figure 1, batch fan-out: 1,000 prompts to a synchronous provider (Together
simulator, 100 ms per call) on one credential with ``max_concurrency`` 16.

The ideal is 1,000 x 0.1 s / 16 = 6.25 s; the target is at most 1.25 x that from
``job_create`` to the row's ``status = completed`` (polled every 20 ms), through
a real qcluster. Also printed: the database's own ``finished_at - created_at``
and the most calls the simulator saw at once (the limit must hold).
"""

from __future__ import annotations

import sys
import time

from . import common
from .common import Config, Row

PROMPTS = 1000
LATENCY = 0.1
CONCURRENCY = 16
LIMIT = 1.25


def run(config: Config, quick: bool) -> list[Row]:
    prompts = 320 if quick else PROMPTS
    env = common.prepare(config, "b1-fanout")
    from dashboard.models import Job
    from providers.simulators import get_simulator_class

    sim = get_simulator_class("together")(latency=LATENCY, host=common.HOST)
    sim.start()
    try:
        team, user = common.demo_team()
        credential = common.make_credential(
            team, "together", sim.base_url, max_concurrency=CONCURRENCY
        )
        with common.cluster(env, workers=2):
            common.warm_up(team, credential, user)
            sim.max_active = 0
            started = time.perf_counter()
            job = common.submit(
                team, credential, [f"Prompt {i}: say something" for i in range(prompts)], user=user
            )
            status, ended = common.wait_terminal(job.pk, timeout=60)
            why = "" if status == "completed" else common.diagnose(job.pk)
        wall = ended - started
        job = Job.objects.get(pk=job.pk)
        db_seconds = (
            (job.finished_at - job.created_at).total_seconds() if job.finished_at else float("nan")
        )
    finally:
        sim.stop()
    ideal = prompts * LATENCY / CONCURRENCY
    ratio = wall / ideal
    ok = status == "completed" and ratio <= LIMIT and sim.max_active <= CONCURRENCY
    common.progress(
        f"fan-out {config.label}: {status} in {wall:.2f} s (ideal {ideal:.2f}), "
        f"peak {sim.max_active} concurrent"
    )
    return [
        Row(
            "1",
            f"Batch fan-out, {prompts:,} prompts ({config.label})",
            f"<= {LIMIT} x {ideal:.2f} s = {LIMIT * ideal:.2f} s",
            f"{wall:.2f} s = {ratio:.3f} x ideal (DB {db_seconds:.2f} s; "
            f"peak {sim.max_active}/{CONCURRENCY} calls)",
            ok,
            note=why,
            data={"wall": wall, "ratio": ratio, "db": db_seconds, "peak": sim.max_active},
        )
    ]


if __name__ == "__main__":
    sys.exit(common.child_main(run, ["sqlite-orm", "pg-redis"]))
