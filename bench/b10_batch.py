"""Figure 10, batch mode (issue #20): a 50,000-row batch job of prompts of
about 800 characters on each batch simulator, in a process of its own
(``step_seconds`` 1; result lines in another order than the requests):
OpenAI's files and batches in the OpenAI-compatible simulator (the input file
uploaded, then the create), and Anthropic's Message Batches (the requests
inline in the create). One chunk each: OpenAI takes 50,000 requests a batch,
Anthropic 100,000.

(a) Job saved -> its remote batch created, through a real qcluster
    (2 workers): ``job_create`` (its on_commit enqueue), then the bench polls
    the chunk rows every 50 ms until every chunk is live. Baseline in the same
    run: a bare httpx client sending the same requests (built from the
    prompts in memory) and creating the batch.
(b) Worker peak RSS while building and sending the input and while reading
    the 50,000-line result file, target at most +100 MB over the worker's RSS
    just before the step. Measured in a fresh process of its own per step
    (``python -m bench.b10_batch step ...``: Django set up, the provider
    client opened once, then the peak RSS mark reset through
    ``/proc/self/clear_refs`` and read back as ``VmHWM`` after the step),
    which runs the worker's own task functions in-process:
    ``worker.advance_job`` (cut, lines, upload, create) and
    ``batch.batch_poll`` (status, results read and written, the job ended).
    A qcluster worker would carry what its earlier tasks left, hiding or
    adding megabytes; this process carries nothing but the step.
(c) Rows ingested per second from the result file: the ``batch_poll`` step
    of (b), from its call to its return (the status check, the file streamed
    from the simulator, 50 writes of 1,000 items, the job ended), target
    ≥ 5,000 rows/s; 500 rows checked against their prompts' answers.
    Baseline in the same run: a bare httpx stream of the same file with
    ``json.loads`` per line.
(d) SQL queries per poll round (``batch_poll`` of every live chunk, in this
    process under ``CaptureQueriesContext``) at 10 and then 100 live chunks
    (OpenAI jobs of one request per chunk on an in-process simulator whose
    clock the bench holds in ``in_progress``; the poll path is the same for
    both providers), target: the same queries per chunk at 100 as at 10; and
    the minute sweep's queries while every chunk waits (none due), the same
    at 10 and 100.
"""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from . import common
from .b9_items import PeakRss
from .common import HOST, PYTHON, ROOT, Config, Row

ROWS = 50_000
PROMPT_CHARS = 800
STEP = 1.0  # seconds per simulated batch phase
RSS_LIMIT = 100.0  # MB over the RSS before the step
INGEST_TARGET = 5_000  # rows/s
#: Live chunks of the two poll rounds of (d).
CHUNKS = (10, 100)


def prompt(i: int) -> str:
    return (f"Row {i}: " + "lorem ipsum " * PROMPT_CHARS)[:PROMPT_CHARS]


def start_simulator(slug: str, port: int) -> subprocess.Popen[bytes]:
    process = common.start_process(
        [PYTHON, "-m", "bench.simserver", slug, "0", str(port), f"step_seconds={STEP}"],
        {**os.environ},
        f"b10-simulator-{slug}.log",
    )
    common.wait_http(f"http://{HOST}:{port}/v1/models", timeout=30)
    return process


