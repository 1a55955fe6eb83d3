"""Figure 4, live log cost: a GridRepublic job whose log grows to 1 MB.

The simulator (a subclass here whose log is 1 MiB of plain text, grown in
proportion to the running time on a clock the benchmark moves) answers every
status request with the whole log so far, as GridRepublic does. Each step is one
engine poll round (``due_units`` + ``poll_round``, in this process) and then one
poll of the job page's ``job_live`` partial through ``django.test.Client``,
following the cursor the previous answer carried, as htmx does.

Measured per poll: bytes of the partial sent to the browser against the new
log text, and bytes written to the database (the text of the INSERT and UPDATE
statements of the round, parameters included) against the same delta; and the
total of the stored log events against the final log size.
"""

from __future__ import annotations

import html
import re
import sys
from datetime import timedelta
from typing import Any

from . import common
from .common import Config, Row

LOG_BYTES = 1 << 20
STEP = 100.0  # simulator seconds: queued for STEP, running for 2 x STEP
#: Bytes a poll may add on top of the new text (status block, markup, timeline).
OVERHEAD_LIMIT = 8 * 1024
#: The job page's poller: the live partial's URL with its cursor (``after``,
#: ``since`` and the items page's bounds), which each answer carries on.
POLLER = re.compile(r'id="job-poller" hx-get="(/jobs/\d+/live\?[^"]*)"')


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def log_text(size: int) -> str:
    """Plain ASCII lines (nothing HTML would escape), exactly ``size`` bytes."""
    lines = []
    total = 0
    step = 0
    while total < size:
        line = f"step {step:07d}: loss {1 / (step + 1):.6f} tokens {step * 37 % 99991:05d} ok\n"
        lines.append(line)
        total += len(line)
        step += 1
    return "".join(lines)[:size]


def big_log_simulator(size: int) -> type:
    from providers.simulators.gridrepublic import GridRepublicSimulator

    text = log_text(size)

    class BigLogGridRepublic(GridRepublicSimulator):
        """GridRepublic whose every job logs ``size`` bytes while it runs."""

        def _log(self, job: Any, status: str, ran: float) -> str:
            if status == "queued":
                return ""
            if status == "running":
                return text[: int(len(text) * ran / (2 * self.step_seconds))]
            return text

    return BigLogGridRepublic


