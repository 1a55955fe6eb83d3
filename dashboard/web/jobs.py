"""Job pages: the new-job form and its live estimate, the job page and its
live partial, and the actions on a job (cancel, retry, note, rating a row)."""

from __future__ import annotations

from types import SimpleNamespace
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
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect, HttpResponseStopPolling

from dashboard.accounts import access
from dashboard.accounts.access import require_membership
from dashboard.accounts.audit import audit
from dashboard.compare import grid, reviews
from dashboard.compare.forms import DatasetJobForm
from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.core.params import int_param, micros, micros_param
from dashboard.datasets.services import inputs_from_dataset
from dashboard.datasets.template import TemplateError
from dashboard.evals.forms import add_scorers_field, scorers_clean
from dashboard.evals.scores import scores_summary
from dashboard.instances.catalog import model_choices, model_warning
from dashboard.jobs import cache, cost, export, limits, results
from dashboard.jobs.batch import chunk_resubmit
from dashboard.jobs.cost import BudgetExceeded
from dashboard.jobs.forms import (
    SPEC_FIELDS,
    JobForm,
    credential_for_new_job,
    model_for_new_job,
    split_prompts,
)
from dashboard.jobs.services import job_cancel, job_retry, job_submit
from dashboard.models import BatchChunk, Credential, Dataset, Job, JobEvent, Role, Team
from dashboard.status import ItemStatus
from providers import get_provider_class
from providers.batch import supports_batch

from .credentials import float_param, still_refreshing
from .scope import posted_for_other_team


@login_required
def job_new(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request, Role.MEMBER)
    team = membership.team
    model_auto = False
    status = 200
    if request.method == "POST" and posted_for_other_team(request, membership):
        return redirect("job_new")
    if request.method == "POST":
        form = add_scorers_field(DatasetJobForm(request.POST, team=team))
        if form.is_valid() and (scorers := scorers_clean(form, team)) is not None:
            inputs = form.inputs()
            try:
                job = job_submit(
                    via="web",
                    team=team,
                    credential=form.cleaned_data["credential"],
                    spec=form.cleaned_data["spec"],
                    mode=form.cleaned_data["mode"],
                    user=request.user,
                    input_fields=inputs.input_fields,
                    input_columns=inputs.columns,
                    dataset=inputs.dataset,
                    scorers=scorers,
                    cache=bool(form.cleaned_data.get("cache")),
                )
            except BudgetExceeded as exc:
                form.add_error(None, str(exc))  # the form again, nothing saved
                status = 409
            else:
                return redirect(job)
    else:
        form, model_auto = _new_job_form(request, team)
    context = {"form": form, "model_auto": model_auto, **_model_help(request, form, fetch=True)}
    if request.htmx and request.method == "GET" and request.htmx.target == "provider-fields":
        # Another credential: its fields, and out of band its model list (and its
        # default model, unless the user chose one).
        return render(
            request, "dashboard/job_new.html#provider-fields", {**context, "refresh": True}
        )
    return render(request, "dashboard/job_new.html", context, status=status)


def _new_job_form(request: HttpRequest, team: Any) -> tuple[DatasetJobForm, bool]:
    """The unbound form, and whether its model was filled in for the user
    (app.js says "0" once they type one): a credential picked later then gets
    its own default model instead of keeping the previous provider's."""
    initial = _clone_initial(request) if "clone" in request.GET else {}
    if "credential" in request.GET:
        initial["credential"] = request.GET["credential"]
    elif "credential" not in initial:
        default = credential_for_new_job(team=team, user=request.user)
        initial["credential"] = default.pk if default else None
    if "dataset" in request.GET:
        initial["dataset"] = int_param(request.GET["dataset"], minimum=1)
    typed = (request.GET.get("model") or "").replace("\x00", "").strip()[:200]
    if typed and request.GET.get("model_auto") != "1":
        initial["model"] = typed
    form = add_scorers_field(DatasetJobForm(initial=initial, team=team))
    credential = form.selected_credential()
    auto = not initial.get("model") and credential is not None
    if auto:
        form.initial["model"] = model_for_new_job(
            credential=credential, user=request.user, choices=form.model_choices()
        )
    return form, auto


