"""Reviews: a reviewer's rating of a cell (thumbs up or down, and "best of this
row" in a comparison), notes on a comparison's rows and on a job's timeline.
One rating per
reviewer per cell, the latest wins: an upsert on the (job, index, user)
unique constraint. Every rating and note keeps who and when."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from dashboard.core import clock
from dashboard.models import Comparison, Item, Job, JobEvent, Rating, RowNote

MAX_NOTE = 5000
#: "Leave as it is" for rating_set's score (None clears it).
KEEP: Any = object()


class ReviewError(ValueError):
    """Why a rating or a note cannot be saved, in words."""


def rating_set(
    *, job: Job, index: int, user: Any, score: Any = KEEP, best: bool | None = None
) -> Rating | None:
    """Set the reviewer's score (-1, 1, or None to clear) and/or best mark on
    row ``index`` of ``job``. Best is one per row of a comparison: marking a
    cell best unmarks the reviewer's other cells of that row. Returns the
    rating, or None when nothing is left of it (cleared)."""
    if score is not KEEP and score not in (-1, 1, None):
        raise ReviewError("A score is -1 (thumbs down) or 1 (thumbs up).")
    if best and job.comparison_id is None:
        raise ReviewError("“Best of this row” is for a comparison's targets.")
    if not Item.objects.filter(job_id=job.pk, index=index).exists():
        raise ReviewError(f"Job {job.pk} has no row {index}.")
    now = clock.now()
    changes: dict[str, Any] = {"updated_at": now}
    if score is not KEEP:
        changes["score"] = score
    if best is not None:
        changes["best"] = best
    with transaction.atomic():
        if best:
            Rating.objects.filter(
                job__comparison_id=job.comparison_id, index=index, user=user, best=True
            ).exclude(job_id=job.pk).update(best=False, updated_at=now)
        rating = _upsert(job, index, user, changes, now)
        if best:
            # A cell unmarked above may hold nothing else now.
            Rating.objects.filter(
                job__comparison_id=job.comparison_id,
                index=index,
                user=user,
                score__isnull=True,
                best=False,
            ).delete()
        if rating.score is None and not rating.best:
            Rating.objects.filter(pk=rating.pk).delete()
            return None
    return rating


def _upsert(job: Job, index: int, user: Any, changes: dict[str, Any], now: Any) -> Rating:
    """Update the reviewer's rating of the cell, or create it; a concurrent
    create by the same reviewer (two tabs) is caught by the unique constraint
    and becomes an update."""
    for _ in range(2):
        if Rating.objects.filter(job_id=job.pk, index=index, user=user).update(**changes):
            return Rating.objects.get(job_id=job.pk, index=index, user=user)
        try:
            with transaction.atomic():
                return Rating.objects.create(
                    job=job, index=index, user=user, created_at=now, **changes
                )
        except IntegrityError:
            continue
    raise ReviewError("The rating could not be saved; try again.")


def note_text(text: str | None) -> str:
    """The note as it is kept, or ReviewError: empty, too long, or holding a
    NUL (which PostgreSQL refuses to store)."""
    text = (text or "").strip()
    if not text:
        raise ReviewError("The note is empty.")
    if "\x00" in text:
        raise ReviewError("A note may not contain NUL characters.")
    if len(text) > MAX_NOTE:
        raise ReviewError(f"A note has at most {MAX_NOTE:,} characters.")
    return text


def job_note_add(*, job: Job, user: Any, text: str) -> JobEvent:
    """A reviewer's note on the job's timeline."""
    return JobEvent.objects.create(
        job=job, kind=JobEvent.Kind.NOTE, message=note_text(text), author=user
    )


def note_add(*, comparison: Comparison, index: int, user: Any, text: str) -> RowNote:
    text = note_text(text)
    first = comparison.jobs.order_by("id").first()
    if first is None or not Item.objects.filter(job_id=first.pk, index=index).exists():
        raise ReviewError(f"This comparison has no row {index}.")
    return RowNote.objects.create(
        comparison=comparison, index=index, author=user, text=text, created_at=clock.now()
    )