def run(config: Config, quick: bool) -> list[Row]:
    polls = 20 if quick else 50
    common.prepare(config, "b4-livelog")
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from dashboard.core.connect import build_provider
    from dashboard.jobs.poller import due_units, poll_round
    from dashboard.models import Job, JobEvent, JobUnit

    clock = Clock()
    sim = big_log_simulator(LOG_BYTES)(step_seconds=STEP, clock=clock, host=common.HOST)
    sim.start()
    samples: list[dict[str, Any]] = []
    try:
        team, user = common.demo_team()
        credential = common.make_credential(team, "gridrepublic", sim.base_url)
        [job_id] = common.submit_async_in_process(team, credential, [["Train for a while"]])
        client = Client()
        client.force_login(user)
        page = client.get(f"/jobs/{job_id}/")
        match = POLLER.search(page.content.decode())
        if page.status_code != 200 or match is None:
            raise RuntimeError(f"job page: HTTP {page.status_code}, no poller found")
        live_url = html.unescape(match.group(1))
        provider = build_provider(credential)
        last_event = JobEvent.objects.filter(job_id=job_id).order_by("-pk").first()
        last_event_id = last_event.pk if last_event else 0
        with provider:
            # Queued for STEP, then `polls` rounds across the running time, then finished.
            times = [STEP / 2] + [STEP + 2 * STEP * (i + 1) / polls for i in range(polls)]
            times += [3 * STEP + 1]
            for moment in times:
                clock.now = moment
                before = JobUnit.objects.get(job_id=job_id).log_length
                with CaptureQueriesContext(connection) as queries:
                    units = due_units(credential.pk, timezone.now() + timedelta(days=1))
                    poll_round(provider, units, credential)
                written = sum(
                    len(q["sql"])
                    for q in queries.captured_queries
                    if q["sql"].startswith(("INSERT", "UPDATE"))
                )
                log_length = JobUnit.objects.get(job_id=job_id).log_length
                new_events = list(
                    JobEvent.objects.filter(job_id=job_id, pk__gt=last_event_id).values_list(
                        "pk", "kind", "message"
                    )
                )
                if new_events:
                    last_event_id = new_events[-1][0]
                stored_log = sum(len(m) for _, kind, m in new_events if kind == "log")
                response = client.get(live_url, HTTP_HX_REQUEST="true")
                body = response.content.decode()
                samples.append(
                    {
                        "delta": log_length - before,
                        "log": log_length,
                        "stored": stored_log,
                        "written": written,
                        "sent": len(response.content),
                        "status": response.status_code,
                    }
                )
                match = POLLER.search(body)
                if response.status_code != 200 or match is None:
                    break
                live_url = html.unescape(match.group(1))
        job = Job.objects.get(pk=job_id)
    finally:
        sim.stop()

    final_log = samples[-1]["log"]
    running = [s for s in samples[:-1] if s["delta"] > 0]
    last = samples[-1]
    stored_total = sum(s["stored"] for s in samples)
    sent_running = sum(s["sent"] for s in running)
    delta_running = sum(s["delta"] for s in running)
    send_over = [s["sent"] - s["delta"] for s in running]
    write_over = [s["written"] - s["delta"] for s in running]
    common.progress(
        f"live log: {len(samples)} polls, job {job.status}, log {final_log:,} B, stored "
        f"{stored_total:,} B; send overhead {min(send_over)}..{max(send_over)} B, "
        f"write overhead {min(write_over)}..{max(write_over)} B; final poll sent "
        f"{last['sent']:,} B (HTTP {last['status']}), wrote {last['written']:,} B"
    )
    # The overhead must not grow with the log: compare the first and last quarter.
    quarter = max(1, len(running) // 4)
    first_q = sum(send_over[:quarter]) / quarter
    last_q = sum(send_over[-quarter:]) / quarter
    send_ok = (
        job.status == "completed"
        and final_log == LOG_BYTES
        and max(send_over) <= OVERHEAD_LIMIT
        and last_q <= first_q + 256
    )
    write_ok = (
        stored_total == final_log
        and max(write_over) <= OVERHEAD_LIMIT
        and write_over[-1] <= write_over[0] + 256
    )
    biggest = max(running, key=lambda s: s["log"])
    return [
        Row(
            "4",
            f"Live log to 1 MiB: bytes sent per poll ({len(running)} running polls)",
            "the new text + a constant (not the whole log)",
            f"{sent_running / 1e6:.2f} MB sent for {delta_running / 1e6:.2f} MB of new log; "
            f"+{min(send_over)}..{max(send_over)} B/poll (first/last quarter "
            f"{first_q:.0f}/{last_q:.0f}); at {biggest['log'] / 1e6:.2f} MB: {biggest['sent']:,} B",
            send_ok,
            note=(
                f"The final poll (HTTP {last['status']}) also carries the job's output once: "
                f"{last['sent'] / 1e6:.2f} MB, since GridRepublic's output is the whole log."
            ),
            data={"samples": samples},
        ),
        Row(
            "4",
            "Live log to 1 MiB: bytes written to the database per poll",
            "the delta (+ a constant)",
            f"log events {stored_total:,} B = log {final_log:,} B; SQL written per poll "
            f"= delta +{min(write_over)}..{max(write_over)} B",
            write_ok,
            note=(
                f"The completing round writes the output into the job row once "
                f"({last['written'] / 1e6:.2f} MB)."
            ),
        ),
    ]


if __name__ == "__main__":
    sys.exit(common.child_main(run, ["sqlite-orm"]))