def _model_help(request: HttpRequest, form: JobForm, *, fetch: bool) -> dict[str, Any]:
    """The list beside the model field and the warning under it. ``fetch``: a
    list that is due is queued for the worker (never fetched here), and the
    list polls until it arrives."""
    credential = form.selected_credential()
    if credential is None:
        return {"model_choices": None, "model_warning": ""}
    choices = form.model_choices()
    since = None
    if fetch and choices is not None and choices.stale:
        tasks_queue.nudge_catalog(credential.pk)
        since = clock.now().timestamp()
    return {
        "model_choices": choices,
        "model_warning": model_warning(credential, str(form["model"].value() or "")),
        "catalog_since": since,
    }


@login_required
@require_GET
def job_new_models(request: HttpRequest) -> HttpResponse:
    """The model list beside the new-job form's model field, for the chosen
    credential, filtered by what is typed, with the warning for that name;
    while a background fetch of the provider's list is awaited (``since``),
    it polls and stops (286) once the list arrived, failed, or took too long."""
    membership = require_membership(request, Role.MEMBER)
    form = JobForm(initial=_model_help_initial(request), team=membership.team)
    credential = form.selected_credential()
    typed = str(form.initial.get("model") or "")
    choices = model_choices(credential, typed) if credential is not None else None
    if choices is not None and not choices.names and typed:
        choices = form.model_choices()  # nothing matches: show what there is
    waiting = float_param(request, "since")
    refreshing = bool(
        credential is not None
        and waiting is not None
        and choices is not None
        and still_refreshing(choices.state, waiting, clock.now())
    )
    context = {
        "form": form,
        "model_choices": choices,
        "model_warning": model_warning(credential, typed) if credential else "",
        "catalog_since": waiting if refreshing else None,
    }
    response = render(request, "dashboard/job_new.html#model-help", context)
    if waiting is not None and not refreshing:
        response.status_code = HttpResponseStopPolling.status_code
    return response


def _model_help_initial(request: HttpRequest) -> dict[str, Any]:
    model = (request.GET.get("model") or "").replace("\x00", "").strip()[:200]
    return {"credential": request.GET.get("credential") or None, "model": model}


def _clone_initial(request: HttpRequest) -> dict[str, Any]:
    clone = int_param(request.GET.get("clone"), minimum=1)
    if clone is None:
        return {}
    job, _ = access.object_for(request.user, Job.objects.all(), pk=clone)
    spec = job.spec
    prompts = list(job.items.order_by("index").values_list("input", flat=True)[:CLONE_PROMPTS])
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


#: A clone copies at most this many prompts into the form (the form's own limit).
CLONE_PROMPTS = 10_000
#: Timeline and log events a page shows at most (the newest), and a poll sends.
EVENTS_SHOWN = 200


@login_required
@require_GET
def job_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _job_page(request, pk, row=int_param(request.GET.get("row"), minimum=0))


def _job_page(
    request: HttpRequest, pk: int, *, row: int | None, strict: bool = False
) -> HttpResponse:
    """The job page; with ``row`` that row's detail panel open (a row the job
    does not have: the page without it, or with ``strict`` a 404)."""
    job, membership = access.object_for(
        request.user, Job.objects.select_related("created_by", "credential", "retry_of"), pk=pk
    )
    can_act = membership.allows(Role.MEMBER)
    detail = _item_detail(request, job, row) if row is not None else {}
    if detail is None and strict:
        raise Http404("The job has no such row.")
    context = {
        **_results_context(request, job),
        **_events_context(job, after=None),
        **_batches_context(job),
        **(detail or {}),
        "job": job,
        "can_act": can_act,
        "validity": results.validity_summary(job),
        "scores": scores_summary(job),
        "score_verdicts": results.SCORE_VERDICTS,
        "item_statuses": ItemStatus.choices,
        "has_retries": job.retries.exists(),
        "cache": cache.cache_summary(job) if job.cache else None,
    }
    return render(request, "dashboard/job_detail.html", context)


