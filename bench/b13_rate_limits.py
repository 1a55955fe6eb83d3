"""Figure 13, limits shared by every job: two jobs and a comparison (two
target jobs) on one credential with ``rpm`` 600 against the Together simulator,
through a real qcluster (2 workers).

The provider must never see more than the limit in any 60 s window, plus the
stated burst (``limits.burst``: 3 s of the limit, 30 requests at rpm 600), and
the wall time must be within 10 % of what the limit allows: (calls - burst) /
(rpm / 60). Scaled: 900 calls (about 90 s at 10 a second) rather than several
minutes; ``--quick`` runs 300.
"""

from __future__ import annotations

import sys
import threading
import time
from bisect import bisect_left
from typing import Any

from . import common
from .common import Config, Row

RPM = 600
CALLS = 900
LATENCY = 0.02
CONCURRENCY = 32
LIMIT = 1.10


def run(config: Config, quick: bool) -> list[Row]:
    calls = 300 if quick else CALLS
    env = common.prepare(config, "b13-rate-limits")
    from dashboard.compare.services import Target, comparison_create
    from dashboard.datasets.services import Inputs
    from dashboard.jobs import limits
    from providers import JobSpec
    from providers.simulators import get_simulator_class

    sim = get_simulator_class("together")(latency=LATENCY, host=common.HOST)
    moments: list[float] = []
    lock = threading.Lock()
    dispatch = sim.dispatch

    def recorded(request: Any) -> Any:
        if request.path == "/inference":
            with lock:
                moments.append(time.monotonic())
        return dispatch(request)

    sim.dispatch = recorded  # type: ignore[method-assign]
    sim.start()
    quarter = calls // 4
    try:
        team, user = common.demo_team()
        credential = common.make_credential(
            team, "together", sim.base_url, max_concurrency=CONCURRENCY, requests_per_minute=RPM
        )
        with common.cluster(env, workers=2):
            started = time.perf_counter()
            jobs = [
                common.submit(
                    team, credential, [f"job {n} prompt {i}" for i in range(quarter)], user=user
                )
                for n in range(2)
            ]
            prompts = [f"compared prompt {i}" for i in range(quarter)]
            comparison = comparison_create(
                team=team,
                name="b13",
                user=user,
                inputs=Inputs(prompts=prompts),
                targets=[
                    Target(credential, JobSpec(model=f"{common.MODEL}-{n}", prompts=prompts))
                    for n in range(2)
                ],
            )
            jobs += list(comparison.jobs.all())
            statuses = []
            for job in jobs:
                status, ended = common.wait_terminal(job.pk, timeout=calls / (RPM / 60) * 2 + 60)
                statuses.append(status)
            wall = time.perf_counter() - started
    finally:
        sim.stop()
    burst = limits.burst(RPM)
    moments.sort()
    # The most calls in any 60 s window (or the whole run when shorter).
    worst = 0
    for i, at in enumerate(moments):
        worst = max(worst, bisect_left(moments, at + 60) - i)
    total = len(moments)
    allowed_window = RPM + burst
    ideal = (total - burst) / (RPM / 60)
    ratio = wall / ideal
    ok = (
        statuses == ["completed"] * 4
        and total == 4 * quarter
        and worst <= allowed_window
        and ratio <= LIMIT
    )
    common.progress(
        f"rate limits {config.label}: {statuses} {total} calls in {wall:.1f} s "
        f"(ideal {ideal:.1f}), worst 60 s window {worst}"
    )
    return [
        Row(
            "13",
            f"rpm {RPM} shared by 2 jobs + a comparison, {total} calls ({config.label})",
            f"<= {allowed_window} calls in any 60 s; wall <= {LIMIT} x {ideal:.1f} s",
            f"worst 60 s window {worst} calls; {wall:.1f} s = {ratio:.3f} x the limit's time",
            ok,
            data={"wall": wall, "ratio": ratio, "worst_window": worst, "calls": total},
        )
    ]


if __name__ == "__main__":
    sys.exit(common.child_main(run, ["sqlite-orm", "pg-redis"]))
