"""A job as the API shows it, and as webhooks deliver it: one shape for both,
so a script reading either sees the same fields."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from dashboard.models import BatchChunk, Job, JobEvent

from . import cache, cost, results

#: A job's ``outputs`` are given up to this many items; above, page the items.
OUTPUTS_MAX = 1000
#: A job's ``log`` is at most its last this many characters (the answer stays
#: bounded whatever the provider printed).
LOG_MAX_CHARS = 64 * 1024
LOG_CUT = "[The log is cut: its last {kept:,} characters follow.]\n"

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
        "mode": job.mode,
        "batches": job_batches(job),
        "scorers": job.scorers,
        "scores": [],
        "cache": cache.cache_summary(job),
    }
    for name, section in SECTIONS.items():
        data[name] = section(job)
    if with_log:
        data["log"] = job_log(job)
    return data


def job_batches(job: Job) -> list[dict[str, Any]]:
    """A batch job's remote batches (none for an online job). A chunk split
    in halves (the provider refused it as too large) never was one: its rows
    are the halves'."""
    if job.mode != Job.Mode.BATCH:
        return []
    return [
        {
            "id": chunk.pk,
            "remote_id": chunk.remote_id,
            "status": chunk.state,
            "provider_status": chunk.provider_status,
            "counts": chunk.counts,
            "items": chunk.items,
        }
        for chunk in job.chunks.exclude(state=BatchChunk.State.SPLIT).order_by("number")
    ]


def job_log(job: Job) -> str:
    """The provider's log or streamed output where there is one, else the
    timeline: its last LOG_MAX_CHARS characters, after a marker when it is
    longer (only about that much of it is read)."""
    output_kinds = (JobEvent.Kind.LOG, JobEvent.Kind.STREAM)
    chunks = job.events.filter(kind__in=output_kinds)
    newest, cut = _newest(chunks.order_by("-unit", "-id").values_list("unit", "message"))
    if newest:
        # Prompts run side by side: each prompt's text stays in one piece.
        by_unit: dict[int | None, list[str]] = {}
        for unit, message in reversed(newest):
            by_unit.setdefault(unit, []).append(message)
        return _tail("\n".join("".join(parts) for parts in by_unit.values()), cut)
    # Reviewers' notes are comments on the job, not part of its own timeline.
    timeline = job.events.exclude(kind__in=(*output_kinds, JobEvent.Kind.NOTE))
    events, cut = _newest(timeline.order_by("-id").values_list("created_at", "message"))
    text = "\n".join(
        f"{timezone.localtime(at):%H:%M:%S} {message}" for at, message in reversed(events)
    )
    return _tail(text, cut)


def _newest(rows: QuerySet[Any, tuple[Any, str]]) -> tuple[list[tuple[Any, str]], bool]:
    """Rows (whatever, message) newest first, until they hold more than
    LOG_MAX_CHARS characters; and whether older ones were left unread."""
    kept: list[tuple[Any, str]] = []
    size = 0
    for row in rows.iterator(chunk_size=500):
        if size > LOG_MAX_CHARS:
            return kept, True
        kept.append(row)
        size += len(row[1]) + 1
    return kept, False


def _tail(text: str, cut: bool) -> str:
    if not cut and len(text) <= LOG_MAX_CHARS:
        return text
    return LOG_CUT.format(kept=LOG_MAX_CHARS) + text[-LOG_MAX_CHARS:]