@login_required
@require_GET
def job_item_detail(request: HttpRequest, pk: int, index: str) -> HttpResponse:
    """One row whole (the detail panel): for htmx the panel alone, else the
    job page with the panel open, so the address can be shared."""
    if not request.htmx:
        return _job_page(request, pk, row=int(index), strict=True)
    job, membership = access.object_for(request.user, Job.objects.all(), pk=pk)
    detail = _item_detail(request, job, int(index))
    if detail is None:
        raise Http404("The job has no such row.")
    context = {**detail, "job": job, "can_act": membership.allows(Role.MEMBER)}
    return render(request, "dashboard/job_detail.html#item-detail", context)


def _item_detail(request: HttpRequest, job: Job, index: int) -> dict[str, Any] | None:
    """The detail panel's context: the row, its output shown whole, its
    scores and ratings, and the address that closes it (None: no such row)."""
    item = results.item_at(job, index, merged=request.GET.get("merged") == "1")
    if item is None:
        return None
    grid.attach_reviews(job, [item], request.user)
    item.review.see_as(request.user)  # type: ignore[attr-defined]
    results.with_scores(job, [item])
    output, is_json = results.output_shown(item.output)
    fields = results.field_names(job, item.input_fields)
    query = request.GET.copy()
    query.pop("row", None)
    return {
        "detail": item,
        "detail_output": output,
        "detail_is_json": is_json,
        "detail_fields": [(name, (item.input_fields or {}).get(name)) for name in fields],
        "close_query": query.urlencode(),
    }


@login_required
@require_GET
def job_live(request: HttpRequest, pk: int) -> HttpResponse:
    """The job page's poller: what changed since the client's cursors (events
    after ``after``; items of the page written since ``since``), as
    out-of-band swaps; 286 (stop polling) once the job is terminal."""
    job, membership = access.object_for(request.user, Job.objects.all(), pk=pk)
    after = int_param(request.GET.get("after")) or 0
    since = micros_param(request.GET.get("since"))
    first = int_param(request.GET.get("first"))
    last = int_param(request.GET.get("last"))
    now = clock.now()
    changed: list[Any] = []
    if (since is not None or job.is_terminal) and first is not None and last is not None:
        # The last poll sends the whole page: every item write committed before
        # the job ended, whatever the cursor says.
        changed = results.items_changed(job, first, last, None if job.is_terminal else since)
        if request.GET.get("merged") == "1":
            changed = results.merge_retries(job, changed)
        grid.attach_reviews(job, changed, request.user)
        results.with_scores(job, changed)
    context = {
        **_events_context(job, after=after),
        **_batches_context(job),
        "job": job,
        "can_act": membership.allows(Role.MEMBER),
        "live": True,
        "changed": changed,
        "structured_columns": results.structured_columns(job),
        "since": micros(results.live_cursor(now)),
        "first": first,
        "last": last,
        "merged": request.GET.get("merged") == "1",
        "filter_params": "merged=1" if request.GET.get("merged") == "1" else "",
    }
    response = render(request, "dashboard/job_detail.html#live-update", context)
    if job.is_terminal:
        response.status_code = HttpResponseStopPolling.status_code
    return response


def _results_context(request: HttpRequest, job: Job) -> dict[str, Any]:
    """One page of the job's items, as asked by the query string (keyset by
    index), and the links around it."""
    item_filter, errors = results.parse_filter(
        request.GET.get("status"),
        request.GET.get("valid"),
        request.GET.get("score"),
        [scorer["name"] for scorer in job.scorers],
        request.GET.get("q"),
    )
    after = int_param(request.GET.get("after"), minimum=-1)
    before = int_param(request.GET.get("before"))
    merged = request.GET.get("merged") == "1"
    page = results.items_page(job, after=after, before=before, item_filter=item_filter)
    items = results.merge_retries(job, page.items) if merged else page.items
    grid.attach_reviews(job, items, request.user)
    results.with_scores(job, items)
    columns = results.structured_columns(job)
    for item in items:
        item.fields = results.fields_of(item, columns)
    params = {**item_filter.as_params(), **({"merged": "1"} if merged else {})}
    return {
        "items": items,
        "page": page,
        "item_filter": item_filter,
        "filter_errors": errors,
        "filter_params": urlencode(params),
        "merged": merged,
        "structured_columns": columns,
        "since": micros(results.live_cursor(clock.now())),
        "first": page.first_index,
        "last": page.last_index,
    }


