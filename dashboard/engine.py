"""The worker's side: take a job, talk to its provider, record what happened.

The database decides; tasks only nudge. A worker takes a job with a lease
(conditional UPDATE on ``lease_owner``/``lease_expires_at``), never holds a row
lock across an HTTP call, and writes every change with a conditional UPDATE so
a cancel or a deadline that lands meanwhile wins.

* Sync providers (Together, Lamini, Bytez runs): :func:`run_sync_job` runs the
  job's units on a thread pool of the credential's ``max_concurrency``, retries
  what is safe to retry, and flushes outputs and streamed text as they come.
* Async providers (MyMagic, GridRepublic): :func:`submit_async_job` submits each
  unit once (recording the "submitting" step first), then
  :func:`poll_credential` polls all of a credential's remote jobs in batches.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from providers import ErrorKind, Provider, ProviderError, RemoteState, get_provider_class
from providers.base import RemoteStatus, shorten

from . import limits, netguard, structured
from .crypto import SecretDecryptionError
from .jobs import event_add, job_fail, job_transition
from .logs import redact
from .models import Credential, Job, JobEvent, JobUnit
from .status import JOB_ACTIVE, JobStatus, check_move

logger = logging.getLogger(__name__)

#: Attempts per sync call (first try + retries) for 429, 5xx, timeouts.
MAX_CALL_ATTEMPTS = 4
#: Times a worker may take a job over from a crashed worker before giving up.
MAX_TAKEOVERS = 5
#: Consecutive failed polls of one remote job before it is given up.
MAX_POLL_FAILURES = 8
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
FLUSH_INTERVAL = 0.3

# Injected so tests control time instead of sleeping on it.
sleep: Callable[[float], None] = time.sleep
monotonic: Callable[[], float] = time.monotonic
transport_factory: Callable[[Credential], Any] | None = None


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def lease_seconds() -> int:
    return limits.lease_seconds()


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before retry number ``attempt`` (1-based): Retry-After when the
    provider sent one, else exponential with full jitter."""
    if retry_after is not None:
        return min(retry_after, 300.0)
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Deferred(Exception):
    """Stop this task slice; the job is due again at ``when``."""

    def __init__(self, when: float, reason: str) -> None:
        super().__init__(reason)
        self.when = when
        self.reason = reason


@sensitive_variables("secret")
def build_provider(credential: Credential) -> Provider:
    """The adapter for a credential. Raises ProviderError for a secret that
    cannot be decrypted or a base_url that may not be called."""
    try:
        secret = credential.reveal_secret()
    except SecretDecryptionError as exc:
        raise ProviderError(str(exc), kind=ErrorKind.AUTH) from None
    try:
        netguard.check_url(credential.base_url)
    except netguard.BlockedHostError as exc:
        raise ProviderError(str(exc), kind=ErrorKind.INVALID_SPEC) from None
    transport = transport_factory(credential) if transport_factory else None
    cls = get_provider_class(credential.provider)
    provider = cls(
        secret=secret,
        base_url=credential.base_url,
        options=credential.options,
        transport=transport,
        timeout=httpx.Timeout(
            settings.DASHBOARD_HTTP_TIMEOUT, connect=min(5.0, settings.DASHBOARD_HTTP_TIMEOUT)
        ),
    )
    # A self-hosted gateway (or a simulator) may be polled faster or slower.
    interval = credential.options.get("poll_interval_seconds")
    if isinstance(interval, int | float) and interval > 0:
        provider.poll_interval = float(interval)
    return provider


# --- leases -----------------------------------------------------------------------


