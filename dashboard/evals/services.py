"""Adding scorers to a finished job: checked like at submit, appended to the
job's scorers, and its finished items scored by a task (no provider call of
the judged model; a judge scorer's calls are a judge job, ``evals.judge``)."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from dashboard.core import queue as tasks_queue
from dashboard.core.audit import audit, via_details
from dashboard.models import Job
from dashboard.status import JOB_TERMINAL

from . import judge
from .scorers import normalize_scorers

#: The task that scores a finished job's items (a stable dotted path).
RESCORE_TASK = "dashboard.tasks.job_rescore"


class NotFinished(Exception):
    """Scorers are added to a job once it has ended."""


def scorers_add(job: Job, raw: Any, *, user: Any = None, via: str = "") -> list[dict[str, Any]]:
    """Append the scorers ``raw`` (ScorerError if any is refused, nothing
    saved) to a terminal job (NotFinished otherwise), and score its completed
    items in a task once this commits. Returns the new scorers."""
    with transaction.atomic():
        locked = Job.objects.select_for_update().only("id", "status", "scorers", "team_id")
        current = locked.get(pk=job.pk)
        if current.status not in JOB_TERMINAL:
            raise NotFinished(
                f"Job {job.pk} is {current.status}; add scorers once it has ended "
                "(or give them when submitting)."
            )
        added = normalize_scorers(
            raw,
            columns=list(job.input_columns) if job.input_columns else None,
            team=job.team_id,
            taken=[scorer["name"] for scorer in current.scorers],
        )
        if not added:
            return []
        job.scorers = [*current.scorers, *added]
        Job.objects.filter(pk=job.pk).update(scorers=job.scorers)
        audit(
            user,
            job.team,
            "job.scorers_added",
            job,
            scorers=[scorer["name"] for scorer in added],
            **via_details(via),
        )
        tasks_queue.on_commit(RESCORE_TASK, job.pk, [scorer["name"] for scorer in added])
        if judges := [scorer["name"] for scorer in added if scorer["type"] == "judge"]:
            # The judge's calls are a job of their own; only the judge is called.
            tasks_queue.on_commit(judge.START_TASK, job.pk, judges)
    return added