class Remote:
    """One provider's batch API on its simulator, and a bare httpx client of it
    (the baselines): OpenAI's files and batches."""

    slug = "openai"
    label = "OpenAI"
    model = "gpt-bench"

    def __init__(self, url: str) -> None:
        self.url = url

    def client(self) -> Any:
        import httpx

        from providers.simulators import DEFAULT_TOKEN

        headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def line(self, i: int, text: str) -> dict[str, Any]:
        body = {"model": self.model, "messages": [{"role": "user", "content": text}]}
        return {
            "custom_id": f"bare-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": body,
        }

    def lines(self, prompts: list[str]) -> list[bytes]:
        return [
            json.dumps(self.line(i, text), ensure_ascii=False, separators=(",", ":")).encode()
            for i, text in enumerate(prompts)
        ]

    def bare_create(self, prompts: list[str]) -> float:
        """Seconds a bare client takes to send the same requests as a batch:
        lines built from the prompts in memory, sent, the batch created."""
        started = time.perf_counter()
        content = b"".join(line + b"\n" for line in self.lines(prompts))
        with self.client() as client:
            file = client.post(
                "/v1/files",
                data={"purpose": "batch"},
                files={"file": ("batch.jsonl", content, "application/jsonl")},
            ).raise_for_status()
            client.post(
                "/v1/batches",
                json={
                    "input_file_id": file.json()["id"],
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                },
            ).raise_for_status()
        return time.perf_counter() - started

    def wait_ended(self, remote_id: str, timeout: float = 180) -> str:
        """Ask the simulator until the batch has ended (its results then made);
        the path of its results."""
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                body = client.get(f"/v1/batches/{remote_id}").raise_for_status().json()
                if body["status"] == "completed":
                    return f"/v1/files/{body['output_file_id']}/content"
                if time.monotonic() > deadline:
                    raise RuntimeError(f"batch {remote_id} still {body['status']}")
                time.sleep(0.5)

    def bare_read(self, path: str) -> tuple[int, float]:
        """(lines, seconds) of a bare stream of a result file, ``json.loads`` per line."""
        started = time.perf_counter()
        lines = 0
        with self.client() as client, client.stream("GET", path) as response:
            for line in response.iter_lines():
                if line:
                    json.loads(line)
                    lines += 1
        return lines, time.perf_counter() - started