def lease_job(job_id: int, owner: str) -> Job | None:
    """Take the job if nobody holds a live lease on it. Returns the fresh row."""
    now = timezone.now()
    free = Q(lease_owner="") | Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True)
    due = Q(next_check_at__isnull=True) | Q(next_check_at__lte=now)
    job = Job.objects.filter(pk=job_id, status__in=JOB_ACTIVE).filter(free, due).first()
    if job is None:
        return None
    takeover = bool(job.lease_owner)
    updated = (
        Job.objects.filter(pk=job_id, status__in=JOB_ACTIVE, lease_owner=job.lease_owner)
        .filter(free)
        .update(
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds()),
            attempts=job.attempts + (1 if takeover else 0),
        )
    )
    if updated != 1:
        return None  # another worker got there first
    job.refresh_from_db()
    if takeover:
        event_add(job.pk, f"Resumed after a worker stopped mid-task (takeover {job.attempts}).")
    return job


def renew_job(job_id: int, owner: str) -> bool:
    """Heartbeat: keep the lease while working. False when it was lost."""
    return bool(
        Job.objects.filter(pk=job_id, lease_owner=owner).update(
            lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds())
        )
    )


def release_job(job_id: int, owner: str, *, next_check_in: float | None = None) -> None:
    next_check = (
        timezone.now() + timedelta(seconds=next_check_in) if next_check_in is not None else None
    )
    Job.objects.filter(pk=job_id, lease_owner=owner).update(
        lease_owner="", lease_expires_at=None, next_check_at=next_check
    )


def lease_credential(credential_id: int, owner: str) -> bool:
    now = timezone.now()
    free = Q(poll_lease_owner="") | Q(poll_lease_expires_at__lt=now) | Q(poll_lease_owner=owner)
    return bool(
        Credential.objects.filter(pk=credential_id)
        .filter(free)
        .update(
            poll_lease_owner=owner, poll_lease_expires_at=now + timedelta(seconds=lease_seconds())
        )
    )


def release_credential(credential_id: int, owner: str) -> None:
    Credential.objects.filter(pk=credential_id, poll_lease_owner=owner).update(
        poll_lease_owner="", poll_lease_expires_at=None
    )


# --- entry point for one job ---------------------------------------------------------


def advance_job(job_id: int, *, budget: float | None = None) -> str:
    """Do the next step of a job. Returns what happened (for logs and tests)."""
    owner = worker_id()
    job = lease_job(job_id, owner)
    if job is None:
        return "skipped"
    deadline = monotonic() + (budget if budget is not None else settings.TASK_BUDGET)
    next_check_in: float | None = None
    try:
        if job.attempts > MAX_TAKEOVERS:
            job_fail(job.pk, f"Gave up after {job.attempts} interrupted attempts.", retryable=True)
            return "failed"
        if job.deadline_at and job.deadline_at <= timezone.now():
            job_fail(job.pk, "The job passed its deadline before finishing.", retryable=True)
            return "failed"
        if job.credential is None:
            job_fail(job.pk, "The job's credential was deleted.")
            return "failed"
        provider = build_provider(job.credential)
        with provider:
            return _work(job, provider, deadline, owner)
    except Deferred as deferred:
        next_check_in = max(0.0, deferred.when - monotonic())
        event_add(job.pk, f"Paused: {deferred.reason}; resuming in {next_check_in:.0f} s.")
        if next_check_in < 1:
            next_check_in = 0.0  # due at once, so the successor nudged below may take it
        return "deferred"
    except ProviderError as exc:
        job_fail(job.pk, redact(exc.message), retryable=exc.retryable)
        return "failed"
    except Exception as exc:
        logger.exception("Job %s: unexpected error", job_id)
        job_fail(
            job.pk, f"Internal error while running the job: {type(exc).__name__}", retryable=True
        )
        return "failed"
    finally:
        release_job(job_id, owner, next_check_in=next_check_in)
        if job.credential_id and limits.slots_release(job.credential_id, owner):
            nudge_waiting_jobs(job.credential_id, exclude=job_id)
        if next_check_in is not None and next_check_in < 1:
            from .tasks import enqueue

            enqueue("dashboard.tasks.advance_job", job_id)


#: A pause this short is waited out inside the task, holding the lease, rather
#: than handed to the once-a-minute sweep.
SHORT_PAUSE = 3.0