def _events_context(job: Job, *, after: int | None) -> dict[str, Any]:
    """The timeline (newest first, so the latest event, the terminal one
    included, is at the top of its box) and the log (oldest first, read like
    text), at most EVENTS_SHOWN of each (the newest)."""
    events = job.events.select_related("author")
    if after is not None:
        events = events.filter(pk__gt=after)
    output = list(events.filter(kind__in=OUTPUT_KINDS).order_by("-id")[:EVENTS_SHOWN])[::-1]
    timeline = list(events.exclude(kind__in=OUTPUT_KINDS).order_by("-id")[:EVENTS_SHOWN])
    newest = max((e.pk for e in output + timeline), default=after or 0)
    return {
        "timeline": timeline,
        "log_groups": log_groups(job, output, all_blocks=after is None),
        "cursor": newest,
    }


OUTPUT_KINDS = (JobEvent.Kind.LOG, JobEvent.Kind.STREAM)

#: How often the page of a batch job polls (seconds): its chunks move at the
#: provider's pace (a poll every DASHBOARD_BATCH_POLL_SECONDS), not per row.
BATCH_PAGE_POLL_SECONDS = 15
#: The chunk states still waiting on the provider (or on the worker's create).
CHUNK_WAITING = (BatchChunk.State.PENDING, BatchChunk.State.SUBMITTING, BatchChunk.State.LIVE)


def _batches_context(job: Job) -> dict[str, Any]:
    """A batch job's chunks (its remote batches), each with its counts in words,
    and the poll interval of its page; nothing for an online job."""
    if job.mode != Job.Mode.BATCH:
        return {"chunks": [], "poll_seconds": 1}
    retry_modes = [(Job.Mode.BATCH, "as batch"), (Job.Mode.ONLINE, "as online")]
    chunks = list(job.chunks.order_by("number"))
    for chunk in chunks:
        chunk.counts_words = chunk_counts_words(chunk)
        chunk.waiting = chunk.state in CHUNK_WAITING
    return {
        "chunks": chunks,
        "provider_done": sum(
            _count(chunk, "completed") + _count(chunk, "failed") for chunk in chunks
        ),
        "chunks_waiting": sum(chunk.waiting for chunk in chunks),
        "chunks_unknown": sum(chunk.state == BatchChunk.State.UNKNOWN for chunk in chunks),
        "poll_seconds": BATCH_PAGE_POLL_SECONDS,
        "retry_modes": retry_modes,
    }


def _count(chunk: BatchChunk, name: str) -> int:
    """One of the provider's counts of a chunk, 0 where it gave none (or junk)."""
    counts = chunk.counts if isinstance(chunk.counts, dict) else {}
    value = counts.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def chunk_counts_words(chunk: BatchChunk) -> str:
    """The provider's counts as the page says them: "950/1000 completed · 3
    failed" where it reports them as it goes (OpenAI), "processing 1000" while
    it reports only what is in flight (Anthropic), "" before it said any."""
    total = _count(chunk, "total") or chunk.requests or chunk.items
    completed, failed = _count(chunk, "completed"), _count(chunk, "failed")
    processing = _count(chunk, "processing")
    if processing and not completed and not failed:
        return f"processing {processing}"
    if not chunk.counts or not isinstance(chunk.counts, dict):
        return ""
    words = f"{completed}/{total} completed"
    if failed:
        words += f" · {failed} failed"
    if processing:
        words += f" · processing {processing}"
    return words


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
    if job_cancel(job, user=request.user, via="web"):
        messages.success(request, f"Job {job.pk} cancelled.")
    else:
        messages.error(request, f"Job {job.pk} already finished; nothing to cancel.")
    return _back_to(request, job)


