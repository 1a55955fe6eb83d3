"""The sync runner (Together, Lamini, Bytez runs, OpenAI-compatible): a job's
units on a thread pool as wide as the credential's free slots; pool threads
call the provider and the main thread alone writes what they return."""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from dashboard.core import clock, structured
from dashboard.core.logs import redact
from dashboard.instances.gate import note_runs
from dashboard.models import Job, JobEvent
from dashboard.status import JOB_ACTIVE, JobStatus
from providers import ErrorKind, Provider, ProviderError
from providers.base import shorten

from . import limits
from .leases import (
    lease_seconds,
    renew_job,
)
from .retry import MAX_CALL_ATTEMPTS, Deferred, backoff
from .services import job_fail, job_transition

logger = logging.getLogger(__name__)

#: Seconds between two writes of what the pool returned.
FLUSH_INTERVAL = 0.3


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
        self.last_heartbeat = clock.monotonic()
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
                if clock.monotonic() + delay > self.deadline:
                    self.deferred = Deferred(clock.monotonic() + delay, shorten(exc.message, 200))
                    return _UnitResult(indexes)
                label = prompt_label(indexes)
                self.events.put(
                    (
                        JobEvent.Kind.RETRY,
                        f"Retry {attempt}/{MAX_CALL_ATTEMPTS - 1} of {label} in {delay:.1f} s "
                        f"after: {redact(exc.message)}",
                        None,
                    )
                )
                clock.sleep(delay)
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
                (JobEvent.Kind.ERROR, f"{prompt_label(result.indexes)} failed: {message}", None)
            )
            if result.error.kind in (ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.INVALID_SPEC):
                self.fatal = result.error  # every other call would fail the same way
                self.stop.set()

    def flush(self) -> bool:
        """Write outputs and queued events; False when the job left 'running'."""
        self.flush_events()
        self.record_health()
        self.check_circuit = True  # another worker may have opened it meanwhile
        if clock.monotonic() - self.last_heartbeat > lease_seconds() / 3:
            self.last_heartbeat = clock.monotonic()
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
                clock.monotonic() + wait, f"{self.provider.label} keeps failing (circuit open)"
            )
        wait = limits.rate_acquire(credential)
        if wait:
            return Deferred(
                clock.monotonic() + wait, "the credential's requests-per-minute limit is reached"
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
        raise Deferred(
            clock.monotonic() + circuit, f"{provider.label} keeps failing (circuit open)"
        )
    workers = limits.slots_acquire(
        job.credential, owner, min(job.credential.max_concurrency, len(todo) or 1)
    )
    if not workers:
        Job.objects.filter(pk=job.pk, status__in=JOB_ACTIVE).update(
            provider_status="waiting for a free slot"
        )
        raise Deferred(clock.monotonic() + 5, "every concurrency slot of the credential is busy")
    if job.status != JobStatus.RUNNING:
        job_transition(
            job.pk, JobStatus.RUNNING, provider_status="", message=f"Running on {provider.label}."
        )
    pending: set[Future[_UnitResult]] = set()
    last_flush = clock.monotonic()
    units = iter(todo)

    def dispatch(pool: ThreadPoolExecutor) -> None:
        while len(pending) < workers and not run.stop.is_set() and run.deferred is None:
            if clock.monotonic() >= deadline:
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
            if clock.monotonic() - last_flush >= FLUSH_INTERVAL or not pending:
                last_flush = clock.monotonic()
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
        raise Deferred(clock.monotonic(), "time budget of this task used up")
    return _finish(job.pk, run.outputs, run.errors, run.spec.output_schema)


def _note_runs(job: Job, provider: Provider, count: int) -> None:
    if provider.has_instances and count:
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


def prompt_label(indexes: list[int]) -> str:
    if len(indexes) == 1:
        return f"prompt {indexes[0] + 1}"
    return f"prompts {indexes[0] + 1}–{indexes[-1] + 1}"
