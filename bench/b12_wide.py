"""Figure 12, a wide credential: a job of 50,000 prompts against the Together
simulator at 2 s a call with ``max_concurrency`` 1,000, through a real
qcluster with the default worker count (4): the job's slices and the
credential's 1,000 slots are shared out over the workers.

Printed: wall time (job saved -> completed) against the ideal, 50,000 / 1,000
x 2 s = 100 s (target at most 1.10 x); the most requests the simulator had at
once; the workers' peak RSS (each, and all together). ``--quick`` runs 10,000
prompts (ideal 20 s).
"""

from __future__ import annotations

import sys
import time

from . import common
from .b9_items import WORKERS, PeakRss
from .common import Config, Row

SIZE = 50_000
LATENCY = 2.0
CONCURRENCY = 1000
LIMIT = 1.10


def run(config: Config, quick: bool) -> list[Row]:
    size = 10_000 if quick else SIZE
    ideal = size / CONCURRENCY * LATENCY
    env = common.prepare(config, "b12-wide")
    from providers.simulators import get_simulator_class

    # In this process: its handler threads only sleep, and its counters say
    # how many requests were in flight at once.
    sim = get_simulator_class("together")(latency=LATENCY, host=common.HOST)
    sim.start()
    try:
        team, user = common.demo_team()
        credential = common.make_credential(
            team, "together", sim.base_url, max_concurrency=CONCURRENCY, name="b12 together"
        )
        with common.cluster(env, workers=WORKERS) as cluster:
            common.warm_up(team, credential, user)
            sim.max_active = 0
            rss = PeakRss(cluster)
            total = TotalRss(cluster)
            started = time.perf_counter()
            job = common.submit(
                team, credential, [f"wide prompt {i}" for i in range(size)], user=user
            )
            status, ended = common.wait_terminal(job.pk, timeout=ideal * 3 + 60, interval=0.1)
            peak, peak_total = rss.finish(), total.finish()
            why = "" if status == "completed" else common.diagnose(job.pk)
    finally:
        sim.stop()
    wall = ended - started
    ratio = wall / ideal
    common.progress(
        f"{size:,} prompts at {LATENCY:.0f} s, {CONCURRENCY:,} wide ({config.label}): {status} "
        f"in {wall:.1f} s = {ratio:.3f} x ideal {ideal:.0f} s; at most {sim.max_active} at once; "
        f"worker peak RSS {peak:.0f} MB, all workers {peak_total:.0f} MB"
    )
    return [
        Row(
            "12",
            f"{size:,} prompts, 2 s, {CONCURRENCY:,} wide, {WORKERS} workers ({config.label})",
            f"<= {LIMIT} x ideal {ideal:.0f} s",
            f"{wall:.1f} s = {ratio:.3f} x; {sim.max_active} in flight at most; worker RSS "
            f"{peak:.0f} MB (all {WORKERS}: {peak_total:.0f} MB)",
            status == "completed" and ratio <= LIMIT,
            note=why,
            data={
                "size": size,
                "wall": wall,
                "ideal": ideal,
                "ratio": ratio,
                "max_active": sim.max_active,
                "worker_rss_mb": peak,
                "workers_rss_mb": peak_total,
            },
        )
    ]


class TotalRss(PeakRss):
    """The workers' RSS added up, at its highest."""

    def sample(self) -> None:
        while not self.stop.wait(0.2):
            now = 0.0
            for pid in self.cluster.worker_pids():
                try:
                    now += common.rss_mb(pid)
                except OSError:
                    continue
            self.peak = max(self.peak, now)


if __name__ == "__main__":
    sys.exit(common.child_main(run, ["sqlite-orm", "pg-redis"]))
