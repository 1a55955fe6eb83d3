"""Comparisons: create one sibling job per target over the same items (all in
one transaction, so the workers start them together), a comparison's status,
and a retry of one target's failed cells.

Jobs are made by ``dashboard.jobs.services.job_create`` like every other job
(a target's spec checked by ``dashboard.jobs.spec.build_spec``, as every
job's is); this module only groups them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from dashboard.core.audit import audit, via_details
from dashboard.datasets.services import Inputs
from dashboard.jobs import results
from dashboard.jobs.services import event_add, job_create
from dashboard.models import Comparison, Credential, Item, Job, Team
from dashboard.status import JOB_ACTIVE, ItemStatus, JobStatus
from providers import JobSpec

MIN_TARGETS = 2
MAX_TARGETS = 8
MAX_NAME = 200


class ComparisonError(ValueError):
    """Why a comparison (or an action on one) cannot be done, in words."""


@dataclass(frozen=True)
class Target:
    """One side of a comparison: a credential and a job spec (with the prompts)."""

    credential: Credential
    spec: JobSpec
    #: online, or batch (checked by ``jobs.spec.mode_problem``).
    mode: str = "online"


def comparison_create(
    *, team: Team, name: str, user: Any, inputs: Inputs, targets: list[Target], via: str = ""
) -> Comparison:
    """The comparison and one job per target, in one transaction: every job is
    saved (and nudged on commit) or none is; audited (``via``: the surface
    that asked)."""
    name = clean_name(name)
    if not MIN_TARGETS <= len(targets) <= MAX_TARGETS:
        raise ComparisonError(
            f"A comparison has {MIN_TARGETS} to {MAX_TARGETS} targets, not {len(targets)}."
        )
    for target in targets:
        if target.credential.team_id != team.pk:
            raise ComparisonError("Every target's credential must be of the comparison's team.")
        if list(target.spec.prompts) != inputs.prompts:
            raise ComparisonError("Every target runs over the same prompts.")
    with transaction.atomic():
        comparison = Comparison.objects.create(
            team=team,
            name=name,
            dataset=inputs.dataset,
            prompt_template=inputs.template,
            created_by=user,
        )
        for target in targets:
            job = job_create(
                team=team,
                credential=target.credential,
                spec=target.spec,
                user=user,
                input_fields=inputs.input_fields,
                input_columns=inputs.columns,
                dataset=inputs.dataset,
                comparison=comparison,
                mode=target.mode,
            )
            event_add(job.pk, f"Target of comparison {comparison.pk} “{name}”.")
        audit(
            user, team, "comparison.created", comparison, targets=len(targets), **via_details(via)
        )
    return comparison


def clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ComparisonError("Give the comparison a name.")
    if "\x00" in name:
        raise ComparisonError("The name may not contain NUL characters.")
    if len(name) > MAX_NAME:
        raise ComparisonError(f"The name has {len(name)} characters; at most {MAX_NAME}.")
    return name


def inputs_of_job(job: Job) -> Inputs:
    """A job's prompts (and its rows' fields), to run them again elsewhere."""
    prompts: list[str] = []
    fields: list[dict[str, Any] | None] = []
    for item in results.iter_items(job):
        prompts.append(item.input)
        fields.append(item.input_fields)
    with_fields = [f or {} for f in fields] if any(f is not None for f in fields) else None
    dataset = job.dataset if job.dataset_id else None
    columns = results.field_names(job, next((f for f in fields if f), None))
    return Inputs(prompts=prompts, input_fields=with_fields, dataset=dataset, columns=columns)


def targets_of(comparison: Comparison) -> list[Job]:
    """The comparison's jobs, one per target, in the order they were given."""
    return list(comparison.jobs.order_by("id").select_related("credential").defer("raw_result"))


def retried_targets(targets: Iterable[Job]) -> set[int]:
    """The ids of the targets that have retries (their cells are merged)."""
    ids = [job.pk for job in targets]
    return set(
        Job.objects.filter(retry_of_id__in=ids).values_list("retry_of_id", flat=True).distinct()
    )


def comparison_status(
    comparison: Comparison, targets: list[Job], *, retrying: bool | None = None
) -> str:
    """Running while any target (or a retry of one) is active; then completed
    when at least one target completed, cancelled when all were, else failed.
    ``retrying``: whether a retry of a target is active, when the caller knows
    (a list asks once for a whole page); else it is looked up."""
    if not targets:
        return JobStatus.FAILED
    active = any(job.status in JOB_ACTIVE for job in targets)
    if active or (retries_active(targets) if retrying is None else retrying):
        pending = all(job.status == JobStatus.PENDING for job in targets)
        return JobStatus.PENDING if pending else JobStatus.RUNNING
    statuses = {job.status for job in targets}
    if JobStatus.COMPLETED in statuses:
        return JobStatus.COMPLETED
    if statuses == {JobStatus.CANCELLED}:
        return JobStatus.CANCELLED
    return JobStatus.FAILED


def retries_active(targets: Iterable[Job]) -> bool:
    ids = [job.pk for job in targets]
    return Job.objects.filter(retry_of_id__in=ids, status__in=JOB_ACTIVE).exists()


def target_retry_failed(comparison: Comparison, target: Job, *, user: Any = None) -> Job:
    """A child job of the target (``retry_of``) over the rows whose cell, merged
    with earlier retries, did not complete; merged back into the grid."""
    if target.comparison_id != comparison.pk:
        raise ComparisonError(f"Job {target.pk} is not a target of this comparison.")
    if target.credential is None:
        raise ComparisonError("This target's credential was deleted; it cannot run again.")
    if target.status in JOB_ACTIVE or retries_active([target]):
        raise ComparisonError("This target is still running; retry its failed cells once it ends.")
    rows: list[Item] = [
        item
        for item in results.iter_items(target, merged=True)
        if item.status != ItemStatus.COMPLETED
    ]
    if not rows:
        raise ComparisonError("Every cell of this target completed; nothing to retry.")
    spec = JobSpec.from_dict({**target.spec, "prompts": [item.input for item in rows]})
    with transaction.atomic():
        new = job_create(
            team=target.team,
            credential=target.credential,
            spec=spec,
            user=user,
            retry_of=target,
            source_indexes=[item.index for item in rows],
            input_fields=[item.input_fields for item in rows],
            input_columns=target.input_columns,
            output_columns=results.structured_columns(target),
        )
        event_add(
            target.pk,
            f"Retried as job {new.pk} from comparison {comparison.pk}: "
            f"{len(rows)} cell(s) that did not complete",
        )
    return new
