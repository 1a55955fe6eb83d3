"""Comparison pages: the list, the new-comparison form (targets in a small
formset), the comparison page (a summary per target and the grid of rows ×
targets, live while running), ratings and notes, a retry of one target's
failed cells, and the grid's exports."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from dashboard.accounts import access
from dashboard.accounts.access import require_membership
from dashboard.accounts.audit import audit
from dashboard.compare import export, grid, reviews
from dashboard.compare import scores as compare_scores
from dashboard.compare.forms import ComparisonForm, TargetFormSet
from dashboard.compare.services import (
    ComparisonError,
    Target,
    comparison_create,
    comparison_status,
    target_retry_failed,
    targets_of,
)
from dashboard.core import clock, keyset
from dashboard.core.params import int_param, micros, micros_param
from dashboard.evals import significance
from dashboard.jobs import results
from dashboard.jobs.export import XLSX_TYPE
from dashboard.jobs.forms import SPEC_FIELDS
from dashboard.models import Comparison, Dataset, Job, Role
from dashboard.status import JOB_TERMINAL

from .jobs import rating_verdict
from .scope import posted_for_other_team

PAGE_SIZE = 50


@login_required
@require_GET
def comparison_list(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request)
    cursor = keyset.cursor_decode(request.GET.get("cursor") or "")
    page = keyset.keyset_page(
        Comparison.objects.filter(team=membership.team).select_related("created_by", "dataset"),
        position=cursor,
        size=PAGE_SIZE,
    )
    for comparison in page.items:
        comparison.targets = targets_of(comparison)
        comparison.status = comparison_status(comparison, comparison.targets)
    return render(
        request,
        "dashboard/comparison_list.html",
        {"page": page, "can_create": membership.allows(Role.MEMBER)},
    )


@login_required
def comparison_new(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request, Role.MEMBER)
    team = membership.team
    if request.method == "POST" and posted_for_other_team(request, membership):
        return redirect("comparison_new")
    if request.method == "POST":
        form = ComparisonForm(request.POST, team=team)
        targets = TargetFormSet(request.POST, team=team, prefix="target")
        if "add_target" in request.POST:
            return _form_page(request, *_with_one_more(request, team))
        comparison = _create(request, form, targets)
        if comparison is not None:
            return redirect(comparison)
        return _form_page(request, form, targets, status=400)
    initial, target_initial = _initial(request)
    form = ComparisonForm(initial=initial, team=team)
    targets = TargetFormSet(initial=target_initial, team=team, prefix="target")
    return _form_page(request, form, targets)


def _create(request: HttpRequest, form: ComparisonForm, targets: Any) -> Comparison | None:
    inputs = form.inputs if form.is_valid() else None
    valid = targets.is_valid()
    # Every target's spec is checked, so all its errors show at once.
    specs = [
        target.spec_for(inputs.prompts if inputs else None) if target.is_valid() else None
        for target in targets.forms
    ]
    if inputs is None or not valid or any(spec is None for spec in specs):
        return None
    team = form.team
    chosen = [
        Target(target.cleaned_data["credential"], spec, mode=target.cleaned_data["mode"])
        for target, spec in zip(targets.forms, specs, strict=True)
    ]
    try:
        comparison = comparison_create(
            team=team,
            name=form.cleaned_data["name"],
            user=request.user,
            inputs=inputs,
            targets=chosen,
            via="web",
        )
    except ComparisonError as exc:
        form.add_error(None, str(exc))
        return None
    messages.success(request, f"Comparison started: {len(chosen)} jobs over the same prompts.")
    return comparison


def _with_one_more(request: HttpRequest, team: Any) -> tuple[ComparisonForm, Any]:
    """The form as typed, unbound (no errors yet), with one more empty target."""
    data = request.POST
    total = int_param(data.get("target-TOTAL_FORMS"), minimum=0, maximum=8) or 0
    names = list(TargetFormSet.form.base_fields)
    typed = [{name: data.get(f"target-{i}-{name}") for name in names} for i in range(total)]
    initial = {name: data.get(name) for name in ComparisonForm.base_fields}
    initial.update(dataset=data.get("dataset"), prompt_template=data.get("prompt_template"))
    form = ComparisonForm(initial=initial, team=team)
    targets = TargetFormSet(initial=[*typed, {}][:8], team=team, prefix="target")
    return form, targets


def _initial(request: HttpRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """From ``?from_job=``: that job's prompts, and its target as the first;
    from ``?dataset=``: that dataset chosen."""
    initial: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []
    job_id = int_param(request.GET.get("from_job"), minimum=1)
    if job_id is not None:
        job, _ = access.object_for(request.user, Job.objects.all(), pk=job_id)
        initial.update(from_job=job.pk, name=f"Job {job.pk} compared")
        first = {"credential": job.credential_id, "model": job.model}
        first.update({k: job.spec.get(k) for k in SPEC_FIELDS if job.spec.get(k) not in (None, "")})
        first["options"] = job.spec.get("options") or None
        targets.append(first)
    dataset_id = int_param(request.GET.get("dataset"), minimum=1)
    if dataset_id is not None:
        dataset, _ = access.object_for(request.user, Dataset.objects.all(), pk=dataset_id)
        initial["dataset"] = dataset.pk
    return initial, targets


def _form_page(
    request: HttpRequest, form: ComparisonForm, targets: Any, *, status: int = 200
) -> HttpResponse:
    return render(
        request,
        "dashboard/comparison_new.html",
        {
            "form": form,
            "targets": targets,
            "source_job": form.source_job(),
            "can_add": len(targets.forms) < 8,
        },
        status=status,
    )


# --- the comparison page ----------------------------------------------------------------------


def _page_context(request: HttpRequest, comparison: Comparison, membership: Any) -> dict[str, Any]:
    targets = targets_of(comparison)
    after = int_param(request.GET.get("after"), minimum=-1)
    before = int_param(request.GET.get("before"))
    page = grid.grid_page(comparison, targets, after=after, before=before)
    grid.see_as(page.rows, request.user)
    _number_cells([cell for row in page.rows for cell in row.cells], targets)
    return {
        "comparison": comparison,
        "targets": targets,
        "summaries": grid.summaries(targets),
        "status": comparison_status(comparison, targets),
        "page": page,
        "total": targets[0].progress_total if targets else 0,
        "can_rate": membership.allows(Role.MEMBER),
        "since": micros(results.live_cursor(clock.now())),
        "first": page.first_index,
        "last": page.last_index,
        "page_query": request.GET.urlencode(),
    }


def _number_cells(cells: list[grid.Cell], targets: list[Job]) -> list[grid.Cell]:
    """Each cell's target number (T1, T2, …: its column, and its address)."""
    numbers = {target.pk: number for number, target in enumerate(targets, start=1)}
    for cell in cells:
        cell.number = numbers.get(cell.job_id, 0)  # type: ignore[attr-defined]
    return cells


