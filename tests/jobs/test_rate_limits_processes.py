"""The credential's ``rpm`` and ``tpm`` hold across worker processes: two real
worker processes (a ``manage.py qcluster`` of two workers) on two jobs of
one credential at once, on the embedded default (the database keeps the pace) and on
PostgreSQL + Redis (Redis keeps it); the simulator's log of answered calls
proves the pace."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from dashboard.models import Job
from dashboard.status import JOB_TERMINAL
from tests.conftest import make_credential, make_job
from tests.jobs.test_rate_limits import assert_paced, record_calls
from tests.workers import start_qcluster, stop

pytestmark = [pytest.mark.slow, pytest.mark.shared_db, pytest.mark.django_db(transaction=True)]


def run_on_two_workers(jobs: list[Job], tmp_path: Path, seconds: float) -> set[str]:
    """Start a cluster of two worker processes, wait for ``jobs`` to end; the
    processes (host:pid) seen holding the jobs' leases."""
    log = tmp_path / "qcluster.log"
    clusters = [start_qcluster(log, DASHBOARD_WORKERS="2")]
    holders: set[str] = set()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rows = list(
                Job.objects.filter(pk__in=[j.pk for j in jobs]).values("status", "lease_owner")
            )
            holders |= {":".join(r["lease_owner"].split(":")[:2]) for r in rows if r["lease_owner"]}
            if all(r["status"] in JOB_TERMINAL for r in rows):
                break
            time.sleep(0.05)
    finally:
        for cluster in clusters:
            stop(cluster)
    return holders


def test_rpm_holds_across_two_worker_processes(
    team: Any, sims: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """rpm 120 (a burst of 6, then 2 a second) shared by two jobs of 12
    prompts run by two processes at once: 24 calls in about 9 s, never faster."""
    sim = sims.get("together")
    moments = record_calls(sim, monkeypatch)
    credential = make_credential(
        team, base_url=sim.base_url, max_concurrency=40, requests_per_minute=120
    )
    jobs = [make_job(credential, [f"{n}-{i}" for i in range(12)]) for n in range(2)]
    holders = run_on_two_workers(jobs, tmp_path, 60)
    statuses = list(
        Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)
    )
    assert statuses == ["completed", "completed"]
    assert len(holders) == 2, holders  # both processes worked
    assert len(moments) == 24
    assert_paced(moments, 120, 6)
    assert moments[-1] - moments[0] >= 8.0  # 18 calls after the burst, at 2 a second


def test_tpm_holds_across_two_worker_processes(
    team: Any, sims: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """tpm 1,320 with calls of 11 tokens (a 1-token prompt and max_tokens 10):
    2 calls a second after a burst of 6, whichever process makes them."""
    sim = sims.get("together")
    moments = record_calls(sim, monkeypatch)
    credential = make_credential(
        team, base_url=sim.base_url, max_concurrency=40, tokens_per_minute=1320
    )
    jobs = [make_job(credential, [f"p{i}" for i in range(8)], max_tokens=10) for _ in range(2)]
    holders = run_on_two_workers(jobs, tmp_path, 60)
    statuses = list(
        Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("status", flat=True)
    )
    assert statuses == ["completed", "completed"]
    assert len(holders) == 2, holders
    assert len(moments) == 16
    assert_paced(moments, 120, 6)
    assert moments[-1] - moments[0] >= 4.5