def _work(job: Job, provider: Provider, deadline: float, owner: str) -> str:
    while True:
        try:
            if provider.has_instances and job.status != JobStatus.RUNNING:
                _instance_gate(job)
            if provider.kind == "sync":
                return run_sync_job(job, provider, deadline, owner)
            return submit_async_job(job, provider, deadline, owner)
        except Deferred as deferred:
            pause = deferred.when - monotonic()
            if not 0 < pause <= SHORT_PAUSE or monotonic() + pause >= deadline:
                raise
            sleep(pause)
            if not renew_job(job.pk, owner):
                return "stopped"
            job.refresh_from_db()
            if job.is_terminal:
                return "stopped"


def _instance_gate(job: Job) -> None:
    """Bytez: run only on a loaded model. Wait (queued) while its instance
    loads; fail at once, saying how to load it, when there is none."""
    from .instances import bytez_job_gate

    verdict = bytez_job_gate(job)
    if verdict is None:
        return
    action, message = verdict
    if action == "fail":
        raise ProviderError(message, kind=ErrorKind.NOT_FOUND)
    if job.status == JobStatus.PENDING:
        job_transition(job.pk, JobStatus.QUEUED, provider_status=message, message=message)
    else:
        Job.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(provider_status=message)
    raise Deferred(monotonic() + 2.0, message)


def nudge_waiting_jobs(credential_id: int, *, exclude: int | None = None) -> None:
    """Slots were freed: the jobs of this credential that wait for one go now."""
    from .tasks import enqueue

    waiting = list(
        Job.objects.filter(
            credential_id=credential_id,
            status__in=[JobStatus.PENDING, JobStatus.RUNNING],
            lease_owner="",
            next_check_at__gt=timezone.now(),
            units__isnull=True,
        )
        .exclude(pk=exclude)
        .order_by("created_at")
        .values_list("pk", flat=True)[:20]
    )
    if waiting:
        Job.objects.filter(pk__in=waiting).update(next_check_at=timezone.now())
        for job_id in waiting:
            enqueue("dashboard.tasks.advance_job", job_id)


# --- sync providers ----------------------------------------------------------------------


@dataclass
class _UnitResult:
    indexes: list[int]
    outputs: list[Any] | None = None
    error: ProviderError | None = None