@login_required
@require_GET
def comparison_detail(request: HttpRequest, pk: int) -> HttpResponse:
    row = int_param(request.GET.get("row"), minimum=0)
    target = int_param(request.GET.get("target"), minimum=1, maximum=8)
    return _comparison_page(request, pk, cell=(row, target) if row is not None and target else None)


def _comparison_page(
    request: HttpRequest, pk: int, *, cell: tuple[int, int] | None, strict: bool = False
) -> HttpResponse:
    comparison, membership = access.object_for(
        request.user, Comparison.objects.select_related("created_by", "dataset"), pk=pk
    )
    context = _page_context(request, comparison, membership)
    context["terminal"] = context["status"] in JOB_TERMINAL
    context["scored"] = scores_panel(context["targets"])
    detail = _cell_detail(request, comparison, context["targets"], *cell) if cell else None
    if detail is None and strict:
        raise Http404("The comparison has no such cell.")
    context.update(detail or {})
    return render(request, "dashboard/comparison_detail.html", context)


#: Disagreeing cells listed on the page per judge (the API pages them all).
DISAGREEMENTS_SHOWN = 20


def scores_panel(targets: list[Job]) -> dict[str, Any]:
    """What the page's scores panels show: per scorer each target's pass rate
    and interval, per pair the McNemar verdict in words, per judge its
    agreement with reviewers and the first cells where they disagree."""
    scored = compare_scores.comparison_scores(targets)
    label = {job.pk: f"T{number}" for number, job in enumerate(targets, start=1)}
    names: list[str] = []
    for job in targets:
        names += [s["name"] for s in job.scorers if s["name"] not in names]
    rates = [
        {
            "name": name,
            "cells": [
                next((s for s in scored["scores"][job.pk] if s["name"] == name), None)
                for job in targets
            ],
        }
        for name in names
    ]
    pairs = [
        {
            **pair,
            "a_label": label[pair["a"]],
            "b_label": label[pair["b"]],
            "verdict": significance.verdict(
                pair["p"]
                if pair["only_a"] + pair["only_b"] + pair["both"] + pair["neither"]
                else None
            ),
            "significant": pair["p"] < significance.ALPHA,
        }
        for pair in scored["significance"]
    ]
    agreement = []
    for row in scored["agreement"]:
        cells, more = compare_scores.disagreements(
            targets, row["scorer"], after=None, size=DISAGREEMENTS_SHOWN
        )
        agreement.append(
            {
                **row,
                "cells_list": [{"cell": c, "label": label.get(c.job, "")} for c in cells],
                "more": more is not None,
            }
        )
    return {"rates": rates, "pairs": pairs, "agreement": agreement, "labels": label}


