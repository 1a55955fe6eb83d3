"""The team's job history: the list of jobs, newest first."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .models import Job
from .status import JOB_ACTIVE
from .teams import require_membership

STOP_POLLING = 286
JOB_LIST_SIZE = 50


@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request)
    jobs = list(
        Job.objects.filter(team=membership.team)
        .select_related("created_by")
        .defer("spec", "outputs", "output_errors", "raw_result")[:JOB_LIST_SIZE]
    )
    context = {"jobs": jobs, "any_active": any(job.status in JOB_ACTIVE for job in jobs)}
    if request.htmx:
        response = render(request, "dashboard/job_list.html#job-rows", context)
        if not context["any_active"]:
            response.status_code = STOP_POLLING
        return response
    return render(request, "dashboard/job_list.html", context)