class _SyncRun:
    """One slice of a sync job: a thread pool of calls, the main thread writing."""

    def __init__(self, job: Job, provider: Provider, deadline: float, owner: str = "") -> None:
        self.owner = owner
        self.successes = 0
        self.failures: list[ProviderError] = []
        self.last_heartbeat = monotonic()
        self.check_circuit = False  # set when a failure may have opened it
        self.job = job
        self.provider = provider
        self.deadline = deadline
        self.spec = job.job_spec
        count = len(self.spec.prompts)
        self.outputs: list[Any] = list(job.outputs or [None] * count)
        self.outputs += [None] * (count - len(self.outputs))
        self.errors: dict[str, str] = dict(job.output_errors or {})
        self.stop = threading.Event()
        self.events: queue.SimpleQueue[tuple[str, str, int | None]] = queue.SimpleQueue()
        self.dirty = False
        self.fatal: ProviderError | None = None
        self.deferred: Deferred | None = None

    def todo(self) -> list[list[int]]:
        done = {int(i) for i in self.errors} | {
            i for i, o in enumerate(self.outputs) if o is not None
        }
        return [unit for unit in self.provider.units(self.spec) if not set(unit) <= done]

    def call(self, indexes: list[int]) -> _UnitResult:
        """Run one unit with bounded retries; runs on a pool thread (no DB here)."""
        attempt = 1
        while True:
            if self.stop.is_set():
                return _UnitResult(indexes)
            try:
                on_chunk = self.on_chunk if self.spec.stream else None
                outputs = self.provider.run(self.spec, indexes, on_chunk)
                self.successes += 1
                return _UnitResult(indexes, outputs)
            except ProviderError as exc:
                self.failures.append(exc)
                if not exc.retryable or attempt >= MAX_CALL_ATTEMPTS:
                    return _UnitResult(indexes, error=exc)
                delay = backoff(attempt, exc.retry_after)
                if monotonic() + delay > self.deadline:
                    self.deferred = Deferred(monotonic() + delay, shorten(exc.message, 200))
                    return _UnitResult(indexes)
                label = _prompt_label(indexes)
                self.events.put(
                    (
                        JobEvent.Kind.RETRY,
                        f"Retry {attempt}/{MAX_CALL_ATTEMPTS - 1} of {label} in {delay:.1f} s "
                        f"after: {redact(exc.message)}",
                        None,
                    )
                )
                sleep(delay)
                attempt += 1

    def on_chunk(self, index: int, text: str) -> None:
        self.events.put((JobEvent.Kind.STREAM, text, index))

    def record(self, result: _UnitResult) -> None:
        if result.outputs is not None:
            for index, output in zip(result.indexes, result.outputs, strict=False):
                self.outputs[index] = output
            self.dirty = True
        elif result.error is not None:
            message = redact(result.error.message)
            for index in result.indexes:
                self.errors[str(index)] = message
            self.dirty = True
            self.events.put(
                (JobEvent.Kind.ERROR, f"{_prompt_label(result.indexes)} failed: {message}", None)
            )
            if result.error.kind in (ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.INVALID_SPEC):
                self.fatal = result.error  # every other call would fail the same way
                self.stop.set()

    def flush(self) -> bool:
        """Write outputs and queued events; False when the job left 'running'."""
        self.flush_events()
        self.record_health()
        self.check_circuit = True  # another worker may have opened it meanwhile
        if monotonic() - self.last_heartbeat > lease_seconds() / 3:
            self.last_heartbeat = monotonic()
            if not renew_job(self.job.pk, self.owner):
                return False  # the lease was lost: another worker owns the job now
            limits.slots_renew(self.job.credential_id, self.owner)
        if not self.dirty:
            return Job.objects.filter(pk=self.job.pk, status=JobStatus.RUNNING).exists()
        done = sum(1 for o in self.outputs if o is not None) + len(self.errors)
        updated = Job.objects.filter(pk=self.job.pk, status=JobStatus.RUNNING).update(
            outputs=self.outputs, output_errors=self.errors, progress_done=done
        )
        self.dirty = False
        return bool(updated)

    def record_health(self, *, successes_too: bool = True) -> None:
        """Feed the credential's circuit breaker (and, for a model lifecycle, the
        instance's run count) with what happened since last time. Failures go
        at once, so the breaker can stop the next call; successes wait for the
        next flush, so a fast batch does not write once per answer."""
        failures, self.failures = self.failures, []
        successes = 0
        if successes_too:
            successes, self.successes = self.successes, 0
        if successes or failures:
            limits.circuit_record(self.job.credential_id, successes=successes, failures=failures)
        if failures:
            self.check_circuit = True
        _note_runs(self.job, self.provider, successes)

    def blocked(self) -> Deferred | None:
        """A reason to stop dispatching now: the circuit is open or the
        requests-per-minute budget is spent."""
        credential = self.job.credential
        wait = limits.circuit_wait(credential) if self.check_circuit else 0.0
        self.check_circuit = False
        if wait:
            return Deferred(
                monotonic() + wait, f"{self.provider.label} keeps failing (circuit open)"
            )
        wait = limits.rate_acquire(credential)
        if wait:
            return Deferred(
                monotonic() + wait, "the credential's requests-per-minute limit is reached"
            )
        return None

    def flush_events(self) -> None:
        rows: list[JobEvent] = []
        stream: dict[int | None, list[str]] = {}
        while True:
            try:
                kind, message, index = self.events.get_nowait()
            except queue.Empty:
                break
            if kind == JobEvent.Kind.STREAM:
                stream.setdefault(index, []).append(message)
            else:
                rows.append(JobEvent(job_id=self.job.pk, kind=kind, message=message))
        rows += [
            JobEvent(
                job_id=self.job.pk, kind=JobEvent.Kind.STREAM, message="".join(parts), unit=index
            )
            for index, parts in stream.items()
        ]
        if rows:
            JobEvent.objects.bulk_create(rows)


