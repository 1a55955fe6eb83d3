"""Real `manage.py qcluster` processes on the test database, for the tests that
need the whole background path (browser, chaos, several workers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]


def database_url() -> str:
    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    user = settings.get("USER") or ""
    password = f":{settings['PASSWORD']}" if settings.get("PASSWORD") else ""
    host = settings.get("HOST") or "127.0.0.1"
    port = settings.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{settings['NAME']}"


def start_qcluster(log: Path, **env: str) -> subprocess.Popen[bytes]:
    """Start a worker cluster in its own process group (so a SIGKILL takes its
    children too) and wait until it runs."""
    full_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.test_settings",
        "DASHBOARD_QUEUE_NAME": str(settings.Q_CLUSTER["name"]),
        "DATABASE_URL": database_url(),
        # The cluster says "running" at INFO: the readiness signal waited on below.
        "DASHBOARD_WORKER_LOG_LEVEL": "INFO",
        "DASHBOARD_ALLOWED_PRIVATE_HOSTS": "127.0.0.1,localhost",
        "DASHBOARD_WORKERS": "2",
        "DASHBOARD_HTTP_TIMEOUT": "5",
        **env,
    }
    full_env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    start = log.stat().st_size if log.exists() else 0
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_until_running(process, log, start=start)
    return process


def wait_until_running(
    process: subprocess.Popen[bytes], log: Path, *, start: int, timeout: float = 30.0
) -> None:
    """Wait for the cluster's own "running" line in its log (written after
    ``start``), failing at once if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"The qcluster worker did not start:\n{log.read_text()}")
        with open(log, "rb") as handle:
            handle.seek(start)
            if b" running." in handle.read():
                return
        time.sleep(0.05)
    raise RuntimeError(
        f"The qcluster worker did not report running in {timeout} s:\n{log.read_text()}"
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole cluster: no cleanup, no goodbye, like a crash or the OOM killer."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=3)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        kill(process)
