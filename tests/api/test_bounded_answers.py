"""The API's answers stay bounded: a job's ``log`` is its last part, after a
marker that says it was cut."""

from __future__ import annotations

from typing import Any

import pytest

from dashboard.jobs import serialize
from dashboard.models import JobEvent
from tests.api.conftest import Api
from tests.conftest import make_credential, make_job

pytestmark = pytest.mark.django_db


def test_a_job_with_a_2_mb_log_answers_its_last_part_and_says_it_was_cut(
    alice_api: Api, team: Any
) -> None:
    job = make_job(make_credential(team), ["a", "b"])
    lines = [f"line {n:06d} " + "x" * 90 + "\n" for n in range(20_000)]  # 2 MB
    JobEvent.objects.bulk_create(
        [JobEvent(job=job, kind="log", unit=n % 2, message=line) for n, line in enumerate(lines)]
    )

    response = alice_api.get(f"jobs/{job.pk}")
    assert response.status_code == 200
    log = response.json()["log"]

    assert len(log) <= serialize.LOG_MAX_CHARS + 200 < 2_000_000
    assert log.startswith("[") and "cut" in log.splitlines()[0]
    assert log.endswith(lines[-1])  # the newest text is kept
    assert lines[-1] in log and lines[0] not in log
    assert len(response.content) < 2 * serialize.LOG_MAX_CHARS + 20_000


def test_a_short_log_is_answered_whole(alice_api: Api, team: Any) -> None:
    job = make_job(make_credential(team), ["a"])
    JobEvent.objects.create(job=job, kind="log", unit=0, message="loading\n")
    JobEvent.objects.create(job=job, kind="log", unit=0, message="done\n")
    assert alice_api.get(f"jobs/{job.pk}").json()["log"] == "loading\ndone\n"


def test_a_long_timeline_is_cut_too(team: Any) -> None:
    job = make_job(make_credential(team), ["a"])
    JobEvent.objects.bulk_create(
        [JobEvent(job=job, message=f"event {n} " + "y" * 200) for n in range(2_000)]
    )
    log = serialize.job_log(job)
    assert len(log) <= serialize.LOG_MAX_CHARS + 200
    assert log.rstrip().endswith("event 1999 " + "y" * 200)