def run_sync_job(job: Job, provider: Provider, deadline: float, owner: str = "") -> str:
    run = _SyncRun(job, provider, deadline, owner)
    provider.validate(run.spec)
    todo = run.todo()
    assert job.credential is not None
    circuit = limits.circuit_wait(job.credential)
    if circuit:
        raise Deferred(monotonic() + circuit, f"{provider.label} keeps failing (circuit open)")
    workers = limits.slots_acquire(
        job.credential, owner, min(job.credential.max_concurrency, len(todo) or 1)
    )
    if not workers:
        Job.objects.filter(pk=job.pk, status__in=JOB_ACTIVE).update(
            provider_status="waiting for a free slot"
        )
        raise Deferred(monotonic() + 5, "every concurrency slot of the credential is busy")
    if job.status != JobStatus.RUNNING:
        job_transition(
            job.pk, JobStatus.RUNNING, provider_status="", message=f"Running on {provider.label}."
        )
    pending: set[Future[_UnitResult]] = set()
    last_flush = monotonic()
    units = iter(todo)

    def dispatch(pool: ThreadPoolExecutor) -> None:
        while len(pending) < workers and not run.stop.is_set() and run.deferred is None:
            if monotonic() >= deadline:
                return
            run.deferred = run.blocked()
            if run.deferred is not None:
                return
            unit = next(units, None)
            if unit is None:
                return
            pending.add(pool.submit(run.call, unit))

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"job{job.pk}") as pool:
        dispatch(pool)
        while pending:
            finished, still = wait(pending, timeout=FLUSH_INTERVAL, return_when=FIRST_COMPLETED)
            pending.clear()
            pending.update(still)
            for future in finished:
                run.record(future.result())
            run.record_health(successes_too=False)
            dispatch(pool)
            if monotonic() - last_flush >= FLUSH_INTERVAL or not pending:
                last_flush = monotonic()
                if not run.flush():
                    run.stop.set()
    still_running = run.flush()
    if not still_running:
        return "stopped"  # cancelled, or failed by a deadline, while we worked
    if run.fatal is not None:
        job_fail(job.pk, redact(run.fatal.message), retryable=False)
        return "failed"
    if run.deferred is not None:
        raise run.deferred
    if run.todo():
        raise Deferred(monotonic(), "time budget of this task used up")
    return _finish(job.pk, run.outputs, run.errors, run.spec.output_schema)


def _note_runs(job: Job, provider: Provider, count: int) -> None:
    if provider.has_instances and count:
        from .instances import note_runs

        note_runs(job, count)


def _finish(job_id: int, outputs: list[Any], errors: dict[str, str], schema: Any = None) -> str:
    outputs = structured.parse_outputs(schema, outputs) or outputs
    total = len(outputs)
    if errors:
        first = next(iter(errors.values()))
        message = (
            first
            if total == 1
            else f"{len(errors)} of {total} prompts failed; first error: {first}"
        )
        job_fail(job_id, message, retryable=True)
        return "failed"
    job_transition(
        job_id,
        JobStatus.COMPLETED,
        progress_done=total,
        outputs=outputs,
        message=f"Completed: {total} output(s).",
    )
    return "completed"


def _prompt_label(indexes: list[int]) -> str:
    if len(indexes) == 1:
        return f"prompt {indexes[0] + 1}"
    return f"prompts {indexes[0] + 1}–{indexes[-1] + 1}"


# --- async providers: submit --------------------------------------------------------------