@login_required
@require_GET
def comparison_cell(request: HttpRequest, pk: int, index: str, target: str) -> HttpResponse:
    """One cell whole (the detail panel): for htmx the panel alone, else the
    comparison page with the panel open."""
    if not request.htmx:
        return _comparison_page(request, pk, cell=(int(index), int(target)), strict=True)
    comparison, membership = access.object_for(request.user, Comparison.objects.all(), pk=pk)
    return _cell_panel(request, comparison, int(index), int(target), membership)


def _cell_panel(
    request: HttpRequest,
    comparison: Comparison,
    index: int,
    number: int,
    membership: Any,
    *,
    oob: bool = False,
) -> HttpResponse:
    targets = targets_of(comparison)
    detail = _cell_detail(request, comparison, targets, index, number)
    if detail is None:
        raise Http404("The comparison has no such cell.")
    context = {
        **detail,
        "comparison": comparison,
        "can_rate": membership.allows(Role.MEMBER),
        "total": targets[0].progress_total if targets else 0,
        "oob_cell": detail["detail"] if oob else None,
    }
    return render(request, "dashboard/comparison_detail.html#cell-detail", context)


def _cell_detail(
    request: HttpRequest, comparison: Comparison, targets: list[Job], index: int, number: int
) -> dict[str, Any] | None:
    """The cell panel's context: the row, the cell (its item whole, scores,
    ratings as the viewer sees them), the address that closes it."""
    if not 1 <= number <= len(targets):
        return None
    row = grid.row_at(comparison, targets, index)
    if row is None:
        return None
    grid.see_as([row], request.user)
    cell = _number_cells([row.cells[number - 1]], targets)[0]
    job = targets[number - 1]
    if cell.item is not None:
        results.with_scores(job, [cell.item])
    output, is_json = results.output_shown(cell.item.output if cell.item else None)
    query = request.GET.copy()
    for key in ("row", "target"):
        query.pop(key, None)
    return {
        "detail": cell,
        "detail_row": row,
        "detail_job": job,
        "detail_output": output,
        "detail_is_json": is_json,
        "close_query": query.urlencode(),
        "page_query": query.urlencode(),
    }


@login_required
@require_GET
def comparison_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The page's poller: the summary, and the cells of the page written since
    the client's cursor, as out-of-band swaps; 286 once every job has ended."""
    comparison, membership = access.object_for(request.user, Comparison.objects.all(), pk=pk)
    targets = targets_of(comparison)
    since = micros_param(request.GET.get("since"))
    first = int_param(request.GET.get("first"))
    last = int_param(request.GET.get("last"))
    now = clock.now()
    status = comparison_status(comparison, targets)
    terminal = status in JOB_TERMINAL
    changed: list[grid.Cell] = []
    if (since is not None or terminal) and first is not None and last is not None:
        # The last poll sends the whole page: every write committed before the
        # targets ended, whatever the cursor says.
        cells = grid.changed_cells(targets, first, last, None if terminal else since)
        changed = _number_cells([cell.see_as(request.user) for cell in cells], targets)
    context = {
        "comparison": comparison,
        "targets": targets,
        "summaries": grid.summaries(targets),
        "status": status,
        "terminal": terminal,
        "live": True,
        "changed": changed,
        "can_rate": membership.allows(Role.MEMBER),
        "since": micros(results.live_cursor(now)),
        "first": first,
        "last": last,
    }
    response = render(request, "dashboard/comparison_detail.html#live-update", context)
    if terminal:
        response.status_code = HttpResponseStopPolling.status_code
    return response


def _back(request: HttpRequest, comparison: Comparison) -> HttpResponse:
    query = request.POST.get("page_query") or ""
    url = comparison.get_absolute_url() + (f"?{query}" if query and "\x00" not in query else "")
    return HttpResponseRedirect(url)