@login_required
@require_POST
def job_retry_view(request: HttpRequest, pk: int) -> HttpResponse:
    job, _ = access.object_for(request.user, Job.objects.all(), role=Role.MEMBER, pk=pk)
    which = {
        "failed_only": request.POST.get("failed_only") == "1",
        "invalid_only": request.POST.get("invalid_only") == "1",
        "repair": request.POST.get("repair") == "1",
    }
    mode = request.POST.get("mode") or ""
    if mode:
        if mode not in Job.Mode.values:
            messages.error(request, "Retry online or as a batch.")
            return _back_to(request, job)
        which["mode"] = mode
    try:
        new = job_retry(job, user=request.user, via="web", **which)
    except ValueError as exc:
        messages.error(request, str(exc))
        return _back_to(request, job)
    messages.success(request, f"Job {job.pk} retried as job {new.pk}.")
    return _back_to(request, new)


@login_required
@require_POST
def job_chunk_resubmit(request: HttpRequest, pk: int, number: int) -> HttpResponse:
    """Send again the rows of a batch whose outcome is unknown (team members):
    a new batch job over its rows that did not complete."""
    job, _ = access.object_for(request.user, Job.objects.all(), role=Role.MEMBER, pk=pk)
    chunk = job.chunks.filter(number=number).first()
    if chunk is None:
        raise Http404("No such batch.")
    try:
        new = chunk_resubmit(chunk, request.user, via="web")
    except ValueError as exc:
        messages.error(request, str(exc))
        return _back_to(request, job)
    messages.success(
        request, f"Batch {chunk.number + 1} of job {job.pk} resubmitted as job {new.pk}."
    )
    return _back_to(request, new)


@login_required
@require_POST
def job_note(request: HttpRequest, pk: int) -> HttpResponse:
    """A note on the job's timeline (team members, as ratings are)."""
    job, _ = access.object_for(request.user, Job.objects.all(), role=Role.MEMBER, pk=pk)
    try:
        reviews.job_note_add(job=job, user=request.user, text=request.POST.get("note") or "")
    except reviews.ReviewError as exc:
        if request.htmx:
            return HttpResponse(str(exc), status=400)
        messages.error(request, str(exc))
    return _back_to(request, job)


def _back_to(request: HttpRequest, job: Job) -> HttpResponse:
    url = job.get_absolute_url()
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return HttpResponseRedirect(url)


@login_required
@require_GET
def job_items_export(request: HttpRequest, pk: int, fmt: str) -> HttpResponse:
    """The job's items as CSV, JSONL or XLSX, streamed (XLSX written to a
    temporary file first), with ``?merged=1`` the lineage merged."""
    job, _ = access.object_for(request.user, Job.objects.all(), pk=pk)
    merged = request.GET.get("merged") == "1"
    items = results.iter_items(job, merged=merged)
    name = f"job-{job.pk}{'-merged' if merged else ''}"
    audit(request.user, job.team, "job.exported", job, format=fmt, merged=merged)
    if fmt == "xlsx":
        return FileResponse(
            export.items_xlsx(job, items),
            as_attachment=True,
            filename=f"{name}.xlsx",
            content_type=export.XLSX_TYPE,
        )
    chunks = export.items_csv(job, items) if fmt == "csv" else export.items_jsonl(job, items)
    response = StreamingHttpResponse(
        chunks, content_type="text/csv" if fmt == "csv" else "application/x-ndjson"
    )
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response


# --- rating a job's rows -----------------------------------------------------------------------


@login_required
@require_POST
def job_rate(request: HttpRequest, pk: int) -> HttpResponse:
    """Rate one of a job's rows (thumbs up or down; 0 clears)."""
    job, _ = access.object_for(request.user, Job.objects.all(), role=Role.MEMBER, pk=pk)
    index = int_param(request.POST.get("index"))
    try:
        if index is None:
            raise reviews.ReviewError("Rate one of the job's rows.")
        verdict = rating_verdict(request)
        verdict.pop("best", None)
        reviews.rating_set(job=job, index=index, user=request.user, **verdict)
    except reviews.ReviewError as exc:
        if request.htmx:
            return HttpResponse(str(exc), status=400)
        messages.error(request, str(exc))
        return redirect(job)
    if request.htmx:
        item = SimpleNamespace(index=index, review=grid.cell_of(job, index, request.user))
        context = {"job": job, "item": item, "can_act": True}
        response = render(request, "dashboard/_item_rating.html", context)
        # The row's vote count in the table, out of band.
        votes = render(
            request, "dashboard/job_detail.html#row-votes", {**context, "votes_oob": True}
        )
        response.content += votes.content
        return response
    # Back to the row's panel, open, where the rating was given.
    return HttpResponseRedirect(reverse("job_detail", args=[job.pk]) + f"?row={index}")


