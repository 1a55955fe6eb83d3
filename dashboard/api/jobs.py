"""Jobs: submit, list (newest first, keyset pages), show, cancel, retry."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Query, Router, Status

from dashboard.accounts import access
from dashboard.core import keyset
from dashboard.datasets.services import Inputs, inputs_from_dataset
from dashboard.datasets.template import TemplateError
from dashboard.evals import diff as job_diff
from dashboard.evals.scorers import ScorerError, normalize_scorers
from dashboard.evals.scores import scores_summary
from dashboard.evals.services import NotFinished, scorers_add
from dashboard.jobs import cost, results
from dashboard.jobs.serialize import job_json
from dashboard.jobs.services import job_cancel, job_retry, job_submit
from dashboard.jobs.spec import FIELDS, SpecError, build_spec, mode_problem
from dashboard.models import Credential, Dataset, Item, Job, Role
from dashboard.status import JobStatus
from providers import PROVIDERS, JobSpec

from .errors import ApiError, FieldErrors, invalid
from .paging import list_position
from .schemas import (
    MAX_ID,
    DiffOut,
    Error,
    EstimateOut,
    ItemPage,
    JobCreated,
    JobIn,
    JobOut,
    JobPage,
    NoBody,
    RetryIn,
    ScorersIn,
    ScoresOut,
)
from .scope import credential_for, in_path

router = Router()

ViewedJob = in_path(Job.objects.select_related("created_by"))
MemberJob = in_path(Job.objects.select_related("team", "credential"), Role.MEMBER)

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
#: The body's fields that are the spec's (all but ``prompts``, which a
#: dataset may give instead).
SPEC_BODY_FIELDS = tuple(name for name in FIELDS if name != "prompts")
LIST_PARAMS = ("status", "provider", "model", "created_by", "team", "limit", "cursor")


# --- answers ---------------------------------------------------------------------------------


def job_answer(pk: int) -> dict[str, Any]:
    return job_json(Job.objects.select_related("created_by").get(pk=pk))


# --- submit -------------------------------------------------------------------------------------


@router.post(
    "",
    response={200: EstimateOut, 201: JobCreated, (400, 401, 403, 409, 413): Error},
    url_name="api_jobs",
)
def create_job(request: HttpRequest, payload: JobIn) -> Any:
    """Submit a job (team members): one item per prompt, on the credential's
    provider. With `dry_run` nothing is saved: 200 with the estimate. A job
    whose estimate would take the team past its monthly budget is a 409."""
    credential = credential_for(request.auth, payload.credential, payload.team)
    inputs = job_inputs(request.auth, payload, credential.team_id)
    mode = payload.mode or Job.Mode.ONLINE
    try:
        spec = job_spec(payload, credential, inputs.prompts)
    except SpecError as exc:
        fields = exc.fields
        problem = mode_problem(credential, mode)
        raise invalid({**fields, "mode": [problem]} if problem else fields) from None
    problem = mode_problem(credential, mode)
    if problem:
        raise invalid({"mode": [problem]})
    scorers = job_scorers(payload.scorers, inputs, credential.team)
    if payload.dry_run:
        estimate = cost.spec_estimate(credential.team, credential.provider, spec, mode)
        return Status(200, {"estimate": estimate.as_json()})
    try:
        job = job_submit(
            via="api",
            team=credential.team,
            credential=credential,
            spec=spec,
            user=request.auth,
            input_fields=inputs.input_fields,
            input_columns=inputs.columns,
            dataset=inputs.dataset,
            mode=mode,
            scorers=scorers,
            cache=bool(payload.cache),
        )
    except cost.BudgetExceeded as exc:
        raise ApiError(409, str(exc)) from None
    return Status(201, {"id": job.pk, "status": job.status})


def job_spec(payload: Any, credential: Credential, prompts: list[str]) -> JobSpec:
    """The JobSpec of a body (a job's, or a comparison's target) over
    ``prompts`` on this credential; SpecError names every field it refuses."""
    values = {name: getattr(payload, name) for name in SPEC_BODY_FIELDS}  # not ``mode``
    return build_spec(credential, {**values, "prompts": prompts})


def job_scorers(raw: Any, inputs: Inputs, team: Any) -> list[dict[str, Any]]:
    """The body's scorers, normalized, or a 400 naming each refused scorer."""
    try:
        return normalize_scorers(
            raw, columns=inputs.columns if inputs.dataset is not None else None, team=team
        )
    except ScorerError as exc:
        raise invalid(exc.fields) from None


