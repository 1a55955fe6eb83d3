"""The team's job history (filters, keyset pages, live rows) and its exports."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.text import slugify
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseStopPolling

from dashboard.accounts.access import require_membership
from dashboard.accounts.audit import audit
from dashboard.core.keyset import cursor_decode, iter_keyset, keyset_page
from dashboard.jobs.export import csv_chunks, jsonl_chunks
from dashboard.jobs.history import (
    COUNT_LIMIT,
    JobFilters,
    jobs_count,
    jobs_for_export,
    jobs_for_page,
)
from dashboard.models import Job, Team
from dashboard.status import JOB_ACTIVE, JobStatus
from providers import PROVIDER_CHOICES

JOB_LIST_SIZE = 50
#: The history filters always shown; the others fold under "More filters".
MAIN_FILTERS = ("q", "status", "model")
PAGE_SIZES = (10, 25, 50, 100, 200)


class JobFilterForm(forms.Form):
    """The history filters, read from the query string (the form is a GET)."""

    q = forms.CharField(
        required=False,
        max_length=200,
        label="Text",
        help_text="In prompts or outputs.",
        widget=forms.TextInput(
            attrs={"type": "search", "placeholder": "Search prompts and outputs"}
        ),
    )
    provider = forms.ChoiceField(required=False, choices=[("", "Any provider"), *PROVIDER_CHOICES])
    model = forms.CharField(required=False, max_length=200, help_text="Part of the name, any case.")
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *JobStatus.choices])
    mode = forms.ChoiceField(
        required=False,
        choices=[("", "Any mode"), *Job.Mode.choices],
        help_text="Batch: run through the provider's batch API.",
    )
    created_by = forms.CharField(
        required=False, max_length=150, label="Submitted by", help_text="A username."
    )
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"})
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"})
    )
    cost_min = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_digits=20,
        decimal_places=6,
        label="Cost from (USD)",
        help_text="Actual, or estimated while running.",
    )
    cost_max = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_digits=20,
        decimal_places=6,
        label="Cost up to (USD)",
    )
    per_page = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=max(PAGE_SIZES),
        label="Per page",
        widget=forms.Select(choices=[(n, str(n)) for n in PAGE_SIZES]),
    )

    def clean_date_from(self) -> date | None:
        return _within_calendar(self.cleaned_data["date_from"])

    def clean_date_to(self) -> date | None:
        return _within_calendar(self.cleaned_data["date_to"])

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", "The end date is before the start date.")
        low, high = data.get("cost_min"), data.get("cost_max")
        if low is not None and high is not None and low > high:
            self.add_error("cost_max", "The upper cost is below the lower one.")
        return data

    def filters(self) -> JobFilters:
        data = self.cleaned_data
        return JobFilters(
            provider=data["provider"],
            model=data["model"].strip(),
            status=data["status"],
            created_by=data["created_by"].strip(),
            date_from=data["date_from"],
            date_to=data["date_to"],
            q=data["q"].strip(),
            cost_min=data.get("cost_min"),
            cost_max=data.get("cost_max"),
            mode=data["mode"],
        )


#: A day's bounds are its midnight and the next one in the site's time zone, in
#: UTC in the database: a day at either end of the calendar has no such bounds.
FIRST_DAY = date.min + timedelta(days=1)
LAST_DAY = date.max - timedelta(days=1)


def _within_calendar(day: date | None) -> date | None:
    if day is not None and not FIRST_DAY <= day <= LAST_DAY:
        raise forms.ValidationError(f"Pick a date between {FIRST_DAY} and {LAST_DAY}.")
    return day


def _url(name: str, params: dict[str, Any]) -> str:
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return reverse(name) + (f"?{query}" if query else "")


@login_required
@require_GET
def job_list(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request)
    form = JobFilterForm(_with_default_size(request))
    context: dict[str, Any] = {
        "form": form,
        "main_filters": MAIN_FILTERS,
        "more_filters_active": any(
            request.GET.get(name) for name in form.fields if name not in MAIN_FILTERS
        ),
        "history": True,
        "jobs": [],
        "any_active": False,
        "is_first_page": True,
    }
    if form.is_valid():
        context.update(_page_context(request, membership.team, form))
    if request.htmx:
        response = render(request, "dashboard/job_list.html#job-rows", context)
        if not context["any_active"]:
            response.status_code = HttpResponseStopPolling.status_code
        return response
    return render(request, "dashboard/job_list.html", context)


def _with_default_size(request: HttpRequest) -> QueryDict:
    # So the "Per page" select shows the size in use, not its first option.
    data = request.GET.copy()
    if not data.get("per_page"):
        data["per_page"] = str(JOB_LIST_SIZE)
    return data


def _page_context(request: HttpRequest, team: Team, form: JobFilterForm) -> dict[str, Any]:
    filters = form.filters()
    size = form.cleaned_data["per_page"] or JOB_LIST_SIZE
    position = cursor_decode(request.GET.get("cursor", ""))
    page = keyset_page(jobs_for_page(team=team, filters=filters), position=position, size=size)
    params = filters.as_params()
    if size != JOB_LIST_SIZE:
        params["per_page"] = str(size)
    here = {**params, "cursor": request.GET.get("cursor", "") if position else ""}
    context = {
        "jobs": page.items,
        "any_active": any(job.status in JOB_ACTIVE for job in page.items),
        "filters": filters,
        "is_first_page": position is None,
        "older_url": _url("job_list", {**params, "cursor": page.next_cursor})
        if page.has_more
        else "",
        "newest_url": _url("job_list", params),
        "poll_url": _url("job_list", here),
        "export_csv_url": _url("job_export_csv", filters.as_params()),
        "export_jsonl_url": _url("job_export_jsonl", filters.as_params()),
    }
    if not request.htmx:  # the live rows do not change the count line
        context["match_count"] = jobs_count(team=team, filters=filters, limit=COUNT_LIMIT)
        context["count_limit"] = COUNT_LIMIT
    return context


# --- exports -------------------------------------------------------------------------------

EXPORT_FORMATS = {
    "csv": ("text/csv; charset=utf-8", csv_chunks),
    "jsonl": ("application/x-ndjson; charset=utf-8", jsonl_chunks),
}


@login_required
@require_GET
def job_export_csv(request: HttpRequest) -> HttpResponse:
    return _export(request, "csv")


@login_required
@require_GET
def job_export_jsonl(request: HttpRequest) -> HttpResponse:
    return _export(request, "jsonl")


def _export(request: HttpRequest, fmt: str) -> HttpResponse:
    """Exactly the set the history shows for the same query string, streamed in
    keyset chunks so a 100,000-job export holds one chunk in memory."""
    membership = require_membership(request)
    form = JobFilterForm(request.GET)
    if not form.is_valid():
        errors = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in form.errors.items())
        return HttpResponse(
            f"Invalid filters: {errors}\n", status=400, content_type="text/plain; charset=utf-8"
        )
    team = membership.team
    filters = form.filters()
    # Exports carry a team's prompts and outputs out of the app: keep a trace.
    audit(
        request.user,
        team,
        "jobs.exported",
        f"jobs ({fmt})",
        format=fmt,
        filters=filters.as_params(),
    )
    content_type, writer = EXPORT_FORMATS[fmt]
    chunks: Iterator[str] = writer(iter_keyset(jobs_for_export(team=team, filters=filters)))
    response = StreamingHttpResponse(chunks, content_type=content_type)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    filename = f"jobs-{slugify(team.name) or team.pk}-{stamp}.{fmt}"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    response["X-Accel-Buffering"] = "no"  # let a proxy pass the stream through
    return response
