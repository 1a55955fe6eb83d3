"""Figure 14, one job on two machines: a job of 20,000 prompts against the
Together simulator at 20 ms a call (``max_concurrency`` 32), run once by one
qcluster and once by two (PostgreSQL + Redis, each with the default 4
workers): its slices go to every free worker of either cluster.

Printed: the wall time of each (job saved -> completed), their ratio, and how
many slices each cluster's workers finished. Both clusters run on this one
machine here, so they share its cores: the figure shows the second cluster
taking its part of the job; what it gains is what a second machine's cores
would add, which one machine cannot show.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections import Counter
from typing import Any

from . import common
from .b9_items import WORKERS, prompt, start_simulator
from .common import HOST, Config, Row

SIZE = 20_000
CONCURRENCY = 32


def one_run(
    team: Any, credential: Any, user: Any, size: int, clusters: list[Any]
) -> dict[str, Any]:
    from dashboard.models import JobSlice

    started = time.perf_counter()
    job = common.submit(team, credential, [prompt(i) for i in range(size)], user=user)
    status, ended = common.wait_terminal(job.pk, timeout=900, interval=0.05)
    why = "" if status == "completed" else common.diagnose(job.pk)
    pids = [set(cluster.worker_pids()) for cluster in clusters]
    finished = Counter()
    for owner in JobSlice.objects.filter(job_id=job.pk, state="done").values_list(
        "owner", flat=True
    ):
        pid = int(owner.split(":")[-2])
        finished[next((n for n, group in enumerate(pids) if pid in group), -1)] += 1
    return {"status": status, "wall": ended - started, "slices": dict(finished), "why": why}


def run(config: Config, quick: bool) -> list[Row]:
    size = 5_000 if quick else SIZE
    env = common.prepare(config, "b14-two-clusters")
    port = common.free_port()
    sim = start_simulator(port)
    url = f"http://{HOST}:{port}"
    try:
        team, user = common.demo_team()
        credential = common.make_credential(
            team, "together", url, max_concurrency=CONCURRENCY, name="b14 together"
        )
        with common.cluster(env, workers=WORKERS) as first:
            common.warm_up(team, credential, user)
            one = one_run(team, credential, user, size, [first])
            common.progress(
                f"{size:,} prompts, one cluster: {one['status']} in {one['wall']:.2f} s, "
                f"slices per cluster {one['slices']}"
            )
            with contextlib.ExitStack() as stack:
                second = stack.enter_context(
                    common.cluster({**env, "BENCH_NAME": "b14-second"}, workers=WORKERS)
                )
                two = one_run(team, credential, user, size, [first, second])
            common.progress(
                f"{size:,} prompts, two clusters: {two['status']} in {two['wall']:.2f} s, "
                f"slices per cluster {two['slices']}"
            )
    finally:
        common.stop_process(sim)
    ratio = two["wall"] / one["wall"]
    both = all(two["slices"].get(n, 0) > 0 for n in (0, 1))
    ok = one["status"] == two["status"] == "completed" and both and ratio <= 1.0
    return [
        Row(
            "14",
            f"{size:,} prompts, 20 ms, 32 wide: two qclusters vs one ({WORKERS} workers each, "
            f"{config.label})",
            "both clusters take slices; two <= 1.0 x one",
            f"one {one['wall']:.2f} s, two {two['wall']:.2f} s = {ratio:.2f} x; slices finished "
            f"per cluster {two['slices'].get(0, 0)} + {two['slices'].get(1, 0)}",
            ok,
            note=one["why"] or two["why"],
            data={"size": size, "one": one, "two": two, "ratio": ratio},
        )
    ]


if __name__ == "__main__":
    sys.exit(common.child_main(run, ["pg-redis"]))
