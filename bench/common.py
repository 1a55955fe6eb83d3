"""Shared setup for the benchmarks (``python -m bench``).

Every figure runs in its own process, once per configuration, because Django
reads its settings once: the runner starts ``python -m bench.<module> --config
<key> --out <file>`` and each module calls :func:`child_main`. A configuration
gets a fresh database (a SQLite file under ``var/bench/`` or the PostgreSQL
database ``dashboard_bench``), migrated by a ``manage.py migrate`` subprocess
with the same environment the workers get; the provider simulators run in the
benchmark's own process on loopback; workers are real ``manage.py qcluster``
subprocesses in their own process group.

Nothing here talks to any address other than 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"
LOG_DIR = BENCH_DIR / "logs"
PYTHON = sys.executable
HOST = "127.0.0.1"
#: The PostgreSQL database the figures drop and create (BENCH_PG_DATABASE: one
#: of its own for each of several runs sharing a server).
PG_DATABASE = os.environ.get("BENCH_PG_DATABASE", "dashboard_bench")
PG_ADMIN = f"host={HOST} port=5432 user=postgres dbname=postgres"
PG_URL = f"postgres://postgres@{HOST}:5432/{PG_DATABASE}"
#: A Redis database of its own, so the benchmark's queue never meets anyone else's.
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "13"))
REDIS_URL = f"redis://{HOST}:6379/{REDIS_DB}"
USERNAME = "bench"
MODEL = "bench-model"


@dataclass(frozen=True)
class Config:
    key: str
    db: str  # "sqlite" or "postgres"
    broker: str  # "orm" or "redis"

    @property
    def label(self) -> str:
        database = "SQLite" if self.db == "sqlite" else "PostgreSQL"
        return f"{database}/{'ORM' if self.broker == 'orm' else 'Redis'}"


CONFIGS = {
    "sqlite-orm": Config("sqlite-orm", "sqlite", "orm"),
    "pg-redis": Config("pg-redis", "postgres", "redis"),
}


@dataclass
class Row:
    """One line of the table."""

    figure: str
    what: str
    target: str
    measured: str
    ok: bool | None  # None: informational
    note: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def progress(message: str) -> None:
    """A line the runner shows on the terminal (and keeps in the figure's log)."""
    print(f"    {message}", file=sys.stderr, flush=True)


def detail(message: str) -> None:
    """A line for the figure's log only."""
    print(message, file=sys.stderr, flush=True)


# --- environment and database ---------------------------------------------------------------


def base_env(config: Config, name: str) -> dict[str, str]:
    """What the benchmark process, migrate, the workers and the web servers share."""
    url = PG_URL if config.db == "postgres" else f"sqlite:///{BENCH_DIR / f'{name}.sqlite3'}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_ALLOW_ASYNC_UNSAFE", "DASHBOARD_SYNC_TASKS")
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.test_settings",
        DASHBOARD_DATA_DIR=str(BENCH_DIR),
        DATABASE_URL=url,
        DASHBOARD_BROKER=config.broker,
        REDIS_URL=REDIS_URL,
        # The test settings: the development encryption key and plain static files.
        DEBUG="false",
        DASHBOARD_ALLOWED_PRIVATE_HOSTS=f"{HOST},localhost",
        ALLOWED_HOSTS=f"{HOST},localhost,testserver",
        DASHBOARD_WORKERS="2",
        DASHBOARD_HTTP_TIMEOUT="10",
        LOG_LEVEL="WARNING",
        DASHBOARD_WORKER_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        BENCH_NAME=name,
        # The benchmark process and its workers share one queue (the test
        # settings otherwise give each process its own).
        DASHBOARD_QUEUE_NAME=f"bench-{name}",
    )
    if not env.get("DASHBOARD_ENCRYPTION_KEYS"):
        from cryptography.fernet import Fernet

        # A key of its own per run (the database is fresh too); no development-key warning.
        env["DASHBOARD_ENCRYPTION_KEYS"] = Fernet.generate_key().decode()
    return env


def fresh_database(config: Config, env: dict[str, str]) -> None:
    if config.db == "postgres":
        import psycopg

        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {PG_DATABASE}")
    else:
        path = Path(env["DATABASE_URL"].removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    if config.broker == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter("django_q:*"))
        if keys:
            client.delete(*keys)


