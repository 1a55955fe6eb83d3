"""Comparisons: start one (a sibling job per target over the same prompts or
dataset rows), read it (the targets' summary and a page of the grid), and
rate its cells."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status

from dashboard.accounts import access
from dashboard.compare import grid, reviews
from dashboard.compare import scores as compare_scores
from dashboard.compare.services import (
    ComparisonError,
    Target,
    comparison_create,
    comparison_status,
    targets_of,
)
from dashboard.core import keyset
from dashboard.evals.scorers import ScorerError
from dashboard.evals.services import NotFinished
from dashboard.jobs.spec import SpecError, mode_problem, prompts_error
from dashboard.models import Comparison, Credential, Job, Role
from dashboard.status import JOB_ACTIVE

from .errors import ApiError, FieldErrors, invalid
from .jobs import job_inputs, job_spec
from .paging import list_position
from .schemas import (
    MAX_ID,
    ComparisonCreated,
    ComparisonIn,
    ComparisonOut,
    ComparisonPage,
    ComparisonScoresOut,
    DisagreementPage,
    Error,
    RatingIn,
    RatingOut,
    ScorersIn,
)
from .scope import credential_for, in_path

router = Router()

ViewedComparison = in_path(Comparison.objects.select_related("created_by"))
MemberComparison = in_path(Comparison.objects.select_related("team"), Role.MEMBER)
PAGE_SIZE = 20
MAX_PAGE_SIZE = 200
#: Comparisons per page of the list (rows of one comparison are PAGE_SIZE).
LIST_SIZE = 50
LIST_PARAMS = ("limit", "cursor")


@router.post(
    "",
    response={201: ComparisonCreated, (400, 401, 403, 409, 413): Error},
    url_name="api_comparisons",
)
def create_comparison(request: HttpRequest, payload: ComparisonIn) -> Any:
    """Start a comparison (team members): 2 to 8 targets, each a job over the
    same `prompts`, or the rows of `dataset` through `prompt_template`."""
    credentials = _credentials(request.auth, payload)
    team = credentials[0].team
    inputs = job_inputs(request.auth, payload, team.pk)
    problem = prompts_error(inputs.prompts)
    if problem:  # every target runs over them: said once, not once per target
        raise invalid({"dataset" if inputs.dataset else "prompts": [problem]})
    errors = FieldErrors()
    targets = []
    for number, (target, credential) in enumerate(
        zip(payload.targets, credentials, strict=True), 1
    ):
        if target.output_schema is None and payload.output_schema is not None:
            target = target.model_copy(update={"output_schema": payload.output_schema})
        problem = mode_problem(credential, target.mode)
        if problem:
            errors.add("targets", f"Target {number}: mode: {problem}")
        try:
            spec = job_spec(target, credential, inputs.prompts)
            targets.append(Target(credential, spec, mode=target.mode or Job.Mode.ONLINE))
        except SpecError as exc:
            for field, messages in exc.fields.items():
                errors.add("targets", *(f"Target {number}: {field}: {m}" for m in messages))
    errors.raise_if_any()
    try:
        comparison = comparison_create(
            team=team,
            name=payload.name,
            user=request.auth,
            inputs=inputs,
            targets=targets,
            via="api",
        )
    except ComparisonError as exc:
        raise invalid({"name" if "name" in str(exc) else "targets": [str(exc)]}) from None
    return Status(201, {"id": comparison.pk, "jobs": [job.pk for job in targets_of(comparison)]})


def _credentials(user: Any, payload: ComparisonIn) -> list[Credential]:
    """Every target's credential, among the caller's teams and all of one team."""
    errors = FieldErrors()
    found: list[Credential] = []
    for number, target in enumerate(payload.targets, start=1):
        try:
            found.append(credential_for(user, target.credential, payload.team))
        except ApiError as exc:
            if exc.status != 400:
                raise
            errors.add("targets", f"Target {number}: {exc.fields['credential'][0]}")
    errors.raise_if_any()
    if len({credential.team_id for credential in found}) > 1:
        raise invalid({"targets": ["Every target's credential must be of one team."]})
    return found


@router.get("", response={200: ComparisonPage, (400, 401): Error}, url_name="api_comparisons")
def list_comparisons(
    request: HttpRequest,
    limit: int = Query(LIST_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Comparisons per page."),
    cursor: str | None = Query(None, description="From a `next` URL; follow it as is."),
) -> Any:
    """Your teams' comparisons, newest first, one page at a time: each with
    its status and its targets (a job each)."""
    errors = FieldErrors()
    position = list_position(request, cursor, errors, known=LIST_PARAMS)
    errors.raise_if_any()
    page = keyset.keyset_page(
        access.visible(Comparison.objects.all(), request.auth), position=position, size=limit
    )
    targets = _targets_by_comparison([comparison.pk for comparison in page.items])
    retrying = set(
        Job.objects.filter(
            retry_of__comparison_id__in=[c.pk for c in page.items], status__in=JOB_ACTIVE
        ).values_list("retry_of__comparison_id", flat=True)
    )
    next_url = None
    if page.has_more:
        query = request.GET.copy()
        query["cursor"] = page.next_cursor
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {
        "results": [
            _summary_json(c, targets.get(c.pk, []), retrying=c.pk in retrying) for c in page.items
        ],
        "next": next_url,
    }


def _targets_by_comparison(ids: list[int]) -> dict[int, list[Job]]:
    """Each comparison's targets in the order given, in one query for a page."""
    found: dict[int, list[Job]] = {}
    jobs = (
        Job.objects.filter(comparison_id__in=ids)
        .order_by("id")
        .only("id", "comparison_id", "credential_id", "provider", "model", "status")
    )
    for job in jobs:
        found.setdefault(job.comparison_id, []).append(job)
    return found


