"""Job pages: the new-job form, the job page and its live partial, and the
actions on a job (cancel, retry, note)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from dashboard.accounts import access
from dashboard.accounts.access import require_membership
from dashboard.accounts.audit import audit
from dashboard.jobs import results
from dashboard.jobs.forms import SPEC_FIELDS, JobForm
from dashboard.jobs.services import job_cancel, job_create, job_retry
from dashboard.models import Job, JobEvent, Role


@login_required
def job_new(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request, Role.MEMBER)
    team = membership.team
    if request.method == "POST":
        form = JobForm(request.POST, team=team)
        if form.is_valid():
            job = job_create(
                team=team,
                credential=form.cleaned_data["credential"],
                spec=form.cleaned_data["spec"],
                user=request.user,
            )
            audit(request.user, team, "job.submitted", job, provider=job.provider, model=job.model)
            return redirect(job)
    else:
        initial = _clone_initial(request) if "clone" in request.GET else {}
        if "credential" in request.GET:
            initial["credential"] = request.GET["credential"]
        form = JobForm(initial=initial, team=team)
    if request.htmx and request.method == "GET" and request.htmx.target == "provider-fields":
        return render(request, "dashboard/job_new.html#provider-fields", {"form": form})
    return render(request, "dashboard/job_new.html", {"form": form})


def _clone_initial(request: HttpRequest) -> dict[str, Any]:
    try:
        job, _ = access.object_for(request.user, Job.objects.all(), pk=int(request.GET["clone"]))
    except ValueError:
        return {}
    spec = job.spec
    prompts = spec.get("prompts") or []
    initial = {
        key: spec.get(key)
        for key in ("model", *SPEC_FIELDS, "stream")
        if spec.get(key) not in (None, "")
    }
    initial["options"] = spec.get("options") or None
    initial["credential"] = job.credential_id
    initial["split"] = "separator" if len(prompts) > 1 else "single"
    initial["prompts"] = "\n---\n".join(prompts)
    return initial


@login_required
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    job, membership = access.object_for(
        request.user, Job.objects.select_related("created_by", "credential", "retry_of"), pk=pk
    )
    events = list(job.events.select_related("author"))
    context = {
        "job": job,
        "rows": results.job_rows(job),
        "structured_columns": results.structured_columns(job),
        "timeline": [e for e in events if not e.is_output],
        "log_groups": log_groups(job, [e for e in events if e.is_output], all_blocks=True),
        "cursor": events[-1].pk if events else 0,
        "can_act": membership.allows(Role.MEMBER),
    }
    return render(request, "dashboard/job_detail.html", context)


@login_required
@require_GET
def job_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The job page's poller: what changed since the client's cursor, as
    out-of-band swaps; 286 (stop polling) once the job is terminal."""
    job, _ = access.object_for(request.user, Job.objects.all(), pk=pk)
    try:
        after = int(request.GET.get("after", 0))
        seen_done = int(request.GET.get("done", -1))
    except ValueError:
        after, seen_done = 0, -1
    events = list(job.events.filter(pk__gt=after).select_related("author"))
    context = {
        "job": job,
        "timeline": [e for e in events if not e.is_output],
        "log_groups": log_groups(job, [e for e in events if e.is_output]),
        "cursor": events[-1].pk if events else after,
        "send_outputs": job.is_terminal or job.progress_done != seen_done,
        "live": True,
    }
    if context["send_outputs"]:
        context["rows"] = results.job_rows(job)
        context["structured_columns"] = results.structured_columns(job)
    response = render(request, "dashboard/job_detail.html#live-update", context)
    if job.is_terminal:
        response.status_code = HttpResponseStopPolling.status_code
    return response


def log_groups(
    job: Job, events: list[JobEvent], *, all_blocks: bool = False
) -> list[tuple[str, str, list[JobEvent]]]:
    """Log events by the block they belong to: one per prompt for a small batch
    (GridRepublic's per-prompt logs, Bytez streams), else one for the job."""
    units = job.log_units
    grouped: dict[int | None, list[JobEvent]] = {unit: [] for unit in units}
    for event in events:
        grouped[event.unit if event.unit in grouped else units[0]].append(event)
    return [
        ("all" if unit is None else str(unit), "" if unit is None else f"Prompt {unit + 1}", items)
        for unit, items in grouped.items()
        if items or all_blocks
    ]


@login_required
@require_POST
def job_cancel_view(request: HttpRequest, pk: int) -> HttpResponse:
    job, _ = access.object_for(request.user, Job.objects.all(), role=Role.MEMBER, pk=pk)
    if job_cancel(job, user=request.user):
        audit(request.user, job.team, "job.cancelled", job)
        messages.success(request, f"Job {job.pk} cancelled.")
    else:
        messages.error(request, f"Job {job.pk} already finished; nothing to cancel.")
    return _back_to(request, job)


@login_required
@require_POST
def job_retry_view(request: HttpRequest, pk: int) -> HttpResponse:
    job, _ = access.object_for(request.user, Job.objects.all(), role=Role.MEMBER, pk=pk)
    try:
        new = job_retry(job, user=request.user, failed_only=request.POST.get("failed_only") == "1")
    except ValueError as exc:
        messages.error(request, str(exc))
        return _back_to(request, job)
    audit(request.user, job.team, "job.retried", job, new_job=new.pk)
    messages.success(request, f"Job {job.pk} retried as job {new.pk}.")
    return _back_to(request, new)


@login_required
@require_POST
def job_note(request: HttpRequest, pk: int) -> HttpResponse:
    job, _ = access.object_for(request.user, Job.objects.all(), role=Role.VIEWER, pk=pk)
    text = (request.POST.get("note") or "").strip()
    if not text:
        messages.error(request, "The note is empty.")
    elif len(text) > 5000:
        messages.error(request, "A note has at most 5,000 characters.")
    else:
        JobEvent.objects.create(job=job, kind=JobEvent.Kind.NOTE, message=text, author=request.user)
    return _back_to(request, job)


def _back_to(request: HttpRequest, job: Job) -> HttpResponse:
    url = job.get_absolute_url()
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return HttpResponseRedirect(url)