def drop_database(config: Config) -> None:
    """Drop the configuration's database after its figure (``BENCH_KEEP_DB=1``
    keeps it for inspection)."""
    if os.environ.get("BENCH_KEEP_DB") == "1":
        return
    from django.db import connections

    connections.close_all()
    if config.db != "postgres":
        url = os.environ.get("DATABASE_URL", "")
        if url.startswith("sqlite:///") and Path(url[10:]).parent == BENCH_DIR:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{url[10:]}{suffix}").unlink(missing_ok=True)
        return
    import psycopg

    with (
        contextlib.suppress(Exception),
        psycopg.connect(PG_ADMIN, autocommit=True) as conn,
    ):
        conn.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")


def prepare(config: Config, name: str) -> dict[str, str]:
    """A fresh, migrated database for this configuration, and Django set up on it
    in this process. Returns the environment for subprocesses."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    env = base_env(config, name)
    fresh_database(config, env)
    started = time.perf_counter()
    result = subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{result.stdout}\n{result.stderr}")
    progress(f"{config.label}: fresh database migrated in {time.perf_counter() - started:.1f} s")
    os.environ.update(env)
    import django

    django.setup()
    return env


def machine_line() -> str:
    import sqlite3

    cores = os.cpu_count() or 0
    ram = 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) / 1024 / 1024
    pg = "unavailable"
    with contextlib.suppress(Exception):
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3) as conn:
            pg = str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]
    redis_version = "unavailable"
    with contextlib.suppress(Exception):
        import redis

        redis_version = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = " (" + line.split(":", 1)[1].strip() + ")"
                break
    return (
        f"Machine: {cores} cores{cpu}, {ram:.1f} GB RAM, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, PostgreSQL {pg}, Redis {redis_version}, "
        f"{platform.system()} {platform.release()}"
    )


# --- data ----------------------------------------------------------------------------------


def demo_team() -> tuple[Any, Any]:
    """The benchmark's team and its admin user."""
    from django.contrib.auth.models import User

    from dashboard.models import Membership, Role, Team

    user = User.objects.filter(username=USERNAME).first() or User.objects.create_user(
        USERNAME, password="bench-password-123"
    )
    team, _ = Team.objects.get_or_create(name="Bench team")
    Membership.objects.get_or_create(team=team, user=user, defaults={"role": Role.ADMIN})
    return team, user


def make_credential(team: Any, provider: str, base_url: str, **extra: Any) -> Any:
    from dashboard.models import Credential
    from providers.simulators import DEFAULT_TOKEN

    return Credential.objects.create(
        team=team,
        provider=provider,
        name=extra.pop("name", f"{provider} bench {time.monotonic_ns()}"),
        secret=DEFAULT_TOKEN,
        base_url=base_url,
        **extra,
    )


def submit(team: Any, credential: Any, prompts: list[str], user: Any = None, **spec: Any) -> Any:
    """A job through the real path: ``job_create`` (its on_commit enqueue)."""
    from dashboard.jobs.services import job_create
    from providers import JobSpec

    spec.setdefault("model", MODEL)
    return job_create(
        team=team, credential=credential, spec=JobSpec(prompts=prompts, **spec), user=user
    )


def two_prompt_counters(status: str) -> dict[str, int]:
    """The counters of a two-prompt job that ended ``status`` (a failed one had
    one prompt fail and one never run), for jobs bulk-created without items."""
    if status == "completed":
        return {"progress_done": 2, "items_completed": 2}
    if status == "failed":
        return {"progress_done": 2, "items_completed": 0, "items_failed": 1, "items_cancelled": 1}
    if status == "cancelled":
        return {"progress_done": 2, "items_completed": 1, "items_cancelled": 1}
    return {"progress_done": 1, "items_completed": 1, "items_running": 1}