def _summary_json(comparison: Comparison, targets: list[Job], *, retrying: bool) -> dict[str, Any]:
    return {
        "id": comparison.pk,
        "name": comparison.name,
        "status": comparison_status(comparison, targets, retrying=retrying),
        "targets": [
            {
                "job": job.pk,
                "credential": job.credential_id,
                "provider": job.provider,
                "model": job.model,
                "status": job.status,
            }
            for job in targets
        ],
        "created_at": comparison.created_at,
    }


@router.get(
    "/{objectid:pk}",
    response={200: ComparisonOut, (400, 401, 404): Error},
    url_name="api_comparison",
)
def get_comparison(
    request: HttpRequest,
    comparison: ViewedComparison,
    limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Rows per page."),
    after: int | None = Query(None, ge=-1, le=MAX_ID, description="From a `next` URL."),
) -> Any:
    """The comparison: a summary per target, and a page of rows (each with one
    cell per target: output or error, validity, latency, ratings)."""
    targets = targets_of(comparison)
    page = grid.grid_page(comparison, targets, after=after, size=limit)
    next_url = None
    if page.next_after is not None:
        query = request.GET.copy()
        query["after"] = str(page.next_after)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    scored = compare_scores.comparison_scores(targets)
    return {
        "id": comparison.pk,
        "name": comparison.name,
        "status": comparison_status(comparison, targets),
        "dataset": comparison.dataset_id,
        "prompt_template": comparison.prompt_template,
        "created_by": comparison.created_by.get_username() if comparison.created_by else None,
        "created_at": comparison.created_at,
        "targets": [
            {**_target_json(summary), "scores": scored["scores"][summary.job.pk]}
            for summary in grid.summaries(targets)
        ],
        "significance": scored["significance"],
        "agreement": scored["agreement"],
        "rows": [_row_json(row) for row in page.rows],
        "next": next_url,
    }


def _target_json(summary: grid.TargetSummary) -> dict[str, Any]:
    job = summary.job
    return {
        "job": job.pk,
        "credential": job.credential_id,
        "provider": job.provider,
        "model": job.model,
        "status": job.status,
        "counts": job.counts,
        "latency_ms_p50": summary.latency_p50,
        "latency_ms_p95": summary.latency_p95,
        "cost": summary.cost,
        "wins": summary.wins,
        "up": summary.up,
        "down": summary.down,
    }


def _row_json(row: grid.GridRow) -> dict[str, Any]:
    return {
        "index": row.index,
        "input": row.input,
        "fields": row.input_fields,
        "cells": [_cell_json(cell) for cell in row.cells],
        "notes": [
            {
                "user": note.author.get_username() if note.author else None,
                "text": note.text,
                "created_at": note.created_at,
            }
            for note in row.notes
        ],
    }


def _cell_json(cell: grid.Cell) -> dict[str, Any]:
    item = cell.item
    return {
        "job": cell.job_id,
        "status": item.status if item else None,
        "output": item.output if item else None,
        "error": item.error if item else "",
        "valid": item.valid if item else None,
        "latency_ms": item.latency_ms if item else None,
        "from_job": getattr(item, "merged_from", None),
        "rating": {
            "up": cell.up,
            "down": cell.down,
            "best": cell.best,
            "reviews": [
                {
                    "user": r.user.get_username(),
                    "score": r.score,
                    "best": r.best,
                    "created_at": r.created_at,
                    "updated_at": r.updated_at,
                }
                for r in cell.ratings
            ],
        },
    }