def submit_async_job(job: Job, provider: Provider, deadline: float, owner: str = "") -> str:
    spec = job.job_spec
    provider.validate(spec)
    if not job.units.exists():
        JobUnit.objects.bulk_create(
            [
                JobUnit(job=job, index=i, prompt_indexes=unit)
                for i, unit in enumerate(provider.units(spec))
            ],
            ignore_conflicts=True,
        )
    for unit in job.units.filter(state=JobUnit.State.PENDING).order_by("index"):
        if (
            not renew_job(job.pk, owner)
            or not Job.objects.filter(pk=job.pk, status__in=JOB_ACTIVE).exists()
        ):
            return "stopped"
        _check_limits(job.credential, provider)
        outcome = _submit_unit(job, unit, provider, spec, deadline)
        if outcome != "submitted":
            return outcome
    job_transition(job.pk, JobStatus.QUEUED, provider_status="Submitted")
    _nudge_poller(job.credential_id)
    return "submitted"


def _check_limits(credential: Credential | None, provider: Provider) -> None:
    if credential is None:
        return
    seconds = limits.circuit_wait(credential)
    if seconds:
        raise Deferred(monotonic() + seconds, f"{provider.label} keeps failing (circuit open)")
    seconds = limits.rate_acquire(credential)
    if seconds:
        raise Deferred(
            monotonic() + seconds, "the credential's requests-per-minute limit is reached"
        )


def _submit_unit(job: Job, unit: JobUnit, provider: Provider, spec: Any, deadline: float) -> str:
    attempt = 1
    while True:
        # Record the step before the non-idempotent POST: a crash from here on
        # leaves the unit 'submitting', which is reconciled, never resubmitted.
        if not JobUnit.objects.filter(pk=unit.pk, state=JobUnit.State.PENDING).update(
            state=JobUnit.State.SUBMITTING
        ):
            return "skipped"
        try:
            remote_id = provider.submit(spec, unit.prompt_indexes)
        except ProviderError as exc:
            limits.circuit_record(job.credential_id, failures=[exc])
            if not (exc.created_nothing and exc.retryable) or attempt >= MAX_CALL_ATTEMPTS:
                return _submit_failed(job, unit, exc)
            # Surely nothing was created (connection refused, 429): safe to send again.
            JobUnit.objects.filter(pk=unit.pk).update(state=JobUnit.State.PENDING)
            delay = backoff(attempt, exc.retry_after)
            message = redact(exc.message)
            if monotonic() + delay > deadline:
                raise Deferred(monotonic() + delay, f"submit not accepted yet: {message}") from None
            event_add(
                job.pk,
                f"Retry {attempt}/{MAX_CALL_ATTEMPTS - 1} of the submission in {delay:.1f} s after: {message}",
                kind=JobEvent.Kind.RETRY,
            )
            sleep(delay)
            attempt += 1
            continue
        now = timezone.now()
        JobUnit.objects.filter(pk=unit.pk).update(
            state=JobUnit.State.SUBMITTED, remote_id=remote_id, submitted_at=now, next_poll_at=now
        )
        event_add(
            job.pk, f"Submitted to {provider.label} as remote job {remote_id}.", unit=unit.index
        )
        return "submitted"


def _submit_failed(job: Job, unit: JobUnit, exc: ProviderError) -> str:
    message = redact(exc.message)
    if exc.created_nothing:
        JobUnit.objects.filter(pk=unit.pk).update(state=JobUnit.State.FAILED, error=message)
        job_fail(job.pk, message, retryable=exc.retryable)
        return "failed"
    # A timeout or 5xx after the POST left: the remote job may exist.
    JobUnit.objects.filter(pk=unit.pk).update(state=JobUnit.State.UNKNOWN, error=message)
    job_fail(
        job.pk,
        f"Outcome unknown, not resubmitted: the submission may or may not have reached "
        f"{job.get_provider_display()} ({message}). Retry to submit again.",
        retryable=True,
    )
    return "failed"