def job_inputs(user: Any, payload: Any, team_id: int) -> Inputs:
    """The prompts of a body: ``prompts``, or ``dataset`` + ``prompt_template``
    (one per row of a dataset of the team). Both or neither is a 400."""
    has_dataset = payload.dataset is not None or payload.prompt_template is not None
    if payload.prompts is not None and has_dataset:
        raise invalid({"prompts": ["Give prompts, or dataset and prompt_template, not both."]})
    if payload.prompts is not None:
        return Inputs(prompts=list(payload.prompts))
    if payload.dataset is None or not (payload.prompt_template or "").strip():
        missing = (
            "prompts"
            if not has_dataset
            else "dataset"
            if payload.dataset is None
            else "prompt_template"
        )
        raise invalid(
            {missing: ["Give prompts, or a dataset and a prompt_template with {column} in it."]}
        )
    dataset = (
        access.visible(Dataset.objects.all(), user)
        .filter(pk=payload.dataset, team_id=team_id)
        .first()
    )
    if dataset is None:
        raise invalid({"dataset": [f"No dataset with id {payload.dataset} in this team."]})
    try:
        return inputs_from_dataset(dataset, payload.prompt_template)
    except TemplateError as exc:
        raise invalid({"prompt_template": [str(exc)]}) from None


# --- read ------------------------------------------------------------------------------------------


@router.get("", response={200: JobPage, (400, 401): Error}, url_name="api_jobs")
def list_jobs(
    request: HttpRequest,
    status: str | None = Query(
        None, description=f"Comma-separated: {', '.join(JobStatus.values)}."
    ),
    provider: str | None = Query(None, description=f"Comma-separated: {', '.join(PROVIDERS)}."),
    model: str | None = Query(None, description="The exact model name."),
    created_by: str | None = Query(None, description="A username."),
    team: int | None = Query(None, ge=1, le=MAX_ID, description="One of your teams' ids."),
    limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Jobs per page."),
    cursor: str | None = Query(None, description="From a `next` URL; follow it as is."),
) -> Any:
    """Your teams' jobs, newest first, one page at a time."""
    errors = FieldErrors()
    for name in request.GET:
        if name not in LIST_PARAMS:
            errors.add(name, f"Unknown parameter; expected one of {', '.join(LIST_PARAMS)}.")
    jobs = access.visible(Job.objects.all(), request.auth)
    if statuses := choices(status, JobStatus.values, "status", errors):
        jobs = jobs.filter(status__in=statuses)
    if providers := choices(provider, list(PROVIDERS), "provider", errors):
        jobs = jobs.filter(provider__in=providers)
    if model:
        jobs = jobs.filter(model=model)
    if created_by:
        jobs = jobs.filter(created_by__username=created_by)
    if team is not None:
        jobs = jobs.filter(team_id=team)
    position = list_position(request, cursor, errors)
    errors.raise_if_any()
    return page_of(request, jobs, position, limit)


def choices(raw: str | None, allowed: list[str], name: str, errors: FieldErrors) -> list[str]:
    values = [v.strip() for v in (raw or "").split(",") if v.strip()]
    unknown = [v for v in values if v not in allowed]
    if unknown:
        errors.add(name, f"Unknown {name} {unknown[0]!r}; one of {', '.join(allowed)}.")
    return values


def page_of(
    request: HttpRequest, jobs: QuerySet[Job], position: keyset.Position | None, limit: int
) -> dict[str, Any]:
    page = keyset.keyset_page(
        jobs.select_related("created_by").defer("raw_result"), position=position, size=limit
    )
    next_url = None
    if page.has_more:
        query = request.GET.copy()
        query["cursor"] = page.next_cursor
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"results": [job_json(job, with_log=False) for job in page.items], "next": next_url}