@router.post(
    "/{objectid:pk}/ratings",
    response={200: RatingOut, (400, 401, 403, 404, 413): Error},
    url_name="api_comparison_ratings",
)
def rate_cell(request: HttpRequest, comparison: MemberComparison, payload: RatingIn) -> Any:
    """Rate a cell (team members): `{"index", "job", "score": -1 or 1}`, or pick
    the best of a row: `{"index", "best": job}`. One rating per reviewer per
    cell; the latest wins."""
    scored = payload.job is not None or payload.score is not None
    if scored == (payload.best is not None):
        raise invalid(
            {"__all__": ['Send {"index", "job", "score"} or {"index", "best": job}, not both.']}
        )
    if scored and (payload.job is None or payload.score is None):
        missing = "job" if payload.job is None else "score"
        raise invalid({missing: ["A score names the job (target) and the score, -1 or 1."]})
    job_id = payload.best if payload.best is not None else payload.job
    field = "best" if payload.best is not None else "job"
    job = comparison.jobs.filter(pk=job_id).first()
    if job is None:
        raise invalid({field: [f"Job {job_id} is not a target of this comparison."]})
    verdict: dict[str, Any] = (
        {"best": True} if payload.best is not None else {"score": payload.score}
    )
    try:
        rating = reviews.rating_set(job=job, index=payload.index, user=request.auth, **verdict)
    except reviews.ReviewError as exc:
        raise invalid({"index": [str(exc)]}) from None
    assert rating is not None
    return {
        "index": rating.index,
        "job": rating.job_id,
        "user": request.auth.get_username(),
        "score": rating.score,
        "best": rating.best,
        "updated_at": rating.updated_at,
    }


@router.post(
    "/{objectid:pk}/scorers",
    response={200: ComparisonScoresOut, (400, 401, 403, 404, 409, 413): Error},
    url_name="api_comparison_scorers",
)
def add_comparison_scorers(
    request: HttpRequest, comparison: MemberComparison, payload: ScorersIn
) -> Any:
    """Add scorers to every target (team members), once every target has
    ended (else 409): each target's finished cells are scored by a task,
    without calling a model. The answer's scores fill in as the tasks run."""
    if not payload.scorers:
        raise invalid({"scorers": ["Give at least one scorer."]})
    try:
        compare_scores.comparison_scorers_add(
            targets_of(comparison), payload.scorers, user=request.auth, via="api"
        )
    except ScorerError as exc:
        raise invalid(exc.fields) from None
    except NotFinished as exc:
        raise ApiError(409, str(exc)) from None
    targets = targets_of(comparison)
    scored = compare_scores.comparison_scores(targets)
    return {
        "targets": [{"job": job.pk, "scores": scored["scores"][job.pk]} for job in targets],
        "significance": scored["significance"],
        "agreement": scored["agreement"],
        "rescoring": True,
    }


@router.get(
    "/{objectid:pk}/disagreements",
    response={200: DisagreementPage, (400, 401, 404): Error},
    url_name="api_comparison_disagreements",
)
def list_disagreements(
    request: HttpRequest,
    comparison: ViewedComparison,
    scorer: str = Query(..., max_length=100, description="A judge scorer of the targets."),
    limit: int = Query(
        compare_scores.DISAGREEMENTS_PAGE, ge=1, le=MAX_PAGE_SIZE, description="Cells per page."
    ),
    after: str | None = Query(None, max_length=40, description="From a `next` URL."),
) -> Any:
    """The cells (row index, target job) where the judge `scorer` and the
    reviewers' ratings disagree, in row order."""
    targets = targets_of(comparison)
    errors = FieldErrors()
    if scorer not in compare_scores.judges(targets):
        errors.add("scorer", f"No judge scorer named {scorer!r} on this comparison's targets.")
    position = None
    if after is not None:
        parts = after.split(":")
        if len(parts) == 2 and all(p.isdigit() and len(p) <= 10 for p in parts):
            position = (int(parts[0]), int(parts[1]))
        else:
            errors.add("after", "Follow a `next` URL as is (after=<index>:<job>).")
    errors.raise_if_any()
    cells, more = compare_scores.disagreements(targets, scorer, after=position, size=limit)
    next_url = None
    if more is not None:
        query = request.GET.copy()
        query["after"] = f"{more[0]}:{more[1]}"
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {
        "scorer": scorer,
        "cells": [
            {"index": c.index, "job": c.job, "judge": c.judge, "human": c.human, "reason": c.reason}
            for c in cells
        ],
        "next": next_url,
    }