class AnthropicRemote(Remote):
    """Anthropic's Message Batches: the requests inline in the create."""

    slug = "anthropic"
    label = "Anthropic"
    model = "claude-haiku-4-5"

    def client(self) -> Any:
        import httpx

        from providers.simulators import DEFAULT_TOKEN

        headers = {"x-api-key": DEFAULT_TOKEN, "anthropic-version": "2023-06-01"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)

    def line(self, i: int, text: str) -> dict[str, Any]:
        params = {
            "model": self.model,
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": text}],
        }
        return {"custom_id": f"bare-{i}", "params": params}

    def bare_create(self, prompts: list[str]) -> float:
        started = time.perf_counter()
        content = b'{"requests":[' + b",".join(self.lines(prompts)) + b"]}"
        with self.client() as client:
            client.post(
                "/v1/messages/batches",
                content=content,
                headers={"Content-Type": "application/json"},
            ).raise_for_status()
        return time.perf_counter() - started

    def wait_ended(self, remote_id: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while True:
                path = f"/v1/messages/batches/{remote_id}"
                body = client.get(path).raise_for_status().json()
                if body["processing_status"] == "ended":
                    return f"{path}/results"
                if time.monotonic() > deadline:
                    raise RuntimeError(f"batch {remote_id} still {body['processing_status']}")
                time.sleep(0.5)


def batch_job(team: Any, credential: Any, prompts: list[str], model: str, **spec: Any) -> Any:
    from dashboard.jobs.services import job_create
    from providers import JobSpec

    return job_create(
        team=team,
        credential=credential,
        spec=JobSpec(prompts=prompts, model=model, **spec),
        mode="batch",
    )


def wait_created(job_id: int, timeout: float) -> tuple[str, float]:
    """Poll the job's chunks every 50 ms until none is pending or submitting;
    ("live", perf_counter) when every one is live, else what they are."""
    from dashboard.models import BatchChunk

    deadline = time.perf_counter() + timeout
    while True:
        states = list(BatchChunk.objects.filter(job_id=job_id).values_list("state", flat=True))
        now = time.perf_counter()
        if states and not {"pending", "submitting"} & set(states):
            return ("live" if set(states) == {"live"} else ",".join(sorted(states))), now
        if now > deadline:
            return f"timeout ({states or 'not cut'})", now
        time.sleep(0.05)


def run_step(kind: str, pk: int) -> dict[str, Any]:
    """One worker step in a fresh process (see :func:`_step`)."""
    result = subprocess.run(
        [PYTHON, "-m", "bench.b10_batch", "step", kind, str(pk)],
        cwd=ROOT,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["(nothing on stderr)"]
        common.detail(result.stderr)
        raise RuntimeError(f"the {kind} step failed: {lines[-1]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def check_outputs(job_id: int, n: int, model: str) -> str:
    """'' when the job completed with every row's own output (a sample of 500
    rows checked against the simulator's deterministic answer), else why not."""
    from dashboard.models import Item, Job
    from providers.simulators import completion_text

    job = Job.objects.get(pk=job_id)
    if job.status != "completed" or job.items_completed != n:
        return (
            f"job {job.status}, {job.items_completed} of {n} completed: {common.diagnose(job_id)}"
        )
    sample = random.Random(job_id).sample(range(n), min(500, n))
    for item in Item.objects.filter(job_id=job_id, index__in=sample).only(
        "index", "input", "output"
    ):
        if item.output != completion_text(model, item.input).strip():
            return f"item {item.index}: output is not its prompt's answer"
    return ""


def rss_row(what: str, step: dict[str, Any], note: str = "") -> Row:
    grew = step["peak_mb"] - step["before_mb"]
    return Row(
        "10",
        what,
        f"≤ +{RSS_LIMIT:.0f} MB over the RSS before",
        f"peak {step['peak_mb']:.0f} MB, before {step['before_mb']:.0f} MB: {grew:+.0f} MB",
        grew <= RSS_LIMIT,
        note=note,
        data=step,
    )


# --- (d) SQL per poll round ------------------------------------------------------------------


class HeldClock:
    """The in-process simulator's clock, moved by the bench only."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def poll_round(chunk_ids: list[int]) -> list[int]:
    """``batch_poll`` of every chunk, each due; the queries each one ran."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from dashboard.core import clock
    from dashboard.jobs import batch
    from dashboard.models import BatchChunk

    BatchChunk.objects.filter(pk__in=chunk_ids).update(
        next_poll_at=clock.now() - timedelta(seconds=1)
    )
    counts = []
    for chunk_id in chunk_ids:
        with CaptureQueriesContext(connection) as captured:
            outcome = batch.batch_poll(chunk_id)
        if outcome != "polled":
            raise RuntimeError(f"chunk {chunk_id}: poll gave {outcome!r}, not 'polled'")
        counts.append(len(captured.captured_queries))
    return counts


def sweep_queries() -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from dashboard.jobs.sweep import sweep

    with CaptureQueriesContext(connection) as captured:
        counts = sweep()
    if counts["batches"]:
        raise RuntimeError(f"the sweep nudged {counts['batches']} chunk(s) that were not due")
    return len(captured.captured_queries)


def poll_rounds(team: Any) -> list[Row]:
    from dashboard.jobs import worker
    from dashboard.models import BatchChunk
    from providers.simulators import get_simulator_class

    held = HeldClock()
    # Phases of 100 s on the held clock: each round moves it 120 s, so every
    # batch is in progress at both rounds (validated, not yet finalizing).
    sim = get_simulator_class("openai")(host=HOST, step_seconds=100.0, clock=held)
    sim.start()
    results: dict[int, dict[str, Any]] = {}
    try:
        credential = common.make_credential(team, "openai", sim.base_url, name="b10 polls")
        live: list[int] = []
        for target in CHUNKS:
            more = target - len(live)
            job = batch_job(
                team,
                credential,
                [f"poll row {i}" for i in range(more)],
                Remote.model,
                options={"batch_max_requests": 1},
            )
            outcome = worker.advance_job(job.pk)
            new = list(
                BatchChunk.objects.filter(job_id=job.pk, state="live").values_list("pk", flat=True)
            )
            if outcome != "submitted" or len(new) != more:
                raise RuntimeError(f"{more} chunks: {outcome}, {len(new)} live")
            live += new
            held.now += 120
            changed = poll_round(live)  # the new chunks' status word changes: an event each
            steady = poll_round(live)
            results[target] = {
                "first_round": changed,
                "steady_round": steady,
                "sweep_waiting": sweep_queries(),
            }
            common.progress(
                f"{target} live chunks: round queries {sum(changed)} (the new chunks' status "
                f"changed), {sum(steady)} steady (per chunk {sorted(set(steady))}); sweep "
                f"while waiting {results[target]['sweep_waiting']}"
            )
    finally:
        sim.stop()
    small, large = (results[n] for n in CHUNKS)
    per_small = sorted(set(small["steady_round"]))
    per_large = sorted(set(large["steady_round"]))
    ok = per_small == per_large and len(per_large) == 1
    return [
        Row(
            "10",
            "SQL queries per poll round (batch_poll of every live chunk)",
            f"per chunk the same at {CHUNKS[1]} as at {CHUNKS[0]} live chunks",
            f"{CHUNKS[0]} chunks: {sum(small['steady_round'])} a round "
            f"({'/'.join(map(str, per_small))} a chunk); {CHUNKS[1]} chunks: "
            f"{sum(large['steady_round'])} a round ({'/'.join(map(str, per_large))} a chunk); "
            f"a round where the status word changes "
            f"{sum(small['first_round'])} / {sum(large['first_round'])}",
            ok,
            data=results,
        ),
        Row(
            "10",
            "SQL of the minute sweep while every chunk waits (none due)",
            f"the same at {CHUNKS[0]} and {CHUNKS[1]} live chunks",
            f"{small['sweep_waiting']} at {CHUNKS[0]}, {large['sweep_waiting']} at {CHUNKS[1]}",
            small["sweep_waiting"] == large["sweep_waiting"],
            data={n: results[n]["sweep_waiting"] for n in CHUNKS},
        ),
    ]


# --- the figure --------------------------------------------------------------------------------


def saved_to_created(
    config: Config, env: dict[str, str], remote: Remote, team: Any, credential: Any, n: int
) -> Row:
    """(a), through a real qcluster; the bare client first."""
    from dashboard.models import BatchChunk

    prompts = [prompt(i) for i in range(n)]
    bare = remote.bare_create(prompts)
    with common.cluster(env, workers=2) as cluster:
        warm = batch_job(team, credential, ["warm-up"], remote.model)
        status, _ = wait_created(warm.pk, timeout=60)
        if status != "live":
            raise RuntimeError(f"warm-up batch job: {status}: {common.diagnose(warm.pk)}")
        rss = PeakRss(cluster)
        before = max(common.rss_mb(pid) for pid in cluster.worker_pids())
        started = time.perf_counter()
        job = batch_job(team, credential, prompts, remote.model)
        saved = time.perf_counter()
        status, created = wait_created(job.pk, timeout=300)
        peak = rss.finish()
    chunks = BatchChunk.objects.filter(job_id=job.pk).count()
    seconds = created - saved
    common.progress(
        f"{remote.label} {config.label}: {n:,} rows saved in {saved - started:.2f} s, batch "
        f"created {seconds:.2f} s later ({chunks} chunk(s), {status}); bare client "
        f"{bare:.2f} s; qcluster workers' RSS {before:.0f} MB before, peak {peak:.0f} MB "
        "(sampled)"
    )
    return Row(
        "10",
        f"{remote.label}, {n:,}-row batch job: saved → remote batch created ({config.label})",
        "none set (a bare client's time beside it)",
        f"{seconds:.2f} s ({chunks} chunk, real qcluster; saving the job "
        f"{saved - started:.2f} s); a bare httpx client sending the same lines "
        f"{bare:.2f} s = {seconds / bare:.2f} x",
        None if status == "live" else False,
        note="" if status == "live" else common.diagnose(job.pk),
        data={
            "saved_to_created_s": seconds,
            "save_s": saved - started,
            "bare_s": bare,
            "chunks": chunks,
            "status": status,
            "worker_rss_before_mb": before,
            "worker_rss_peak_sampled_mb": peak,
        },
    )


def build_and_ingest(
    config: Config, remote: Remote, team: Any, credential: Any, n: int
) -> list[Row]:
    """(b) and (c): the worker's steps, each in a fresh process."""
    from dashboard.models import BatchChunk

    label = f"{remote.label}, {config.label}"
    job = batch_job(team, credential, [prompt(i) for i in range(n)], remote.model)
    build = run_step("build", job.pk)
    common.progress(
        f"{label}: build + send + create of {n:,} requests in {build['seconds']:.2f} s, "
        f"RSS {build['before_mb']:.0f} MB before, peak {build['peak_mb']:.0f} MB"
    )
    if build["outcome"] != "submitted":
        raise RuntimeError(f"the build step gave {build['outcome']}: {common.diagnose(job.pk)}")
    rows = [
        rss_row(
            f"{remote.label}: worker RSS building a {n:,}-request batch ({config.label})", build
        )
    ]

    chunk = BatchChunk.objects.get(job_id=job.pk)
    lines, bare_seconds = remote.bare_read(remote.wait_ended(chunk.remote_id))
    BatchChunk.objects.filter(pk=chunk.pk).update(
        next_poll_at=chunk.submitted_at or chunk.created_at
    )
    ingest = run_step("ingest", chunk.pk)
    wrong = check_outputs(job.pk, n, remote.model)
    per_second = n / ingest["seconds"]
    bare_rate = lines / bare_seconds
    # The simulator's own time to answer (it makes the results as it is asked):
    # its share of the step, as far as the bare read shows it.
    net = n / max(ingest["seconds"] - bare_seconds, 1e-9)
    common.progress(
        f"{label}: {n:,} result lines ingested in {ingest['seconds']:.2f} s "
        f"({per_second:,.0f} rows/s; bare read {bare_rate:,.0f} lines/s), RSS "
        f"{ingest['before_mb']:.0f} MB before, peak {ingest['peak_mb']:.0f} MB"
        + (f"; {wrong}" if wrong else "")
    )
    rows.append(
        rss_row(
            f"{remote.label}: worker RSS reading a {n:,}-line result file ({config.label})",
            ingest,
            wrong,
        )
    )
    rows.append(
        Row(
            "10",
            f"{remote.label}: rows ingested from a {n:,}-line result file ({config.label})",
            f"≥ {INGEST_TARGET:,} rows/s",
            f"{per_second:,.0f} rows/s ({ingest['seconds']:.2f} s, batch_poll in a process of "
            f"its own); a bare httpx read + json.loads of the same file {bare_rate:,.0f} "
            f"lines/s ({bare_seconds:.2f} s); {net:,.0f} rows/s without the bare read's time",
            per_second >= INGEST_TARGET and not wrong,
            note=wrong,
            data={
                **ingest,
                "rows_per_s": per_second,
                "bare_lines_per_s": bare_rate,
                "bare_s": bare_seconds,
                "rows_per_s_without_bare": net,
            },
        )
    )
    return rows


def run(config: Config, quick: bool) -> list[Row]:
    n = 5_000 if quick else ROWS
    env = common.prepare(config, "b10-batch")
    from dashboard.models import BatchChunk, Job

    rows: list[Row] = []
    team, _user = common.demo_team()
    for kind in (Remote, AnthropicRemote):
        port = common.free_port()
        sim = start_simulator(kind.slug, port)
        try:
            remote = kind(f"http://{HOST}:{port}")
            credential = common.make_credential(
                team, kind.slug, remote.url, name=f"b10 {kind.slug}"
            )
            rows.append(saved_to_created(config, env, remote, team, credential, n))
            rows += build_and_ingest(config, remote, team, credential, n)
        finally:
            common.stop_process(sim)

    # (d) SQL per poll round, on jobs of their own: the jobs above are set
    # aside (cancelled, their batches ended) so the sweep sees only the
    # chunks counted.
    Job.objects.update(status="cancelled")
    BatchChunk.objects.filter(state="live").update(state="ended")
    rows += [
        Row(r.figure, f"{r.what} ({config.label})", r.target, r.measured, r.ok, r.note, r.data)
        for r in poll_rounds(team)
    ]
    return rows


# --- one worker step in a process of its own -----------------------------------------------------


def _status(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def _step(kind: str, pk: int) -> None:
    """``python -m bench.b10_batch step build|ingest PK``: the worker's task
    function for a job (build: ``worker.advance_job``) or a chunk (ingest:
    ``batch.batch_poll``), with the RSS before and the peak during it."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from dashboard.core.connect import build_provider
    from dashboard.jobs import batch, worker
    from dashboard.models import BatchChunk, Job

    job_id = pk if kind == "build" else BatchChunk.objects.get(pk=pk).job_id
    job = Job.objects.select_related("credential").get(pk=job_id)
    with build_provider(job.credential) as provider:  # the client's imports and CA bundle
        provider.list_models()
    gc.collect()
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := the RSS now
    started = time.perf_counter()
    outcome = worker.advance_job(pk) if kind == "build" else batch.batch_poll(pk)
    seconds = time.perf_counter() - started
    peak = _status("VmHWM")
    print(
        json.dumps({"outcome": outcome, "seconds": seconds, "before_mb": before, "peak_mb": peak}),
        flush=True,
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["step"]:
        _step(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(common.child_main(run, ["sqlite-orm", "pg-redis"]))
