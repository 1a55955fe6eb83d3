"""Job services: create, cancel, retry, finish, and every status transition.

Each transition is a conditional UPDATE (``WHERE status IN (...)``) checked by
its row count, so concurrent writers (web, workers, admin) never overwrite a
terminal status; it works the same on SQLite and PostgreSQL. A transition to a
terminal status ends the job's remaining items in the same transaction.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Coalesce

from dashboard.core import clock, events, structured
from dashboard.core import queue as tasks_queue
from dashboard.core.audit import audit, via_details
from dashboard.models import Credential, Item, Job, JobEvent, Team
from dashboard.status import JOB_ACTIVE, JOB_TERMINAL, ItemStatus, JobStatus, sources_for
from providers import JobSpec

from . import cost, results
from .items import items_create, items_end_active

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
    item_error: str = "",
    **fields: Any,
) -> bool:
    """Move a job to ``new`` if the status rules allow it from where it is now;
    a terminal move ends its remaining items (cancelled, or failed with
    ``item_error``), writes its actual cost and sends ``events.job_ended``,
    in the same transaction.

    Returns False when another writer got there first (the job is already
    terminal, or not in a state that leads to ``new``)."""
    now = clock.now()
    updates: dict[str, Any] = dict(fields)
    updates["status"] = new
    if new == JobStatus.RUNNING:
        updates.setdefault("started_at", Coalesce(F("started_at"), now))
    if new in JOB_TERMINAL:
        updates.setdefault("finished_at", now)
        updates.setdefault("started_at", Coalesce(F("started_at"), now))
        updates.update(next_check_at=None, lease_owner="", lease_expires_at=None)
    with transaction.atomic():
        changed = Job.objects.filter(pk=job_id, status__in=sources_for(new)).update(**updates)
        if changed and new in JOB_TERMINAL:
            item_status = ItemStatus.CANCELLED if new == JobStatus.CANCELLED else ItemStatus.FAILED
            tally = items_end_active(job_id, item_status, item_error)
            # Nothing runs any more: calls in flight are counted, not written.
            # The token sums are final, so the cost is too.
            Job.objects.filter(pk=job_id).update(
                **{
                    **tally.job_updates(),
                    "items_running": 0,
                    "cost_actual": cost.actual_cost_expression(),
                }
            )
            # Receivers only write rows and enqueue on commit (no call out here).
            events.job_ended.send(sender=Job, job_ids=[job_id], status=new)
    if changed and message:
        event_add(job_id, message, kind=event_kind)
    return bool(changed)


def job_fail(job_id: int, error: str, *, retryable: bool = False) -> bool:
    """Fail the job for a reason of its own (deadline, credential, a provider
    that refuses every call); its unfinished items fail with the same error."""
    return job_transition(
        job_id,
        JobStatus.FAILED,
        error=error,
        error_retryable=retryable,
        item_error=error,
        message=f"Failed: {error}",
        event_kind=JobEvent.Kind.ERROR,
    )


def job_finish(job_id: int, *, label: str = "") -> str | None:
    """End a job whose items have all ended, by the rule: completed when at
    least one item completed, failed when none did. Returns the new status,
    or None when the job was not active any more (or still has items to do)."""
    job = Job.objects.filter(pk=job_id, status__in=list(JOB_ACTIVE)).first()
    if job is None or job.progress_done < job.progress_total:
        return None
    new = JobStatus.COMPLETED if job.items_completed else JobStatus.FAILED
    # A completed job with failed rows says so, with the first reason.
    error = _first_error(job) if job.items_failed else ""
    fields: dict[str, Any] = {"error": error, "error_retryable": bool(job.items_failed)}
    if not job_transition(job_id, new, **fields):
        return None
    job.status = new
    kind = JobEvent.Kind.EVENT if new == JobStatus.COMPLETED else JobEvent.Kind.ERROR
    event_add(job_id, f"{new.capitalize()}: {summary(job)}{label}.", kind=kind)
    return new


def summary(job: Job) -> str:
    """In words: "10 of 12 prompt(s) completed, 2 failed, 1 invalid"."""
    parts = [f"{job.items_completed} of {job.progress_total} prompt(s) completed"]
    if job.items_failed:
        parts.append(f"{job.items_failed} failed")
    if job.items_cancelled:
        parts.append(f"{job.items_cancelled} cancelled")
    if job.items_invalid:
        parts.append(f"{job.items_invalid} invalid")
    return ", ".join(parts)


def _first_error(job: Job) -> str:
    first = (
        Item.objects.filter(job_id=job.pk, status=ItemStatus.FAILED)
        .exclude(error="")
        .order_by("index")
        .values_list("error", flat=True)
        .first()
    ) or "no prompt completed"
    if job.items_failed == job.progress_total == 1:
        return first
    return f"{job.items_failed} of {job.progress_total} prompts failed; first error: {first}"


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
) -> Job:
    """Save a job and its items, and nudge a worker once the transaction commits.

    Raises ``cost.BudgetExceeded`` (nothing saved) when the job's estimate
    would take the team past its monthly budget. The job keeps the team's
    price for the model as it is now, and its estimated cost. The dataset's
    column names and the output schema's field names are kept in order
    (``output_columns`` is given by a retry, whose spec was read back from the
    database; otherwise the spec's schema gives them)."""
    now = clock.now()
    deadline = int(spec.options.get("deadline_seconds") or settings.JOB_DEADLINE_SECONDS)
    data = spec.to_dict()
    prompts = list(data.pop("prompts"))
    estimate = cost.spec_estimate(team, credential.provider, spec)
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
            input_columns=list(input_columns),
            output_columns=list(
                structured.columns(spec.output_schema) if output_columns is None else output_columns
            ),
            price_input_per_mtok=price.input_per_mtok if price else None,
            price_output_per_mtok=price.output_per_mtok if price else None,
            cost_estimated=estimate.cost,
        )
        items_create(job, prompts, input_fields=input_fields, source_indexes=source_indexes)
        who = f" by {user.get_username()}" if user is not None else ""
        origin = f" (retry of job {retry_of.pk})" if retry_of is not None else ""
        event_add(job.pk, f"Saved{who}{origin}: {len(prompts)} prompt(s) for {spec.model}")
        Credential.objects.filter(pk=credential.pk).update(last_used_at=now)
    tasks_queue.nudge_job_on_commit(job.pk)
    return job


