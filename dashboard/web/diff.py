"""The diff page: a job against the run before it (``?against=ID``) over the
same rows: the counts, per scorer the regressions and improvements, and the
rows a page at a time with the two outputs side by side (``?only=regressions``
keeps the rows where some scorer went from pass to fail)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from dashboard.accounts import access
from dashboard.core.params import int_param
from dashboard.evals import diff
from dashboard.jobs.export import text_of
from dashboard.models import Job

PAGE_SIZE = 50
#: Characters of an output shown before the "show all" toggle.
CLIP = 400


def _side(item: Any) -> dict[str, Any] | None:
    if item is None:
        return None
    text = text_of(item.output) if item.output is not None else ""
    return {
        "item": item,
        "text": text,
        "clipped": text[:CLIP] if len(text) > CLIP else None,
    }


@login_required
@require_GET
def job_diff(request: HttpRequest, pk: int) -> HttpResponse:
    job, _ = access.object_for(request.user, Job.objects.all(), pk=pk)
    raw = request.GET.get("against", "").strip()
    only = request.GET.get("only") or None
    context: dict[str, Any] = {"job": job, "against_raw": raw, "only": only, "error": ""}
    against_id = int_param(raw) if raw else None
    if not raw:
        return render(request, "dashboard/job_diff.html", context)
    if against_id is None or against_id < 1:
        context["error"] = "Give a job's id (a whole number), e.g. the run before this one."
    elif against_id == job.pk:
        context["error"] = "Pick another job: a job is the same as itself."
    elif only is not None and only not in diff.ONLY:
        context["error"] = f"Filter by one of {', '.join(diff.ONLY)}."
    if context["error"]:
        return render(request, "dashboard/job_diff.html", context, status=400)
    against, _ = access.object_for(request.user, Job.objects.all(), pk=against_id)
    found = diff.diff_of(job, against)
    after = int_param(request.GET.get("after"))
    rows, next_after = diff.rows_page(found, after=after, size=PAGE_SIZE, only=only)
    context.update(
        {
            "against": against,
            "counts": diff.row_counts(found),
            "scorers": diff.scorer_counts(found),
            "rows": [
                {
                    "row": row,
                    "here": _side(row.here),
                    "there": _side(row.there),
                    "went": row.went,
                }
                for row in rows
            ],
            "next_after": next_after,
        }
    )
    return render(request, "dashboard/job_diff.html", context)