def _row(request: HttpRequest, comparison: Comparison, index: int) -> HttpResponse:
    """The grid's row again (an htmx swap after a rating or a note)."""
    targets = targets_of(comparison)
    row = grid.row_at(comparison, targets, index)
    if row is not None:
        grid.see_as([row], request.user)
        _number_cells(row.cells, targets)
    context = {
        "comparison": comparison,
        "row": row,
        "targets": targets,
        "can_rate": True,
        "page_query": request.POST.get("page_query") or "",
    }
    return render(request, "dashboard/comparison_detail.html#grid-row", context)


@login_required
@require_POST
def comparison_rate(request: HttpRequest, pk: int) -> HttpResponse:
    comparison, _ = access.object_for(
        request.user, Comparison.objects.all(), role=Role.MEMBER, pk=pk
    )
    index = int_param(request.POST.get("index"))
    job_id = int_param(request.POST.get("job"), minimum=1)
    job = comparison.jobs.filter(pk=job_id).first() if job_id is not None else None
    error = ""
    if index is None or job is None:
        error = "Rate a cell of this comparison (a row and one of its targets)."
    else:
        try:
            reviews.rating_set(job=job, index=index, user=request.user, **rating_verdict(request))
        except reviews.ReviewError as exc:
            error = str(exc)
    if error:
        messages.error(request, error)
        return _back(request, comparison) if not request.htmx else HttpResponse(error, status=400)
    if request.htmx and (number := int_param(request.POST.get("panel"), minimum=1)):
        return _rated_in_panel(request, comparison, index, number)
    if request.htmx:
        return _row(request, comparison, index)
    if number := int_param(request.POST.get("panel"), minimum=1, maximum=8):
        # From the panel without htmx: back to the page with that panel open.
        url = comparison.get_absolute_url() + f"?row={index}&target={number}"
        return HttpResponseRedirect(url)
    return _back(request, comparison)


def _rated_in_panel(
    request: HttpRequest, comparison: Comparison, index: int, number: int
) -> HttpResponse:
    """A rating from the detail panel: the panel again, and its cell in the
    grid out of band."""
    membership = access.membership_in(request.user, comparison.team_id)
    return _cell_panel(request, comparison, index, number, membership, oob=True)


@login_required
@require_POST
def comparison_note(request: HttpRequest, pk: int) -> HttpResponse:
    comparison, _ = access.object_for(
        request.user, Comparison.objects.all(), role=Role.MEMBER, pk=pk
    )
    index = int_param(request.POST.get("index"))
    try:
        reviews.note_add(
            comparison=comparison,
            index=-1 if index is None else index,
            user=request.user,
            text=request.POST.get("note") or "",
        )
    except reviews.ReviewError as exc:
        messages.error(request, str(exc))
        return (
            _back(request, comparison) if not request.htmx else HttpResponse(str(exc), status=400)
        )
    if request.htmx and index is not None:
        return _row(request, comparison, index)
    return _back(request, comparison)


@login_required
@require_POST
def comparison_retry(request: HttpRequest, pk: int) -> HttpResponse:
    comparison, _ = access.object_for(
        request.user, Comparison.objects.select_related("team"), role=Role.MEMBER, pk=pk
    )
    job_id = int_param(request.POST.get("job"), minimum=1)
    target = (
        comparison.jobs.select_related("team", "credential").filter(pk=job_id).first()
        if job_id is not None
        else None
    )
    if target is None:
        messages.error(request, "Choose one of this comparison's targets to retry.")
        return _back(request, comparison)
    try:
        new = target_retry_failed(comparison, target, user=request.user)
    except ComparisonError as exc:
        messages.error(request, str(exc))
        return _back(request, comparison)
    audit(
        request.user,
        comparison.team,
        "comparison.retried",
        comparison,
        job=target.pk,
        new_job=new.pk,
    )
    messages.success(
        request,
        f"Retrying {new.progress_total} cell(s) of job {target.pk} as job {new.pk}; "
        "they join the grid as they complete.",
    )
    return _back(request, comparison)


@login_required
@require_GET
def comparison_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    comparison, _ = access.object_for(request.user, Comparison.objects.all(), pk=pk)
    targets = targets_of(comparison)
    name = f"comparison-{comparison.pk}"
    audit(request.user, comparison.team, "comparison.exported", comparison, format=fmt)
    if fmt == "xlsx":
        return FileResponse(
            export.grid_xlsx(comparison, targets),
            as_attachment=True,
            filename=f"{name}.xlsx",
            content_type=XLSX_TYPE,
        )
    chunks = (
        export.grid_csv(comparison, targets)
        if fmt == "csv"
        else export.grid_jsonl(comparison, targets)
    )
    response = StreamingHttpResponse(
        chunks, content_type="text/csv" if fmt == "csv" else "application/x-ndjson"
    )
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response