@router.get("/{objectid:pk}", response={200: JobOut, (400, 401, 404): Error}, url_name="api_job")
def get_job(request: HttpRequest, job: ViewedJob) -> Any:
    """A job with its outputs and log."""
    return job_json(job)


# --- change ----------------------------------------------------------------------------------------


@router.post(
    "/{objectid:pk}/cancel",
    response={200: JobOut, (400, 401, 403, 404, 409, 413): Error},
    url_name="api_job_cancel",
)
def cancel_job(request: HttpRequest, job: MemberJob, payload: NoBody | None = None) -> Any:
    """Cancel a job that has not finished (team members); a finished one is a 409."""
    if not job_cancel(job, user=request.auth, via="api"):
        job.refresh_from_db(fields=["status"])
        raise ApiError(409, f"Job {job.pk} is already {job.status}; nothing to cancel.")
    return job_answer(job.pk)


@router.post(
    "/{objectid:pk}/retry",
    response={201: JobOut, (400, 401, 403, 404, 409, 413): Error},
    url_name="api_job_retry",
)
def retry_job(request: HttpRequest, job: MemberJob, payload: RetryIn | None = None) -> Any:
    """A new job linked to the first by `retry_of`: all the rows, only those
    that did not complete, or only the invalid ones (optionally repaired);
    its items keep `source_index`."""
    which = {
        "failed_only": bool(payload and payload.failed_only),
        "invalid_only": bool(payload and payload.invalid_only),
        "repair": bool(payload and payload.repair),
    }
    if which["repair"] and not which["invalid_only"]:
        raise ApiError(400, "repair applies to invalid rows.", {"repair": ["Needs invalid_only."]})
    if which["failed_only"] and which["invalid_only"]:
        raise ApiError(
            400,
            "Retry either the failed rows or the invalid ones.",
            {"invalid_only": ["Not together with failed_only."]},
        )
    mode = payload.mode if payload else None
    if mode and job.credential is not None:
        problem = mode_problem(job.credential, mode)
        if problem:
            raise ApiError(400, problem, {"mode": [problem]})
    try:
        new = job_retry(job, user=request.auth, via="api", mode=mode, **which)
    except ValueError as exc:
        raise ApiError(409, str(exc)) from None
    return Status(201, job_answer(new.pk))


@router.post(
    "/{objectid:pk}/scorers",
    response={200: ScoresOut, (400, 401, 403, 404, 409, 413): Error},
    url_name="api_job_scorers",
)
def add_scorers(request: HttpRequest, job: MemberJob, payload: ScorersIn) -> Any:
    """Add scorers to a finished job (team members): its finished items are
    scored by a task, without calling the model again; a job still running
    is a 409. The answer's `scores` fill in as the task runs."""
    if not payload.scorers:
        raise invalid({"scorers": ["Give at least one scorer."]})
    try:
        scorers_add(job, payload.scorers, user=request.auth, via="api")
    except ScorerError as exc:
        raise invalid(exc.fields) from None
    except NotFinished as exc:
        raise ApiError(409, str(exc)) from None
    job = Job.objects.get(pk=job.pk)
    return {"scores": scores_summary(job), "rescoring": True}


# --- items -----------------------------------------------------------------------------------------

ITEM_PARAMS = ("status", "valid", "score", "merged", "limit", "after")