def finish(job: Any, outputs: list[str]) -> None:
    """End a job's items with these outputs as a worker would (items and
    counters in one write), then the job itself."""
    from dashboard.jobs.items import Changes, ItemResult, item_complete, items_write
    from dashboard.models import Job
    from dashboard.status import JOB_STATUSES

    changes = Changes()
    for item in job.items.order_by("index"):
        changes.add(item, item.status)
        item_complete(item, ItemResult(outputs[item.index]), None)
    items_write(job.pk, changes, statuses=JOB_STATUSES)
    Job.objects.filter(pk=job.pk).update(status="completed", finished_at=job.created_at)


def submit_async_in_process(
    team: Any, credential: Any, prompts: list[list[str]], **spec: Any
) -> list[int]:
    """Async jobs (GridRepublic, MyMagic) saved with ``job_create`` and submitted
    in this process by the engine's own submit step (lease, ``submit_async_job``,
    release) with one provider client for them all."""

    from dashboard.core import connect
    from dashboard.jobs import leases, submitter

    ids = []
    owner = leases.worker_id()
    provider = connect.build_provider(credential)
    with provider:
        for job_prompts in prompts:
            job = submit(team, credential, job_prompts, **spec)
            leased = leases.lease_job(job.pk, owner)
            if leased is None:
                raise RuntimeError(f"job {job.pk} could not be leased")
            try:
                outcome = submitter.submit_async_job(leased, provider, time.monotonic() + 60, owner)
            finally:
                leases.release_job(job.pk, owner)
            if outcome != "submitted":
                raise RuntimeError(f"job {job.pk}: submit gave {outcome!r}")
            ids.append(job.pk)
    return ids


def wait_terminal(job_id: int, *, timeout: float, interval: float = 0.02) -> tuple[str, float]:
    """Poll the row every ``interval`` s until it is terminal; (status, perf_counter)."""
    from dashboard.models import Job
    from dashboard.status import JOB_TERMINAL

    deadline = time.perf_counter() + timeout
    while True:
        status = Job.objects.filter(pk=job_id).values_list("status", flat=True).first()
        now = time.perf_counter()
        if status in JOB_TERMINAL:
            return str(status), now
        if now > deadline:
            return f"timeout ({status})", now
        time.sleep(interval)


def diagnose(job_id: int) -> str:
    """Why a job did not finish: its row, its last events, the last failed task."""
    from django_q.models import Failure

    from dashboard.models import Job, JobEvent

    job = Job.objects.filter(pk=job_id).values("status", "provider_status", "error").first()
    events = list(
        JobEvent.objects.filter(job_id=job_id).order_by("-pk").values_list("message", flat=True)[:3]
    )
    failure = Failure.objects.order_by("-stopped").values_list("func", "result").first()
    text = f"job {job_id}: {job}; last events: {events[::-1]}"
    if failure:
        text += f"; last failed task {failure[0]}: {str(failure[1])[-300:]}"
    return text


def warm_up(team: Any, credential: Any, user: Any, count: int = 1) -> None:
    """Jobs through the whole path before measuring (a worker's first task imports
    the engine and opens its connections); raises with a diagnosis if one sticks."""
    for i in range(count):
        job = submit(team, credential, [f"warm-up {i}"], user=user)
        status, _ = wait_terminal(job.pk, timeout=30)
        if status != "completed":
            raise RuntimeError(f"warm-up job ended {status}: {diagnose(job.pk)}")


