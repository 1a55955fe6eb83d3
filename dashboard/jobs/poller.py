"""The async poller: one per credential (a credential lease), asking about many
remote jobs in one request per batch and writing each round in bulk: units,
the items they cover, events, and each job's counters and status."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, F, JSONField, Q, Value, When
from django.db.models.functions import Coalesce

from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.core.connect import build_provider
from dashboard.core.health import credential_record_call
from dashboard.core.logs import redact
from dashboard.models import Credential, Item, Job, JobEvent, JobUnit
from dashboard.status import (
    ITEM_ENDED,
    JOB_ACTIVE,
    ItemStatus,
    JobStatus,
    check_item_move,
    item_sources_for,
    sources_for,
)
from providers import ErrorKind, Provider, ProviderError, RemoteState
from providers.base import RemoteStatus

from . import limits
from .items import Changes, Tally, bulk_write, completed_announce, item_complete, item_fail
from .leases import lease_credential, lease_seconds, release_credential, worker_id
from .retry import backoff
from .runner import prompt_label
from .services import job_fail, jobs_end

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
    is spent. Returns the number of rounds run. A poller that loses its
    credential lease (another took over after it stalled) stops at once."""
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
                    if not poll_round(provider, units, credential, deadline=deadline, owner=owner):
                        return rounds  # the lease was lost: the new holder polls now
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
                if not lease_credential(credential_id, owner):
                    return rounds
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
    provider: Provider,
    units: list[JobUnit],
    credential: Credential | None = None,
    *,
    deadline: float | None = None,
    owner: str = "",
) -> bool:
    """One status request per batch of remote ids, then the writes in bulk.
    Batches the requests-per-minute budget or the task's time budget do not
    cover wait for a later round. False when ``owner`` lost the credential's
    poll lease meanwhile: nothing was written."""
    by_remote = {unit.remote_id: unit for unit in units}
    ids = list(by_remote)
    results: dict[str, RemoteStatus | ProviderError] = {}
    size = max(1, provider.poll_batch_size)
    successes, failures = 0, []
    for start in range(0, len(ids), size):
        if start and deadline is not None and clock.monotonic() >= deadline:
            break
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
        if successes or failures:
            credential_record_call(credential.pk, None if successes else failures[-1])
    return apply_poll_results(
        provider,
        {rid: by_remote[rid] for rid in results},
        results,
        credential_id=credential.pk if credential is not None else None,
        owner=owner,
    )


def apply_poll_results(
    provider: Provider,
    by_remote: dict[str, JobUnit],
    results: dict[str, RemoteStatus | ProviderError],
    *,
    credential_id: int | None = None,
    owner: str = "",
) -> bool:
    """Record a round: units, their items, events, and each job's counters and
    status, in one transaction and a number of queries that does not grow with
    the number of jobs. Job statuses move only by conditional updates through
    the status rules; lease columns are never written here."""
    now = clock.now()
    events: list[JobEvent] = []
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
    units = list(by_remote.values())
    # One transaction: a worker killed between the units' write and the jobs'
    # would leave every unit ended and its job running with nothing left to poll.
    with transaction.atomic():
        if owner and credential_id is not None and not renew_credential(credential_id, owner):
            return False
        round_ = _Round(provider, units, now)
        JobUnit.objects.bulk_update(
            units,
            ["state", "provider_status", "log_length", "error", "poll_failures", "next_poll_at"],
        )
        round_.write(events)
    return True