@router.get(
    "/{objectid:pk}/items",
    response={200: ItemPage, (400, 401, 404): Error},
    url_name="api_job_items",
)
def list_items(
    request: HttpRequest,
    job: ViewedJob,
    status: str | None = Query(None, description="One of pending, running, completed, ..."),
    valid: bool | None = Query(None, description="true: valid rows; false: invalid ones."),
    score: str | None = Query(None, description="<scorer>:pass or <scorer>:fail."),
    merged: bool = Query(False, description="Each row's latest completed attempt across retries."),
    limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Items per page."),
    after: int | None = Query(None, ge=-1, le=MAX_ID, description="From a `next` URL."),
) -> Any:
    """The job's items in index order, a page at a time."""
    errors = FieldErrors()
    for name in request.GET:
        if name not in ITEM_PARAMS:
            errors.add(name, f"Unknown parameter; expected one of {', '.join(ITEM_PARAMS)}.")
    validity = "" if valid is None else ("valid" if valid else "invalid")
    item_filter, problems = results.parse_filter(
        status, validity, score, [scorer["name"] for scorer in job.scorers]
    )
    for name, message in problems.items():
        errors.add(name, message)
    errors.raise_if_any()
    page = results.items_page(job, after=after, item_filter=item_filter, size=limit)
    items = results.merge_retries(job, page.items) if merged else page.items
    scores = results.item_scores(items) if job.scorers else {}
    next_url = None
    if page.next_after is not None:
        query = request.GET.copy()
        query["after"] = str(page.next_after)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"items": [item_json(item, scores.get(item.pk, [])) for item in items], "next": next_url}


def item_json(item: Item, scores: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "index": item.index,
        "source_index": item.source_index,
        "input": item.input,
        "fields": item.input_fields,
        "status": item.status,
        "output": item.output,
        "error": item.error,
        "attempts": item.attempts,
        "cached_from": item.cached_from_id,
        "latency_ms": item.latency_ms,
        "tokens_in": item.tokens_in,
        "tokens_out": item.tokens_out,
        "tokens_estimated": item.tokens_estimated,
        "valid": item.valid,
        "validation_error": item.validation_error,
        "from_job": getattr(item, "merged_from", None),
        "scores": scores or [],
    }


# --- diff --------------------------------------------------------------------------------------

DIFF_PARAMS = ("against", "only", "limit", "after")


@router.get(
    "/{objectid:pk}/diff",
    response={200: DiffOut, (400, 401, 404): Error},
    url_name="api_job_diff",
)
def diff_job(
    request: HttpRequest,
    job: ViewedJob,
    against: int = Query(..., ge=1, le=MAX_ID, description="The job before (the same rows)."),
    only: str | None = Query(None, description="regressions or improvements."),
    limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Rows per page."),
    after: int | None = Query(None, ge=-1, le=MAX_ID, description="From a `next` URL."),
) -> Any:
    """This job against the run before it (`against`), row by row: rows the
    same and changed, per scorer the regressions (passed before, fail here)
    and improvements, and a page of rows, each with both outputs and scores.
    Rows match by identity: a retry's `source_index`, else `index`."""
    errors = FieldErrors()
    for name in request.GET:
        if name not in DIFF_PARAMS:
            errors.add(name, f"Unknown parameter; expected one of {', '.join(DIFF_PARAMS)}.")
    if only is not None and only not in job_diff.ONLY:
        errors.add("only", f"One of {', '.join(job_diff.ONLY)}.")
    if against == job.pk:
        errors.add("against", "Diff a job against another job, not itself.")
    errors.raise_if_any()
    other, _ = access.object_for(request.auth, Job.objects.all(), pk=against)
    diff = job_diff.diff_of(job, other)
    rows, next_after = job_diff.rows_page(diff, after=after, size=limit, only=only)
    next_url = None
    if next_after is not None:
        query = request.GET.copy()
        query["after"] = str(next_after)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {
        "job": job.pk,
        "against": other.pk,
        "rows": job_diff.row_counts(diff),
        "scorers": job_diff.scorer_counts(diff),
        "items": [diff_row_json(row) for row in rows],
        "next": next_url,
    }


def diff_row_json(row: job_diff.Row) -> dict[str, Any]:
    here, there = row.here, row.there
    return {
        "index": row.index,
        "input": (here or there).input if (here or there) else None,
        "status": here.status if here else None,
        "against_status": there.status if there else None,
        "output": here.output if here else None,
        "against_output": there.output if there else None,
        "changed": row.changed,
        "scores": row.scores,
        "against_scores": row.against_scores,
    }