def job_cancel(job: Job, *, user: Any = None, via: str = "") -> bool:
    """Cancel a job that is not terminal; its unfinished items are cancelled
    and the cancel is audited (``via``: the surface that asked). Remote jobs
    stop being polled; the provider may still finish them (no provider
    documents a cancel). False, and nothing audited, when it had ended."""
    who = f" by {user.get_username()}" if user is not None else ""
    remote = job.units.exclude(remote_id="").exists()
    note = (
        " Remote jobs are no longer polled; the provider may still finish them." if remote else ""
    )
    with transaction.atomic():
        cancelled = job_transition(job.pk, JobStatus.CANCELLED, message=f"Cancelled{who}.{note}")
        if cancelled:
            audit(user, job.team, "job.cancelled", job, **via_details(via))
    return cancelled


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
) -> Job:
    """A new job linked to the first one (``retry_of``) with the same spec, over
    all its rows, only those that did not complete, or only the invalid ones;
    each new item keeps ``source_index``, the row it redoes. With ``repair``
    an invalid row is sent again with its validation error and the schema.
    The retry is audited on the first job (``via``: the surface that asked)."""
    if job.credential is None:
        raise ValueError("The credential of this job was deleted; clone it to pick another.")
    if failed_only and invalid_only:
        raise ValueError("Retry either the failed rows or the invalid ones, not both at once.")
    if repair and not invalid_only:
        raise ValueError("Repair applies to invalid rows: ask for invalid_only with it.")
    first = job.retry_of or job  # the lineage hangs off the first job
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
    spec = JobSpec.from_dict({**job.spec, "prompts": prompts})
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
        new = job_create(
            team=job.team,
            credential=job.credential,
            spec=spec,
            user=user,
            retry_of=first,
            source_indexes=[
                row["source_index"] if row["source_index"] is not None else row["index"]
                for row in items
            ],
            input_fields=[row["input_fields"] for row in items],
            input_columns=job.input_columns,
            output_columns=results.structured_columns(job),
        )
        event_add(job.pk, f"Retried as job {new.pk}{what}: {len(items)} row(s)")
        audit(
            user,
            job.team,
            "job.retried",
            job,
            new_job=new.pk,
            **{name: True for name, on in flags.items() if on},
            **via_details(via),
        )
    return new


def repair_prompt(prompt: str, error: str, schema: dict[str, Any] | None) -> str:
    """The prompt again, with why its answer was refused and the schema it must fit."""
    shape = json.dumps(structured.as_json_schema(schema), ensure_ascii=False, sort_keys=True)
    return (
        f"{prompt}\n\n"
        f"Your previous answer did not match the required JSON schema: {error}\n"
        f"Answer again with only a JSON value that matches this schema:\n{shape}"
    )