class _Round:
    """The items and jobs one poll round moves."""

    def __init__(self, provider: Provider, units: list[JobUnit], now: Any) -> None:
        self.provider = provider
        self.now = now
        self.units = units
        job_ids = sorted({unit.job_id for unit in units})
        # Lock the jobs (a row lock on PostgreSQL; SQLite's write transaction
        # already holds the database): a cancel that landed first wins, one
        # that comes later waits for this round.
        self.jobs = {
            job.pk: job
            for job in Job.objects.select_for_update()
            .filter(pk__in=job_ids, status__in=list(JOB_ACTIVE))
            .only(*JOB_COLUMNS)
        }
        self.changes: dict[int, Changes] = {job_id: Changes() for job_id in self.jobs}
        self.started: set[int] = set()
        self.raw_results: dict[int, Any] = {}

    def write(self, events: list[JobEvent]) -> None:
        live = [unit for unit in self.units if unit.job_id in self.jobs]
        ended_units = [
            u for u in live if u.state in (JobUnit.State.COMPLETED, JobUnit.State.FAILED)
        ]
        running_units = [
            u
            for u in live
            if getattr(u, "_status", None) is not None and u._status.state == RemoteState.RUNNING
        ]  # type: ignore[attr-defined]
        running = _start_items(running_units, self.now)
        for job_id in running:
            self.started.add(job_id)
        items = _items_of(ended_units)
        for unit in ended_units:
            job = self.jobs[unit.job_id]
            self._end_unit_items(job, unit, items.get(unit.pk, []))
        tallies = {job_id: changes.tally() for job_id, changes in self.changes.items()}
        for job_id, count in running.items():
            tallies[job_id].running += count
        changed = [item for changes in self.changes.values() for item in changes.items.values()]
        for item in changed:
            item.updated_at = self.now
        bulk_write(changed)
        for job_id, changes in self.changes.items():
            completed_announce(job_id, self.jobs[job_id].scorers, changes)
        self._write_jobs(tallies, live)
        events += self._start(tallies)
        events = [event for event in events if event.job_id in self.jobs]
        if events:
            JobEvent.objects.bulk_create(events)
        # Jobs whose items have all ended now end by the rule; the database
        # decides which from the counters written above.
        jobs_end([job_id for job_id, tally in tallies.items() if tally.ended])

    def _end_unit_items(self, job: Job, unit: JobUnit, items: list[Item]) -> None:
        changes = self.changes[job.pk]
        status = getattr(unit, "_status", None)
        schema = job.spec.get("output_schema")
        results = status.item_results() if status is not None else None
        if unit.state == JobUnit.State.COMPLETED and results is not None:
            if len(results) != len(items):
                # Not one output per prompt: kept whole on the job, never guessed.
                job.raw_result = status.outputs
                self.raw_results[job.pk] = status.outputs
                error = (
                    f"{self.provider.label} returned {len(results)} output(s) for "
                    f"{len(items)} prompt(s); its whole answer is kept on the job."
                )
                for item in items:
                    _touch_fail(changes, item, error)
                return
            for item, result in zip(items, results, strict=True):
                if item.status in ITEM_ENDED:
                    continue
                changes.add(item, item.status)
                item.attempts = max(item.attempts, 1)
                item_complete(item, result, schema)
            return
        if unit.state == JobUnit.State.COMPLETED:
            # Completed with no outputs to map (a result of another shape).
            if status is not None and status.raw_result is not None:
                self.raw_results[job.pk] = status.raw_result
            for item in items:
                if item.status not in ITEM_ENDED:
                    changes.add(item, item.status)
                    check_item_move(item.status, ItemStatus.COMPLETED)
                    item.status = ItemStatus.COMPLETED
                    item.attempts = max(item.attempts, 1)
            return
        for item in items:
            _touch_fail(changes, item, unit.error)

    def _write_jobs(self, tallies: dict[int, Tally], live: list[JobUnit]) -> None:
        """Counters, provider status and cold start of every job, in one UPDATE."""
        latest: dict[int, JobUnit] = {}
        for unit in live:
            latest[unit.job_id] = unit
        cases: dict[str, list[When]] = {}
        for job_id, job in self.jobs.items():
            tally = tallies[job_id]
            for name, value in tally.job_updates().items():
                cases.setdefault(name, []).append(When(pk=job_id, then=value))
            unit = latest.get(job_id)
            if unit is not None:
                said = unit.provider_status or job.provider_status
                cases.setdefault("provider_status", []).append(When(pk=job_id, then=Value(said)))
                cold = bool(getattr(unit, "_status", None) and unit._status.cold_start)  # type: ignore[attr-defined]
                cases.setdefault("cold_start", []).append(When(pk=job_id, then=Value(cold)))
            if job_id in self.raw_results:
                cases.setdefault("raw_result", []).append(
                    When(pk=job_id, then=Value(self.raw_results[job_id], output_field=JSONField()))
                )
        if not cases:
            return
        updates = {
            name: Case(*whens, default=F(name), output_field=Job._meta.get_field(name))
            for name, whens in cases.items()
        }
        Job.objects.filter(pk__in=list(self.jobs)).update(**updates)

    def _start(self, tallies: dict[int, Tally]) -> list[JobEvent]:
        """Jobs whose first remote job started, or whose first items ended,
        move to running (one conditional UPDATE)."""
        started = [
            job_id
            for job_id in self.started | {j for j, t in tallies.items() if t.ended}
            if self.jobs[job_id].status in (JobStatus.PENDING, JobStatus.QUEUED)
        ]
        if not started:
            return []
        Job.objects.filter(pk__in=started, status__in=sources_for(JobStatus.RUNNING)).update(
            status=JobStatus.RUNNING, started_at=Coalesce(F("started_at"), self.now)
        )
        return [
            JobEvent(job_id=job_id, message=f"Running on {self.provider.label}.")
            for job_id in started
        ]