def _nudge_poller(credential_id: int | None) -> None:
    if credential_id is None:
        return
    from .tasks import enqueue

    enqueue("dashboard.tasks.poll_credential", credential_id)


# --- async providers: poll ----------------------------------------------------------------


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
    deadline = monotonic() + (budget if budget is not None else settings.TASK_BUDGET)
    rounds = 0
    more = False
    try:
        credential = Credential.objects.get(pk=credential_id)
        provider = build_provider(credential)
        with provider:
            while monotonic() < deadline:
                circuit = limits.circuit_wait(credential)
                units = due_units(credential_id, timezone.now()) if not circuit else []
                if units:
                    poll_round(provider, units, credential)
                    rounds += 1
                wait_for = _seconds_to_next_poll(credential_id)
                if wait_for is not None and circuit:
                    wait_for = max(wait_for, circuit)
                if wait_for is None:
                    break
                if monotonic() + wait_for >= deadline:
                    more = True
                    break
                sleep(max(0.05, wait_for))
                lease_credential(credential_id, owner)
    except ProviderError as exc:
        _fail_credential_jobs(credential_id, redact(exc.message))
    finally:
        release_credential(credential_id, owner)
    if more:
        _nudge_poller(credential_id)
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
    return max(0.0, (unit - timezone.now()).total_seconds())


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
    now = timezone.now()
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
    return f" ({_prompt_label(unit.prompt_indexes)})"


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
    now = timezone.now()
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


# --- the sweep: find due or orphaned work ----------------------------------------------------


def sweep() -> dict[str, int]:
    """Run by the scheduler every minute: what is due or orphaned gets a nudge."""
    from .tasks import enqueue

    now = timezone.now()
    counts = {"deadline": 0, "jobs": 0, "pollers": 0, "unknown": 0}
    for job_id in Job.objects.filter(status__in=JOB_ACTIVE, deadline_at__lt=now).values_list(
        "pk", flat=True
    ):
        counts["deadline"] += job_fail(
            job_id, "The job passed its deadline before finishing.", retryable=True
        )
    free = Q(lease_owner="") | Q(lease_expires_at__lt=now)
    # Mid-submit at a crash: the POST may have created a remote job.
    for unit in (
        JobUnit.objects.filter(state=JobUnit.State.SUBMITTING, job__status__in=JOB_ACTIVE)
        .filter(Q(job__lease_owner="") | Q(job__lease_expires_at__lt=now))
        .select_related("job")
    ):
        if JobUnit.objects.filter(pk=unit.pk, state=JobUnit.State.SUBMITTING).update(
            state=JobUnit.State.UNKNOWN
        ):
            counts["unknown"] += 1
            job_fail(
                unit.job_id,
                "Outcome unknown, not resubmitted: a worker stopped while submitting, so the "
                "provider may or may not have the job. Retry to submit again.",
                retryable=True,
            )
    due = (
        Job.objects.filter(status__in=JOB_ACTIVE)
        .filter(free)
        .filter(Q(next_check_at__lte=now) | Q(next_check_at__isnull=True))
    )
    # Sync jobs (no units) and async jobs with a unit still to submit; the rest
    # are past submit and belong to the poller.
    due = due.filter(Q(units__isnull=True) | Q(units__state=JobUnit.State.PENDING))
    for job_id in due.values_list("pk", flat=True).distinct()[:500]:
        enqueue("dashboard.tasks.advance_job", job_id)
        counts["jobs"] += 1
    credentials = (
        JobUnit.objects.filter(state=JobUnit.State.SUBMITTED, job__status__in=JOB_ACTIVE)
        .values_list("job__credential_id", flat=True)
        .distinct()
    )
    for credential_id in (
        Credential.objects.filter(pk__in=credentials)
        .filter(Q(poll_lease_owner="") | Q(poll_lease_expires_at__lt=now))
        .values_list("pk", flat=True)
    ):
        enqueue("dashboard.tasks.poll_credential", credential_id)
        counts["pollers"] += 1
    return counts
