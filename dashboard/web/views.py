"""The home page, the health check and the team switcher.

Pages are small function views that render a page, or for htmx a named
partial of the same template; every page also works on a full reload."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseStopPolling

from dashboard.accounts.access import SESSION_KEY, require_membership
from dashboard.jobs.history import BIG_FIELDS
from dashboard.models import Credential, Job, Membership, Team
from dashboard.status import JOB_ACTIVE

from .instances import instance_panel_context


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


@login_required
def home(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request)
    team = membership.team
    context = home_context(team)
    template = "dashboard/home.html"
    if request.htmx:
        # The active jobs, and out of band the counters and the finished jobs,
        # from the page's own partials; 286 once nothing is active (this last
        # answer still carries the job that just finished).
        response = render(request, template + "#home-live", {**context, "live": True})
        if not context["active_jobs"]:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    context.update(instance_panel_context(team))
    return render(request, template, context)


def home_context(team: Team) -> dict[str, Any]:
    jobs = Job.objects.filter(team=team).select_related("created_by").defer(*BIG_FIELDS)
    counts = dict(jobs.order_by().values_list("status").annotate(n=Count("id")))
    return {
        "active_jobs": list(jobs.filter(status__in=JOB_ACTIVE)[:20]),
        # Newest first by creation, on the job_history index (finished_at has none).
        "recent_jobs": list(jobs.exclude(status__in=JOB_ACTIVE)[:10]),
        "counts": counts,
        "credential_count": Credential.objects.filter(team=team).count(),
    }


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