def session_cookie(user: Any) -> str:
    """A logged-in session (stored in the database, so every server process sees it)."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


# --- processes -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def children_map() -> dict[int, list[int]]:
    """ppid -> child pids, from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat; [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_process(
    args: list[str], env: dict[str, str], log_name: str, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """A subprocess in its own process group (so stopping it takes its children),
    its output in ``var/bench/logs/<log_name>`` (overwritten)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / log_name, "wb") as out:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )


def stop_process(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``grace`` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # Orphans of the group (workers whose parent already left) go too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


class Cluster:
    """A real ``manage.py qcluster`` (or the same cluster with worker recycling off,
    or with a what-if knob: ``python -m bench.common qcluster``)."""

    def __init__(self, env: dict[str, str], *, workers: int = 2, recycle: bool = True) -> None:
        self.workers = workers
        env = {**env, "DASHBOARD_WORKERS": str(workers)}
        args = [PYTHON, "manage.py", "qcluster"]
        if not recycle or whatif_active():
            env["BENCH_NO_RECYCLE"] = "0" if recycle else "1"
            args = [PYTHON, "-m", "bench.common", "qcluster"]
        self.log = f"qcluster-{env.get('BENCH_NAME', 'bench')}.log"
        self.process = start_process(args, env, self.log)
        self.wait_ready()

    def sentinel(self) -> int | None:
        kids = children_map().get(self.process.pid, [])
        return min(kids) if kids else None

    def worker_pids(self) -> list[int]:
        """The worker processes: the sentinel spawns them first, then monitor and pusher."""
        sentinel = self.sentinel()
        if sentinel is None:
            return []
        return sorted(children_map().get(sentinel, []))[: self.workers]

    def roles(self) -> dict[int, str]:
        """pid -> "worker" / "monitor" / "pusher" (the sentinel's spawn order)."""
        sentinel = self.sentinel()
        kids = sorted(children_map().get(sentinel, [])) if sentinel else []
        names = ["worker"] * self.workers + ["monitor", "pusher"]
        return dict(zip(kids, names, strict=False))

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by the workers, monitor and pusher."""
        used: dict[str, float] = {}
        for pid, role in self.roles().items():
            used[role] = used.get(role, 0.0) + cpu_seconds(pid)
        return used

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"qcluster exited with {self.process.returncode}; see {LOG_DIR / self.log}"
                )
            sentinel = self.sentinel()
            if sentinel and len(children_map().get(sentinel, [])) >= self.workers + 2:
                time.sleep(0.5)  # the pusher connects to the broker
                return
            time.sleep(0.1)
        raise RuntimeError("qcluster did not start its workers in time")

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def cluster(env: dict[str, str], **kwargs: Any) -> Iterator[Cluster]:
    started = Cluster(env, **kwargs)
    try:
        yield started
    finally:
        started.stop()


def wait_http(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


# --- child entry point ------------------------------------------------------------------------


def child_main(
    run: Callable[[Config, bool], list[Row]], configs: list[str], argv: list[str] | None = None
) -> int:
    """``python -m bench.<module> --config KEY [--quick] [--out FILE]``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", choices=configs, default=configs[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    config = CONFIGS[args.config]
    try:
        rows = run(config, args.quick)
        code = 0
    except Exception as exc:
        traceback.print_exc()
        rows = [Row("?", f"({config.label})", "", f"error: {type(exc).__name__}: {exc}", False)]
        code = 1
    finally:
        with contextlib.suppress(Exception):
            drop_database(config)
    payload = [asdict(row) for row in rows]
    if args.out:
        args.out.write_text(json.dumps(payload, default=str))
    else:
        for row in payload:
            print(json.dumps(row, default=str))
    return code


#: What-if knobs for the worker cluster, to measure a proposed fix without
#: changing the app (each run with one prints a warning under the table).
WHATIF = {
    "BENCH_WHATIF_SAVE_LIMIT": "django-q2 save_limit overridden",
    "BENCH_WHATIF_POLL": "django-q2 ORM broker poll interval overridden (seconds)",
}


def whatif_active() -> list[str]:
    return [
        f"{key}={os.environ[key]} ({text})" for key, text in WHATIF.items() if key in os.environ
    ]


def _qcluster() -> None:
    """``manage.py qcluster`` with the benchmark's adjustments: worker recycling
    off (django-q2 recycles a worker every 500 tasks, which would hide a leak)
    when ``BENCH_NO_RECYCLE=1``, and the what-if knobs above."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django_q.conf import Conf

    if os.environ.get("BENCH_NO_RECYCLE") == "1":
        Conf.RECYCLE = 10**9
    if "BENCH_WHATIF_SAVE_LIMIT" in os.environ:
        Conf.SAVE_LIMIT = int(os.environ["BENCH_WHATIF_SAVE_LIMIT"])
    if "BENCH_WHATIF_POLL" in os.environ:
        Conf.POLL = float(os.environ["BENCH_WHATIF_POLL"])
    call_command("qcluster")


if __name__ == "__main__" and sys.argv[1:] == ["qcluster"]:
    _qcluster()
