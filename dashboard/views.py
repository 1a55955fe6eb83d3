"""Pages. Small function views that render a page, or for htmx a named partial
of the same template; every page also works on a full reload."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from .audit import audit
from .forms import SPEC_FIELDS, CredentialForm, JobForm
from .jobs import job_cancel, job_create, job_retry
from .models import Credential, Job, JobEvent, Membership, Role
from .status import JOB_ACTIVE
from .teams import SESSION_KEY, require_membership, role_in, team_object_or_404

#: htmx stops an `every` poll when the answer has this status (htmx 2).
STOP_POLLING = 286


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


@login_required
def home(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request)
    team = membership.team
    jobs = Job.objects.filter(team=team).select_related("created_by")
    counts = dict(jobs.order_by().values_list("status").annotate(n=Count("id")))
    context = {
        "active_jobs": jobs.filter(status__in=JOB_ACTIVE)[:20],
        "recent_jobs": jobs.exclude(status__in=JOB_ACTIVE)[:10],
        "counts": counts,
        "credential_count": Credential.objects.filter(team=team).count(),
    }
    template = "dashboard/home.html"
    if request.htmx:
        response = render(request, template + "#active-jobs", context)
        if not context["active_jobs"]:
            response.status_code = STOP_POLLING
        return response
    from .views_instances import instance_panel_context

    context.update(instance_panel_context(team))
    return render(request, template, context)


@login_required
@require_POST
def switch_team(request: HttpRequest) -> HttpResponse:
    team_id = request.POST.get("team")
    if (
        team_id
        and team_id.isdigit()
        and Membership.objects.filter(user=request.user, team_id=team_id).exists()
    ):
        request.session[SESSION_KEY] = int(team_id)
    else:
        messages.error(request, "You are not a member of that team.")
    return redirect("home")


# --- credentials -----------------------------------------------------------------


@login_required
def credential_list(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request)
    form = None
    if membership.allows(Role.ADMIN):
        form = CredentialForm(request.POST or None, team=membership.team)
        if request.method == "POST" and form.is_valid():
            credential = form.save_for(request.user)
            messages.success(
                request,
                f"Credential “{credential.name}” saved. Its secret will not be shown again.",
            )
            return redirect("credential_list")
    elif request.method == "POST":
        require_membership(request, Role.ADMIN)
    credentials = Credential.objects.filter(team=membership.team).annotate(
        active_jobs=Count("jobs", filter=Q(jobs__status__in=JOB_ACTIVE))
    )
    return render(
        request,
        "dashboard/credentials.html",
        {"credentials": credentials, "form": form, "can_manage": membership.allows(Role.ADMIN)},
    )


@login_required
@require_POST
def credential_delete(request: HttpRequest, pk: int) -> HttpResponse:
    credential = team_object_or_404(Credential.objects.all(), request, pk=pk)
    _require_role(request, credential.team_id, Role.ADMIN)
    blocker = credential.delete_blocker()
    if blocker:
        messages.error(request, blocker)
        return redirect("credential_list")
    name = credential.name
    audit(request.user, credential.team, "credential.deleted", credential)
    credential.delete()
    messages.success(request, f"Credential “{name}” deleted. Its jobs stay in the history.")
    return redirect("credential_list")


# --- jobs ------------------------------------------------------------------------------


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
        job = team_object_or_404(Job.objects.all(), request, pk=int(request.GET["clone"]))
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
    job = team_object_or_404(
        Job.objects.select_related("created_by", "credential", "retry_of"), request, pk=pk
    )
    events = list(job.events.select_related("author"))
    membership = role_in(request, job.team_id)
    context = {
        "job": job,
        "timeline": [e for e in events if not e.is_output],
        "log_groups": log_groups(job, [e for e in events if e.is_output], all_blocks=True),
        "cursor": events[-1].pk if events else 0,
        "can_act": membership is not None and membership.allows(Role.MEMBER),
        "retries": job.retries.all()[:10],
    }
    return render(request, "dashboard/job_detail.html", context)


@login_required
@require_GET
def job_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The job page's poller: what changed since the client's cursor, as
    out-of-band swaps; 286 (stop polling) once the job is terminal."""
    job = team_object_or_404(Job.objects.all(), request, pk=pk)
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
    response = render(request, "dashboard/job_detail.html#live-update", context)
    if job.is_terminal:
        response.status_code = STOP_POLLING
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
    job = team_object_or_404(Job.objects.all(), request, pk=pk)
    _require_role(request, job.team_id, Role.MEMBER)
    if job_cancel(job, user=request.user):
        audit(request.user, job.team, "job.cancelled", job)
        messages.success(request, f"Job {job.pk} cancelled.")
    else:
        messages.error(request, f"Job {job.pk} already finished; nothing to cancel.")
    return _back_to(request, job)


@login_required
@require_POST
def job_retry_view(request: HttpRequest, pk: int) -> HttpResponse:
    job = team_object_or_404(Job.objects.all(), request, pk=pk)
    _require_role(request, job.team_id, Role.MEMBER)
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
    job = team_object_or_404(Job.objects.all(), request, pk=pk)
    _require_role(request, job.team_id, Role.VIEWER)
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


def _require_role(request: HttpRequest, team_id: int, role: str) -> None:
    from django.core.exceptions import PermissionDenied

    membership = role_in(request, team_id)
    if membership is None or not membership.allows(role):
        raise PermissionDenied(f"This needs the {role} role in the job's team.")
