"""The async poller: one per credential (a credential lease), asking about many
remote jobs in one request per batch and writing each round in bulk."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from dashboard.core import clock, structured
from dashboard.core import queue as tasks_queue
from dashboard.core.connect import build_provider
from dashboard.core.logs import redact
from dashboard.models import Credential, Job, JobEvent, JobUnit
from dashboard.status import JOB_ACTIVE, JobStatus, check_move
from providers import ErrorKind, Provider, ProviderError, RemoteState
from providers.base import RemoteStatus

from . import limits
from .leases import (
    lease_credential,
    release_credential,
    worker_id,
)
from .retry import backoff
from .runner import prompt_label
from .services import job_fail

logger = logging.getLogger(__name__)

#: Consecutive failed polls of one remote job before it is given up.
MAX_POLL_FAILURES = 8


def due_units(credential_id: int, now: Any, limit: int = 1000) -> list[JobUnit]:
    return list(
        JobUnit.objects.filter(
            job__credential_id=credential_id,
            state=JobUnit.State.SUBMITTED,
            job__status__in=JOB_ACTIVE,
        )
        .filter(Q(next_poll_at__lte=now) | Q(next_poll_at__isnull=True))
        .select_related("job")
        .order_by("next_poll_at")[:limit]
    )


def poll_credential(credential_id: int, *, budget: float | None = None) -> int:
    """Poll a credential's remote jobs in rounds until none is left or the budget
    is spent. Returns the number of rounds run."""
    owner = worker_id()
    if not lease_credential(credential_id, owner):
        return 0
    deadline = clock.monotonic() + (budget if budget is not None else settings.TASK_BUDGET)
    rounds = 0
    more = False
    try:
        credential = Credential.objects.get(pk=credential_id)
        provider = build_provider(credential)
        with provider:
            while clock.monotonic() < deadline:
                circuit = limits.circuit_wait(credential)
                units = due_units(credential_id, clock.now()) if not circuit else []
                if units:
                    poll_round(provider, units, credential)
                    rounds += 1
                wait_for = _seconds_to_next_poll(credential_id)
                if wait_for is not None and circuit:
                    wait_for = max(wait_for, circuit)
                if wait_for is None:
                    break
                if clock.monotonic() + wait_for >= deadline:
                    more = True
                    break
                clock.sleep(max(0.05, wait_for))
                lease_credential(credential_id, owner)
    except ProviderError as exc:
        _fail_credential_jobs(credential_id, redact(exc.message))
    finally:
        release_credential(credential_id, owner)
    if more:
        tasks_queue.nudge_poller(credential_id)
    return rounds


def _seconds_to_next_poll(credential_id: int) -> float | None:
    unit = (
        JobUnit.objects.filter(
            job__credential_id=credential_id,
            state=JobUnit.State.SUBMITTED,
            job__status__in=JOB_ACTIVE,
        )
        .order_by("next_poll_at")
        .values_list("next_poll_at", flat=True)
        .first()
    )
    if unit is None:
        return None
    return max(0.0, (unit - clock.now()).total_seconds())


def _fail_credential_jobs(credential_id: int, message: str) -> None:
    for job_id in Job.objects.filter(
        credential_id=credential_id, status__in=JOB_ACTIVE
    ).values_list("pk", flat=True):
        job_fail(job_id, message)


def poll_round(
    provider: Provider, units: list[JobUnit], credential: Credential | None = None
) -> None:
    """One status request per batch of remote ids, then the writes in bulk.
    Batches the requests-per-minute budget does not cover wait for a later round."""
    by_remote = {unit.remote_id: unit for unit in units}
    ids = list(by_remote)
    results: dict[str, RemoteStatus | ProviderError] = {}
    size = max(1, provider.poll_batch_size)
    successes, failures = 0, []
    for start in range(0, len(ids), size):
        if credential is not None and limits.rate_acquire(credential):
            break
        batch = ids[start : start + size]
        try:
            answer = provider.poll(batch)
        except ProviderError as exc:
            answer = {remote_id: exc for remote_id in batch}
        results.update(answer)
        errors = [r for r in answer.values() if isinstance(r, ProviderError)]
        if len(errors) == len(answer) and errors:
            failures.append(errors[0])
        else:
            successes += 1
    if credential is not None:
        limits.circuit_record(credential.pk, successes=successes, failures=failures)
    apply_poll_results(provider, {rid: by_remote[rid] for rid in results}, results)


def apply_poll_results(
    provider: Provider,
    by_remote: dict[str, JobUnit],
    results: dict[str, RemoteStatus | ProviderError],
) -> None:
    now = clock.now()
    events: list[JobEvent] = []
    touched_units: list[JobUnit] = []
    jobs: dict[int, Job] = {}
    for unit in by_remote.values():
        # select_related gives each unit its own copy of the job: share one.
        unit.job = jobs.setdefault(unit.job_id, unit.job)
    for remote_id, unit in by_remote.items():
        result = results.get(remote_id)
        if result is None:
            result = ProviderError(
                f"{provider.label} did not report on remote job {remote_id}",
                kind=ErrorKind.PROTOCOL,
            )
        if isinstance(result, ProviderError):
            _apply_poll_error(provider, unit, result, now, events)
        else:
            _apply_status(provider, unit, result, now, events)
        touched_units.append(unit)
    # One transaction: a worker killed between the units' write and the jobs'
    # would leave every unit ended and its job running with nothing left to poll.
    with transaction.atomic():
        JobUnit.objects.bulk_update(
            touched_units,
            ["state", "provider_status", "log_length", "error", "poll_failures", "next_poll_at"],
        )
        if events:
            JobEvent.objects.bulk_create(events)
        _roll_up_jobs(provider, jobs, by_remote)


def _apply_poll_error(
    provider: Provider, unit: JobUnit, exc: ProviderError, now: Any, events: list[JobEvent]
) -> None:
    message = redact(exc.message)
    unit.poll_failures += 1
    if (
        exc.kind == ErrorKind.AUTH
        or exc.kind == ErrorKind.NOT_FOUND
        or unit.poll_failures >= MAX_POLL_FAILURES
    ):
        unit.state = JobUnit.State.FAILED
        unit.error = (
            message
            if unit.poll_failures < MAX_POLL_FAILURES
            else (f"Gave up after {unit.poll_failures} failed status checks: {message}")
        )
        events.append(
            JobEvent(
                job_id=unit.job_id, kind=JobEvent.Kind.ERROR, message=unit.error, unit=unit.index
            )
        )
        return
    delay = backoff(unit.poll_failures, exc.retry_after)
    unit.next_poll_at = now + timedelta(seconds=delay)
    events.append(
        JobEvent(
            job_id=unit.job_id,
            kind=JobEvent.Kind.RETRY,
            message=f"Status check {unit.poll_failures} failed, next in {delay:.1f} s: {message}",
            unit=unit.index,
        )
    )


def _apply_status(
    provider: Provider, unit: JobUnit, status: RemoteStatus, now: Any, events: list[JobEvent]
) -> None:
    unit.poll_failures = 0
    if status.log is not None and len(status.log) > unit.log_length:
        # The provider sends the whole log every time: keep only what is new.
        events.append(
            JobEvent(
                job_id=unit.job_id,
                kind=JobEvent.Kind.LOG,
                message=status.log[unit.log_length :],
                unit=unit.index,
            )
        )
        unit.log_length = len(status.log)
    if status.provider_status != unit.provider_status:
        events.append(
            JobEvent(
                job_id=unit.job_id,
                message=f"{provider.label} says: {status.provider_status}{_unit_label(unit)}",
                unit=unit.index,
            )
        )
        unit.provider_status = status.provider_status
    if status.state == RemoteState.COMPLETED:
        unit.state = JobUnit.State.COMPLETED
        _store_outputs(unit, status)
    elif status.state == RemoteState.FAILED:
        unit.state = JobUnit.State.FAILED
        unit.error = redact(status.error or f"{provider.label} reported {status.provider_status}")
    else:
        unit.next_poll_at = now + timedelta(seconds=poll_interval(provider, unit, now))
    unit._status = status  # type: ignore[attr-defined]


def poll_interval(provider: Provider, unit: JobUnit, now: Any) -> float:
    """The provider's cadence, backing off for remote jobs that run long: a
    cold start can take minutes and need not be asked about every second."""
    age = (now - unit.submitted_at).total_seconds() if unit.submitted_at else 0.0
    factor = 1 if age < 120 else 2 if age < 600 else 5
    return provider.poll_interval * factor


def _unit_label(unit: JobUnit) -> str:
    if unit.job.progress_total <= 1 or len(unit.prompt_indexes) != 1:
        return ""
    return f" ({prompt_label(unit.prompt_indexes)})"


def _store_outputs(unit: JobUnit, status: RemoteStatus) -> None:
    job = unit.job
    outputs = list(job.outputs or [None] * job.progress_total)
    if status.outputs is not None and len(status.outputs) != len(unit.prompt_indexes):
        # Not one output per prompt: keep it whole rather than guess the mapping.
        job.raw_result = status.outputs
    elif status.outputs is not None:
        for index, output in zip(unit.prompt_indexes, status.outputs, strict=False):
            outputs[index] = output
    elif status.raw_result is not None:
        job.raw_result = status.raw_result
    job.outputs = outputs


def _roll_up_jobs(provider: Provider, jobs: dict[int, Job], by_remote: dict[str, JobUnit]) -> None:
    """Derive each job's status from its units and write every job in bulk: a
    round costs the same few queries for ten jobs or a thousand, however many
    start running or end in it."""
    units_by_job: dict[int, list[JobUnit]] = {}
    for unit in by_remote.values():
        units_by_job.setdefault(unit.job_id, []).append(unit)
    states = _unit_states(list(jobs))
    now = clock.now()
    still_active: list[Job] = []
    started: list[Job] = []
    ended: list[Job] = []
    for job_id, job in jobs.items():
        polled = units_by_job[job_id]
        unit_states = states.get(job_id, {})
        for unit in polled:
            unit_states[unit.index] = unit.state
        errors = dict(job.output_errors or {})
        for unit in polled:
            if unit.state == JobUnit.State.FAILED:
                for index in unit.prompt_indexes:
                    errors[str(index)] = unit.error
        job.output_errors = errors
        outputs = job.outputs or []
        job.progress_done = sum(1 for o in outputs if o is not None) + len(errors)
        latest = getattr(polled[-1], "_status", None)
        job.provider_status = polled[-1].provider_status or job.provider_status
        job.cold_start = bool(latest and latest.cold_start)
        if all(state in UNIT_DONE for state in unit_states.values()):
            _end_async(job, errors, now)
            ended.append(job)
            continue
        any_running = any(
            getattr(u, "_status", None) and u._status.state == RemoteState.RUNNING
            for u in polled  # type: ignore[attr-defined]
        )
        if any_running and job.status in (JobStatus.PENDING, JobStatus.QUEUED):
            check_move(job.status, JobStatus.RUNNING)
            job.status = JobStatus.RUNNING
            job.started_at = job.started_at or now
            started.append(job)
        still_active.append(job)
    # One read of which jobs are still active, so a cancel that landed
    # meanwhile wins and gets no misleading event.
    live = set(
        Job.objects.filter(pk__in=list(jobs), status__in=JOB_ACTIVE).values_list("pk", flat=True)
    )
    events = [
        JobEvent(job_id=job.pk, message=f"Running on {provider.label}.")
        for job in started
        if job.pk in live
    ]
    events += [_end_event(job) for job in ended if job.pk in live]
    writes = [job for job in still_active + ended if job.pk in live]
    if writes:
        Job.objects.filter(status__in=JOB_ACTIVE).bulk_update(writes, ROLL_UP_FIELDS)
    if events:
        JobEvent.objects.bulk_create(events)


UNIT_DONE = frozenset({JobUnit.State.COMPLETED, JobUnit.State.FAILED, JobUnit.State.UNKNOWN})
ROLL_UP_FIELDS = [
    "status",
    "provider_status",
    "cold_start",
    "outputs",
    "output_errors",
    "progress_done",
    "raw_result",
    "error",
    "error_retryable",
    "started_at",
    "finished_at",
    "next_check_at",
    "lease_owner",
    "lease_expires_at",
]


def _unit_states(job_ids: list[int]) -> dict[int, dict[int, str]]:
    states: dict[int, dict[int, str]] = {}
    for job_id, index, state in JobUnit.objects.filter(job_id__in=job_ids).values_list(
        "job_id", "index", "state"
    ):
        states.setdefault(job_id, {})[index] = state
    return states


def _end_async(job: Job, errors: dict[str, str], now: Any) -> None:
    """Set the fields of a job whose remote jobs all ended (written by the caller)."""
    total = job.progress_total
    job.outputs = structured.parse_outputs(job.spec.get("output_schema"), job.outputs)
    job.cold_start = False
    job.started_at = job.started_at or now
    job.finished_at = now
    job.next_check_at = None
    job.lease_owner, job.lease_expires_at = "", None
    if errors:
        first = next(iter(errors.values()))
        job.error = (
            first
            if total == 1
            else f"{len(errors)} of {total} prompts failed; first error: {first}"
        )
        job.error_retryable = True
        check_move(job.status, JobStatus.FAILED)
        job.status = JobStatus.FAILED
        return
    job.output_errors = {}
    job.progress_done = total
    check_move(job.status, JobStatus.COMPLETED)
    job.status = JobStatus.COMPLETED


def _end_event(job: Job) -> JobEvent:
    if job.status == JobStatus.FAILED:
        return JobEvent(job_id=job.pk, kind=JobEvent.Kind.ERROR, message=f"Failed: {job.error}")
    return JobEvent(job_id=job.pk, message=f"Completed: {job.progress_total} output(s).")