#: What a round reads of a job (its spec for the schema and the counters).
JOB_COLUMNS = (
    "id",
    "status",
    "spec",
    "scorers",
    "provider_status",
    "progress_total",
    "progress_done",
    "items_completed",
    "items_failed",
    "items_cancelled",
    "items_invalid",
)


def renew_credential(credential_id: int, owner: str) -> bool:
    """Keep the credential's poll lease; False when another poller holds it now."""
    return bool(
        Credential.objects.filter(pk=credential_id, poll_lease_owner=owner).update(
            poll_lease_expires_at=clock.now() + timedelta(seconds=lease_seconds())
        )
    )


def _touch_fail(changes: Changes, item: Item, error: str) -> None:
    if item.status in ITEM_ENDED:
        return
    changes.add(item, item.status)
    item_fail(item, error)
    item.attempts = max(item.attempts, 1)


def _unit_range(unit: JobUnit) -> Q:
    indexes = unit.prompt_indexes or [0]
    return Q(job_id=unit.job_id, index__gte=min(indexes), index__lte=max(indexes))


def _items_of(units: list[JobUnit]) -> dict[int, list[Item]]:
    """The items of each unit, in index order, in one query."""
    if not units:
        return {}
    where = Q()
    for unit in units:
        where |= _unit_range(unit)
    # Whole rows: a write of some fields must not read the deferred ones one by one.
    rows = Item.objects.filter(where).order_by("job_id", "index")
    by_key = {(item.job_id, item.index): item for item in rows}
    return {
        unit.pk: [
            by_key[(unit.job_id, i)] for i in unit.prompt_indexes if (unit.job_id, i) in by_key
        ]
        for unit in units
    }


def _start_items(units: list[JobUnit], now: Any) -> dict[int, int]:
    """The pending items of units the provider reports running become running:
    one count and one UPDATE for the round. Returns how many, per job."""
    if not units:
        return {}
    where = Q()
    for unit in units:
        where |= _unit_range(unit)
    pending = Item.objects.filter(where, status__in=item_sources_for(ItemStatus.RUNNING))
    counts = dict(pending.order_by().values_list("job_id").annotate(n=Count("pk")))
    if counts:
        pending.update(status=ItemStatus.RUNNING, attempts=1, updated_at=now)
    return counts


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
