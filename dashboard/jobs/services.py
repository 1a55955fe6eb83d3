"""Job services: create, cancel, retry, finish, and every status transition.

Each transition is a conditional UPDATE (``WHERE status IN (...)``) checked by
its row count, so concurrent writers (web, workers, admin) never overwrite a
terminal status; it works the same on SQLite and PostgreSQL. A job ends in one
place, ``jobs_end``, which every writer (the runner, the poller, the sweep, a
cancel) calls: it ends the job's remaining items in the same transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import Case, CharField, F, OuterRef, Q, Subquery, TextField, Value, When
from django.db.models.functions import Cast, Coalesce, Concat

from dashboard.core import clock, structured
from dashboard.core import events as events_module
from dashboard.core import queue as tasks_queue
from dashboard.core.audit import audit, via_details
from dashboard.core.returning import update_returning
from dashboard.models import (
    BatchChunk,
    Comparison,
    Credential,
    Dataset,
    Item,
    Job,
    JobEvent,
    Team,
)
from dashboard.status import (
    JOB_ACTIVE,
    JOB_TERMINAL,
    ItemStatus,
    JobStatus,
    TransitionError,
    job_end_where,
    sources_for,
)
from providers import JobSpec

from . import cost, results
from .items import items_create, items_end_active
from .spec import deadline_seconds, mode_problem

logger = logging.getLogger(__name__)


def event_add(
    job_id: int, message: str, *, kind: str = JobEvent.Kind.EVENT, **extra: Any
) -> JobEvent:
    return JobEvent.objects.create(job_id=job_id, kind=kind, message=message, **extra)


def job_transition(
    job_id: int,
    new: str,
    *,
    message: str = "",
    event_kind: str = JobEvent.Kind.EVENT,
    item_error: str | None = None,
    **fields: Any,
) -> bool:
    """Move a job to ``new`` if the status rules allow it from where it is now.
    A move to a terminal status is ``jobs_end`` with that status (the one
    place a job ends); ``error`` and ``error_retryable`` in ``fields`` are
    its reason.

    Returns False when another writer got there first (the job is already
    terminal, or not in a state that leads to ``new``)."""
    if new in JOB_TERMINAL:
        ended = jobs_end(
            [job_id],
            status=new,
            error=fields.pop("error", ""),
            item_error=item_error,
            retryable=fields.pop("error_retryable", False),
            message=message,
            fields=fields,
        )
        return bool(ended)
    updates: dict[str, Any] = dict(fields)
    updates["status"] = new
    if new == JobStatus.RUNNING:
        updates.setdefault("started_at", Coalesce(F("started_at"), clock.now()))
    changed = Job.objects.filter(pk=job_id, status__in=sources_for(new)).update(**updates)
    if changed and message:
        event_add(job_id, message, kind=event_kind)
    return bool(changed)


@dataclass(frozen=True)
class Ended:
    """A job that ``jobs_end`` moved, with its counters as the database holds
    them after the move (the attribute names of ``Job``, so ``summary`` reads
    either)."""

    pk: int
    status: str
    progress_total: int
    items_completed: int
    items_failed: int
    items_cancelled: int
    items_invalid: int


#: What ``jobs_end`` reads back from each row it moves.
_ENDED_COLUMNS = (
    "id",
    "status",
    "progress_total",
    "items_completed",
    "items_failed",
    "items_cancelled",
    "items_invalid",
)


def jobs_end(
    job_ids: Iterable[int],
    *,
    status: str | None = None,
    error: str = "",
    retryable: bool = False,
    item_error: str | None = None,
    message: str = "",
    label: str = "",
    fields: dict[str, Any] | None = None,
) -> list[Ended]:
    """End jobs: the one place a job becomes terminal.

    Without ``status``, each job whose items have all ended ends by the rule
    (``status.job_end_status``): completed when at least one item completed,
    failed when none did; a job with failed rows keeps "N of M prompts
    failed; first error: …" as its error, written by the database from its
    counters and its first failed item. Jobs with items still to do are left
    alone. With ``status`` (cancelled, or failed for a reason of the job's
    own: a deadline, a deleted credential, a provider that refuses every
    call), any active job ends so, with ``fields`` written beside, and its
    unfinished items are cancelled, or failed with ``item_error`` (by
    default the job's ``error``).

    One conditional UPDATE per target status; the counters of the rows that
    moved come back from that statement (``UPDATE … RETURNING``), never from
    a copy in memory. In the same transaction: the terminal columns, the
    actual cost, ``events.job_ended`` and each job's event. Returns the jobs
    that moved; a job another writer ended first is not among them."""
    ids = sorted(set(job_ids))
    if not ids:
        return []
    now = clock.now()
    terminal = {
        "finished_at": now,
        "started_at": Coalesce(F("started_at"), now),
        "next_check_at": None,
        "lease_owner": "",
        "lease_expires_at": None,
        "cold_start": False,
    }
    with transaction.atomic():
        if status is None:
            ended = _end_by_rule(ids, terminal)
        else:
            reason = {**(fields or {}), "error": error, "error_retryable": retryable}
            ended = _end_for_reason(
                ids, status, reason, error if item_error is None else item_error, terminal
            )
        events: list[JobEvent] = []
        for new in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
            moved = [job for job in ended if job.status == new]
            if not moved:
                continue
            # Receivers only write rows and enqueue on commit (no call out here).
            events_module.job_ended.send(sender=Job, job_ids=[j.pk for j in moved], status=new)
            kind = JobEvent.Kind.EVENT if new != JobStatus.FAILED else JobEvent.Kind.ERROR
            events += [
                JobEvent(
                    job_id=job.pk,
                    kind=kind,
                    message=message or f"{new.capitalize()}: {summary(job)}{label}.",
                )
                for job in moved
            ]
        JobEvent.objects.bulk_create(events)
    return ended


def _end_by_rule(ids: list[int], terminal: dict[str, Any]) -> list[Ended]:
    done = Job.objects.filter(pk__in=ids, progress_done__gte=F("progress_total"))
    first = Coalesce(
        Subquery(
            Item.objects.filter(job_id=OuterRef("pk"), status=ItemStatus.FAILED)
            .exclude(error="")
            .order_by("index")
            .values("error")[:1]
        ),
        Value("no prompt completed"),
        output_field=TextField(),
    )
    error = Case(
        When(items_failed=0, then=Value("")),
        When(items_failed=1, progress_total=1, then=first),
        default=Concat(
            Cast("items_failed", CharField()),
            Value(" of "),
            Cast("progress_total", CharField()),
            Value(" prompts failed; first error: "),
            first,
            output_field=TextField(),
        ),
        output_field=TextField(),
    )
    values = {
        **terminal,
        "error": error,
        "error_retryable": Q(items_failed__gt=0),
        # The counters are final once every item ended, so the cost is too.
        "cost_actual": cost.actual_cost_expression(),
    }
    ended: list[Ended] = []
    for new, which in job_end_where().items():
        rows = update_returning(
            done.filter(which, status__in=sources_for(new)),
            {**values, "status": new},
            _ENDED_COLUMNS,
        )
        ended += [Ended(pk=row.pop("id"), **row) for row in rows]
    return ended


def _end_for_reason(
    ids: list[int],
    new: str,
    reason: dict[str, Any],
    item_error: str,
    terminal: dict[str, Any],
) -> list[Ended]:
    if new not in JOB_TERMINAL:
        raise TransitionError(f"A job cannot end as {new}.")
    moved = update_returning(
        Job.objects.filter(pk__in=ids, status__in=sources_for(new)),
        {**terminal, **reason, "status": new},
        ["id"],
    )
    item_status = ItemStatus.CANCELLED if new == JobStatus.CANCELLED else ItemStatus.FAILED
    ended: list[Ended] = []
    for row in moved:
        tally = items_end_active(row["id"], item_status, item_error)
        # Nothing runs any more: calls in flight are counted, not written.
        # The token sums are final, so the cost is too.
        (counters,) = update_returning(
            Job.objects.filter(pk=row["id"]),
            {
                **tally.job_updates(),
                "items_running": 0,
                "cost_actual": cost.actual_cost_expression(),
            },
            _ENDED_COLUMNS,
        )
        ended.append(Ended(pk=counters.pop("id"), **counters))
    return ended


def job_fail(job_id: int, error: str, *, retryable: bool = False) -> bool:
    """Fail the job for a reason of its own (deadline, credential, a provider
    that refuses every call); its unfinished items fail with the same error."""
    return bool(
        jobs_end(
            [job_id],
            status=JobStatus.FAILED,
            error=error,
            retryable=retryable,
            message=f"Failed: {error}",
        )
    )


def job_finish(job_id: int, *, label: str = "") -> str | None:
    """End a job whose items have all ended, by the rule (see ``jobs_end``).
    Returns the new status, or None when the job was not active any more (or
    still has items to do)."""
    ended = jobs_end([job_id], label=label)
    return ended[0].status if ended else None


def summary(job: Job | Ended) -> str:
    """In words: "10 of 12 prompt(s) completed, 2 failed, 1 invalid"."""
    parts = [f"{job.items_completed} of {job.progress_total} prompt(s) completed"]
    if job.items_failed:
        parts.append(f"{job.items_failed} failed")
    if job.items_cancelled:
        parts.append(f"{job.items_cancelled} cancelled")
    if job.items_invalid:
        parts.append(f"{job.items_invalid} invalid")
    return ", ".join(parts)


def job_create(
    *,
    team: Team,
    credential: Credential,
    spec: JobSpec,
    user: Any = None,
    retry_of: Job | None = None,
    source_indexes: Sequence[int | None] | None = None,
    input_fields: Sequence[dict[str, Any] | None] | None = None,
    input_columns: Sequence[str] = (),
    output_columns: Sequence[str] | None = None,
    dataset: Dataset | None = None,
    comparison: Comparison | None = None,
    mode: str = Job.Mode.ONLINE,
    scorers: Sequence[dict[str, Any]] = (),
    cache: bool = False,
) -> Job:
    """Save a job and its items, and nudge a worker once the transaction commits.

    ``spec`` is checked already (``spec.build_spec`` for what a user asks,
    or a spec read back from a saved job): nothing here validates it again.
    Raises ``cost.BudgetExceeded`` (nothing saved) when the job's estimate
    would take the team past its monthly budget. The job keeps the team's
    price for the model as it is now, and its estimated cost. The dataset's
    column names and the output schema's field names are kept in order
    (``output_columns`` is given by a retry, whose spec was read back from the
    database; otherwise the spec's schema gives them); ``dataset`` is the one
    whose rows the items are, ``comparison`` the one the job is a target of.
    ``mode`` is checked already (``spec.mode_problem``); a batch job keeps the
    batch price and estimate. ``scorers`` are normalized already
    (``dashboard.evals.scorers.normalize_scorers``). With ``cache`` the items the
    team already has answers for take them without a call."""
    now = clock.now()
    deadline = deadline_seconds(spec, mode)
    data = spec.to_dict()
    prompts = list(data.pop("prompts"))
    estimate = cost.spec_estimate(team, credential.provider, spec, mode)
    price = estimate.price
    with transaction.atomic():
        cost.budget_check(team, estimate.cost)
        job = Job.objects.create(
            team=team,
            credential=credential,
            credential_name=credential.name,
            provider=credential.provider,
            model=spec.model,
            spec=data,
            created_by=user,
            created_at=now,
            progress_total=len(prompts),
            deadline_at=now + timedelta(seconds=deadline),
            next_check_at=now,
            retry_of=retry_of,
            dataset=dataset,
            comparison=comparison,
            input_columns=list(input_columns),
            output_columns=list(
                structured.columns(spec.output_schema) if output_columns is None else output_columns
            ),
            price_input_per_mtok=price.input_per_mtok if price else None,
            price_output_per_mtok=price.output_per_mtok if price else None,
            cost_estimated=estimate.cost,
            mode=mode,
            scorers=list(scorers),
            cache=cache,
        )
        items_create(job, prompts, input_fields=input_fields, source_indexes=source_indexes)
        who = f" by {user.get_username()}" if user is not None else ""
        origin = f" (retry of job {retry_of.pk})" if retry_of is not None else ""
        batch = " as a batch" if mode == Job.Mode.BATCH else ""
        event_add(job.pk, f"Saved{who}{origin}: {len(prompts)} prompt(s) for {spec.model}{batch}")
        Credential.objects.filter(pk=credential.pk).update(last_used_at=now)
    tasks_queue.nudge_job_on_commit(job.pk)
    return job


def job_submit(*, via: str = "", **values: Any) -> Job:
    """A job a user submits (the new-job page, the API): ``job_create`` and
    its audit event, in one transaction. Retries and comparison targets are
    audited as what they are, by their own services."""
    with transaction.atomic():
        job = job_create(**values)
        audit(
            values.get("user"),
            job.team,
            "job.submitted",
            job,
            provider=job.provider,
            model=job.model,
            **via_details(via),
        )
    return job


def job_cancel(job: Job, *, user: Any = None, via: str = "") -> bool:
    """Cancel a job that is not terminal; its unfinished items are cancelled
    and the cancel is audited (``via``: the surface that asked). Remote jobs
    stop being polled; the provider may still finish them (no provider
    documents a cancel). False, and nothing audited, when it had ended."""
    who = f" by {user.get_username()}" if user is not None else ""
    if job.mode == Job.Mode.BATCH:
        asked = _batch_cancel_ask(job, who)
        if asked is not None:
            if asked:
                audit(user, job.team, "job.cancelled", job, **via_details(via))
            return asked
    remote = job.units.exclude(remote_id="").exists()
    note = (
        " Remote jobs are no longer polled; the provider may still finish them." if remote else ""
    )
    with transaction.atomic():
        cancelled = bool(
            jobs_end([job.pk], status=JobStatus.CANCELLED, message=f"Cancelled{who}.{note}")
        )
        if cancelled:
            audit(user, job.team, "job.cancelled", job, **via_details(via))
    return cancelled


def _batch_cancel_ask(job: Job, who: str) -> bool | None:
    """A batch job with batches at the provider (or being created) is not
    ended at once: the cancel is asked of the provider (a task calls its
    cancel for each live batch) and the job ends ``cancelled`` once they have
    ended and their results were read, so rows that finished keep their
    outputs. A batch not created yet never will be. None: no batch is at the
    provider, the job is cancelled as any other. False: it had ended, or its
    cancel was asked already."""
    remote = [BatchChunk.State.LIVE, BatchChunk.State.SUBMITTING]
    with transaction.atomic():
        locked = Job.objects.select_for_update().filter(pk=job.pk, status__in=list(JOB_ACTIVE))
        if not locked.exists():
            return False
        chunks = BatchChunk.objects.filter(job_id=job.pk)
        if not chunks.filter(state__in=remote).exists():
            return None
        if not locked.filter(cancel_requested_at__isnull=True).update(
            cancel_requested_at=clock.now()
        ):
            return False
        chunks.filter(state__in=remote).update(cancel_requested=True)
        chunks.filter(state=BatchChunk.State.PENDING).update(
            state=BatchChunk.State.FAILED,
            error="Cancelled before it was created.",
            ended_at=clock.now(),
        )
        event_add(
            job.pk,
            f"Cancel asked{who}: the provider is asked to cancel its batches; rows that "
            "finished keep their outputs, the job ends once the batches have ended.",
        )
        tasks_queue.on_commit("dashboard.tasks.batch_cancel", job.pk)
    return True


#: What a retry redoes.
RETRY_FAILED = "failed"  # items that did not complete (failed, cancelled, never run)
RETRY_INVALID = "invalid"  # completed items whose output does not fit the schema
RETRY_ALL = "all"


def job_retry(
    job: Job,
    *,
    user: Any = None,
    via: str = "",
    failed_only: bool = False,
    invalid_only: bool = False,
    repair: bool = False,
    mode: str | None = None,
) -> Job:
    """A new job linked to the first one (``retry_of``) with the same spec, over
    all its rows, only those that did not complete, or only the invalid ones;
    each new item keeps ``source_index``, the row it redoes. With ``repair``
    an invalid row is sent again with its validation error and the schema.
    The retry is audited on the first job (``via``: the surface that asked).
    ``mode``: online or batch (default: the job's own); ValueError when the
    credential cannot run it."""
    if job.credential is None:
        raise ValueError("The credential of this job was deleted; clone it to pick another.")
    mode = mode or job.mode
    problem = mode_problem(job.credential, mode)
    if problem:
        raise ValueError(problem)
    if failed_only and invalid_only:
        raise ValueError("Retry either the failed rows or the invalid ones, not both at once.")
    if repair and not invalid_only:
        raise ValueError("Repair applies to invalid rows: ask for invalid_only with it.")
    rows = job.items.order_by("index")
    if failed_only:
        rows = rows.exclude(status=ItemStatus.COMPLETED)
        if job.status in JOB_ACTIVE:
            raise ValueError("The job is still running; retry its failed rows once it ends.")
    elif invalid_only:
        rows = rows.filter(status=ItemStatus.COMPLETED, valid=False)
    items = list(rows.values("index", "source_index", "input", "input_fields", "validation_error"))
    if not items:
        raise ValueError(
            "No row of this job is invalid."
            if invalid_only
            else "Every row of this job completed."
            if failed_only
            else "This job has no rows."
        )
    schema = job.spec.get("output_schema")
    prompts = [
        repair_prompt(row["input"], row["validation_error"], schema) if repair else row["input"]
        for row in items
    ]
    what = (
        " (invalid rows, repaired)"
        if repair
        else " (invalid rows)"
        if invalid_only
        else " (rows that did not complete)"
        if failed_only
        else ""
    )
    flags = {"failed_only": failed_only, "invalid_only": invalid_only, "repair": repair}
    with transaction.atomic():
        new = job_redo(job, items, user=user, mode=mode, prompts=prompts)
        event_add(job.pk, f"Retried as job {new.pk}{what}: {len(items)} row(s)")
        audit(
            user,
            job.team,
            "job.retried",
            job,
            new_job=new.pk,
            **{name: True for name, on in flags.items() if on},
            **({"mode": mode} if mode != job.mode else {}),
            **via_details(via),
        )
    return new


def job_redo(
    job: Job,
    rows: Sequence[dict[str, Any]],
    *,
    user: Any,
    mode: str,
    prompts: Sequence[str] | None = None,
) -> Job:
    """A new job over some rows of ``job`` (their ``index``, ``source_index``,
    ``input`` and ``input_fields``), linked to the first job of its lineage,
    with its spec and columns; each new item keeps the row it redoes as
    ``source_index``. ``prompts`` replaces the rows' inputs (a repair)."""
    assert job.credential is not None
    texts = [row["input"] for row in rows] if prompts is None else list(prompts)
    return job_create(
        team=job.team,
        credential=job.credential,
        spec=JobSpec.from_dict({**job.spec, "prompts": texts}),
        user=user,
        retry_of=job.retry_of or job,
        source_indexes=[
            row["source_index"] if row["source_index"] is not None else row["index"] for row in rows
        ],
        input_fields=[row["input_fields"] for row in rows],
        input_columns=job.input_columns,
        output_columns=results.structured_columns(job),
        mode=mode,
    )


def repair_prompt(prompt: str, error: str, schema: dict[str, Any] | None) -> str:
    """The prompt again, with why its answer was refused and the schema it must fit."""
    shape = json.dumps(structured.as_json_schema(schema), ensure_ascii=False, sort_keys=True)
    return (
        f"{prompt}\n\n"
        f"Your previous answer did not match the required JSON schema: {error}\n"
        f"Answer again with only a JSON value that matches this schema:\n{shape}"
    )
