"""A job as the API shows it, and as webhooks deliver it: one shape for both,
so a script reading either sees the same fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils import timezone

from dashboard.models import Job, JobEvent

from . import cost, results

#: A job's ``outputs`` are given up to this many items; above, page the items.
OUTPUTS_MAX = 1000

#: Parts of the answer that rooms above jobs compute, by key: ``dashboard.evals``
#: adds ``scores`` (its pass rates) when the app is ready. Jobs imports none of
#: them (the layers in pyproject.toml); a key nobody registered stays empty.
SECTIONS: dict[str, Callable[[Job], Any]] = {}


def job_json(job: Job, *, with_log: bool = True) -> dict[str, Any]:
    rows = results.job_rows(job) if job.progress_total <= OUTPUTS_MAX else None
    data: dict[str, Any] = {
        "id": job.pk,
        "provider": job.provider,
        "model": job.model,
        "status": job.status,
        "provider_status": job.provider_status,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "counts": job.counts,
        "outputs": [row["output"] for row in rows] if rows is not None else None,
        "error": job.error,
        "cost": cost.job_cost(job),
        "dataset": job.dataset_id,
        "comparison": job.comparison_id,
        "created_by": job.created_by.get_username() if job.created_by else None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "output_errors": {str(r["index"]): r["error"] for r in rows or [] if r["error"]},
        "credential": job.credential_id,
        "credential_name": job.credential_name,
        "team": job.team_id,
        "retry_of": job.retry_of_id,
        "spec": job.spec,
        "scorers": job.scorers,
        "scores": [],
    }
    for name, section in SECTIONS.items():
        data[name] = section(job)
    if with_log:
        data["log"] = job_log(job)
    return data


def job_log(job: Job) -> str:
    """The provider's log or streamed output where there is one, else the timeline."""
    output_kinds = (JobEvent.Kind.LOG, JobEvent.Kind.STREAM)
    chunks = job.events.filter(kind__in=output_kinds).order_by("unit", "id")
    by_unit: dict[int | None, list[str]] = {}
    for unit, message in chunks.values_list("unit", "message"):
        by_unit.setdefault(unit, []).append(message)
    if by_unit:
        # Prompts run side by side: each prompt's text stays in one piece.
        return "\n".join("".join(parts) for parts in by_unit.values())
    # Reviewers' notes are comments on the job, not part of its own timeline.
    timeline = job.events.exclude(kind__in=(*output_kinds, JobEvent.Kind.NOTE)).order_by("id")
    return "\n".join(
        f"{timezone.localtime(event.created_at):%H:%M:%S} {event.message}"
        for event in timeline.only("message", "created_at")
    )