def rating_verdict(request: HttpRequest) -> dict[str, Any]:
    """What the clicked button says: a score (0 clears it) or the best mark."""
    if "best" in request.POST:
        return {"best": request.POST.get("best") == "1"}
    score = {"1": 1, "-1": -1, "0": None}.get(request.POST.get("score") or "", "bad")
    if score == "bad":
        raise reviews.ReviewError("A score is -1 (thumbs down) or 1 (thumbs up).")
    return {"score": score}


# --- the new-job form's estimate ------------------------------------------------------------


@login_required
@require_POST
def job_estimate(request: HttpRequest) -> HttpResponse:
    """The estimate of what the new-job form holds now (htmx, as the user
    types): items, tokens, cost at the team's price and the budget left."""
    team = require_membership(request, Role.MEMBER).team
    return render(
        request, "dashboard/_job_new_estimate.html#body", estimate_context(team, request.POST)
    )


def _prompts_of(team: Team, data: Any) -> list[str]:
    """The prompts the form would run: a dataset's rows through its template
    (the same rendering the job will get), else the pasted text, split."""
    dataset_id = int_param(data.get("dataset"), minimum=1)
    template = (data.get("prompt_template") or "").replace("\x00", "")
    if dataset_id is not None and template.strip():
        dataset = Dataset.objects.filter(team=team, pk=dataset_id).first()
        if dataset is not None:
            return inputs_from_dataset(dataset, template).prompts
    return split_prompts(data.get("prompts") or "", data.get("split") or "single")


def estimate_context(team: Team, data: Any) -> dict[str, Any]:
    credentials = Credential.objects.filter(team=team).order_by("name")
    chosen = int_param(data.get("credential"), minimum=1)
    credential = (credentials.filter(pk=chosen).first() if chosen else None) or credentials.first()
    # NUL: PostgreSQL refuses it in a query's text.
    model = (data.get("model") or "").replace("\x00", "").strip()[:200]
    try:
        prompts = _prompts_of(team, data)
    except TemplateError as exc:
        return {"estimate": None, "wants": f"a template that fits the dataset ({exc})"}
    if credential is None or not prompts or not model:
        return {"estimate": None, "wants": "a credential, a model and prompts"}
    supported = get_provider_class(credential.provider).supported_fields
    per_item = "\n".join(
        str(data.get(name) or "")
        for name in ("system_prompt", "question")
        if name in supported and data.get(name)
    )
    max_tokens = (
        int_param(data.get("max_tokens"), minimum=1, maximum=1_000_000)
        if "max_tokens" in supported
        else None
    )
    offers_batch = supports_batch(get_provider_class(credential.provider))
    mode = cost.BATCH if offers_batch and data.get("mode") == cost.BATCH else cost.ONLINE
    estimate = cost.estimate_of(
        team, credential.provider, model, prompts, max_tokens, per_item=per_item, mode=mode
    )
    budget = cost.budget_status(team)
    after = budget.spent + (estimate.cost or 0)
    pace = limits.online_minutes(
        credential, estimate.items, estimate.tokens_in + estimate.tokens_out_max
    )
    return {
        "estimate": estimate,
        "offers_batch": offers_batch,
        "pace": {"minutes": max(1, round(pace[0])), "limit": pace[1]} if pace else None,
        "credential": credential,
        "model": model,
        "budget": budget,
        "over_budget": budget.budget is not None and after > budget.budget,
        "left_after": None if budget.budget is None else budget.budget - after,
    }
