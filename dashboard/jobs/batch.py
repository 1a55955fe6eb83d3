"""Batch mode: a job's items sent to the provider's own batch API.

A batch job's items are cut, in index order, into chunks (``BatchChunk``: a
contiguous range of item indexes, at most the adapter's ``batch_limits()`` and
the credential's or the job's ``batch_max_requests``), and each chunk is one
remote batch. The worker's step for a batch job (:func:`advance_batch_job`)
cuts the chunks and creates them; after that no worker waits on the job: each
live chunk is polled by a task of its own (:func:`batch_poll`), due every
``settings.BATCH_POLL_SECONDS`` and nudged by the sweep should a nudge be
lost. When a chunk's batch has ended its results are read, matched to the
items by ``custom_id`` (never by line order), and written in batches through
the items' writer; once every chunk has ended the job ends through
``jobs_end``.

Creating a batch is not idempotent: a chunk moves pending -> submitting
(conditionally) before the create and records the remote id at once after
it. A chunk found submitting with its lease run out (a worker died mid-create)
is looked up by the metadata sent with it; where the API cannot look it up
(Anthropic) its outcome is unknown: its rows fail saying so, and the page may
resubmit it (:func:`chunk_resubmit`), never the worker on its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Q

from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.core.audit import audit, via_details
from dashboard.core.connect import build_provider
from dashboard.core.logs import redact
from dashboard.models import BatchChunk, Item, Job, JobEvent
from dashboard.status import (
    ITEM_ACTIVE,
    ITEM_ENDED,
    JOB_ACTIVE,
    ItemStatus,
    JobStatus,
    check_item_move,
    item_sources_for,
)
from providers import ErrorKind, JobSpec, Provider, ProviderError
from providers.batch import (
    BatchLookupUnsupported,
    BatchPhase,
    BatchResult,
    BatchState,
    ResultKind,
    custom_id,
    supports_batch,
)

from .items import Changes, item_complete, item_fail, items_pending, items_write
from .leases import lease_seconds, renew_job, worker_id
from .result_order import ResultSpool
from .retry import Deferred, backoff
from .services import event_add, job_fail, job_redo, job_transition, jobs_end
from .spec import mode_problem

logger = logging.getLogger(__name__)

State = BatchChunk.State

#: Consecutive failed status checks of one batch before it is given up.
MAX_POLL_FAILURES = 8
#: Failed creates (refused for a while: 429, 5xx) of one chunk before it is given up.
MAX_CREATE_FAILURES = 8
#: Items read and written per transaction when results come in.
WRITE_EVERY = 1000

EXPIRED = "expired: the provider's 24 h window closed before this row ran"
NO_RESULT = "no result for this row"
UNKNOWN = "outcome unknown: the batch may have been created; resubmit it from the job page"
#: The states of a chunk that may still change (the job waits for them).
OPEN = (State.PENDING, State.SUBMITTING, State.LIVE)


def metadata(chunk: BatchChunk) -> dict[str, str]:
    """What goes with the batch, so a create whose answer was lost is found."""
    return {"dashboard_job": str(chunk.job_id), "dashboard_chunk": str(chunk.pk)}


def job_spec(job: Job) -> JobSpec:
    """The job's spec without its prompts (the items carry them)."""
    return JobSpec.from_dict({**job.spec, "prompts": []})


# --- the worker's step: cut, create, reconcile -------------------------------------------------


def advance_batch_job(job: Job, provider: Provider, owner: str) -> str:
    """The worker's step for a batch job (it holds the job's lease): cut the
    chunks once, look up the ones a dead worker left mid-create, create the
    pending ones. A server without the batch API fails the job here, with the
    adapter's words (the ProviderError goes up to the worker)."""
    if not supports_batch(provider):
        raise ProviderError(
            f"{provider.label} has no batch API; run the job online.", kind=ErrorKind.INVALID_SPEC
        )
    spec = job_spec(job)
    if not BatchChunk.objects.filter(job_id=job.pk).exists():
        chunks_cut(job, provider, spec)
    now = clock.now()
    stale = BatchChunk.objects.filter(job_id=job.pk, state=State.SUBMITTING).filter(
        Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True)
    )
    for chunk in stale.order_by("number"):
        chunk_reconcile(job, provider, chunk, owner)
    tried: set[int] = set()
    # Each pending chunk once per step; halves of a chunk split meanwhile (413) too.
    while chunk := (
        BatchChunk.objects.filter(job_id=job.pk, state=State.PENDING)
        .exclude(pk__in=tried)
        .order_by("number")
        .first()
    ):
        tried.add(chunk.pk)
        if not renew_job(job.pk, owner):
            return "stopped"
        chunk_create(job, provider, spec, chunk, owner)
    job_end_if_done(job.pk)
    return "submitted"


def chunk_limits(job: Job, provider: Provider) -> tuple[int, int]:
    """(requests, bytes) one chunk may hold: the adapter's limits, and the
    credential's or the job's ``batch_max_requests`` when set."""
    limits = provider.batch_limits()  # type: ignore[attr-defined]
    most = limits.max_requests
    credential_options = job.credential.options if job.credential else {}
    for options in (credential_options or {}, job.spec.get("options") or {}):
        asked = options.get("batch_max_requests")
        if isinstance(asked, int) and not isinstance(asked, bool) and asked > 0:
            most = min(most, asked)
    return most, limits.max_bytes


def chunks_cut(job: Job, provider: Provider, spec: JobSpec) -> list[BatchChunk]:
    """The job's chunks: its pending items streamed in index order, their lines
    measured and cut by the limits (a line is not kept: it is built again
    when its chunk is created)."""
    most, max_bytes = chunk_limits(job, provider)
    chunks: list[BatchChunk] = []
    start = end = count = size = 0

    def close() -> None:
        chunks.append(
            BatchChunk(
                job=job, number=len(chunks), start_index=start, end_index=end, requests=count
            )
        )

    for item in items_pending(job.pk):
        line = len(_line(provider, job, item, spec)) + 1
        if count and (count >= most or size + line > max_bytes):
            close()
            count = size = 0
        if not count:
            start = item.index
        end, count, size = item.index + 1, count + 1, size + line
    if count:
        close()
    BatchChunk.objects.bulk_create(chunks)
    if len(chunks) > 1:
        event_add(job.pk, f"Cut into {len(chunks)} batches of at most {most:,} request(s).")
    return chunks


def _line(provider: Provider, job: Job, item: Item, spec: JobSpec) -> bytes:
    return provider.batch_line(custom_id(job.pk, item.index), item.input, spec)  # type: ignore[attr-defined]


def _chunk_items(chunk: BatchChunk) -> Q:
    return Q(job_id=chunk.job_id, index__gte=chunk.start_index, index__lt=chunk.end_index)


def chunk_lines(job: Job, provider: Provider, spec: JobSpec, chunk: BatchChunk) -> ChunkLines:
    return ChunkLines(job, provider, spec, chunk)


class ChunkLines:
    """A chunk's request lines, built from its items (WRITE_EVERY at a time)
    each time they are read: a 50,000-request chunk is never held whole; the
    adapter streams them to its request body."""

    def __init__(self, job: Job, provider: Provider, spec: JobSpec, chunk: BatchChunk) -> None:
        self.job, self.provider, self.spec, self.chunk = job, provider, spec, chunk

    def __iter__(self) -> Iterator[bytes]:
        rows = (
            Item.objects.filter(_chunk_items(self.chunk), status__in=list(ITEM_ACTIVE))
            .order_by("index")
            .only("index", "input")
        )
        for item in rows.iterator(chunk_size=WRITE_EVERY):
            yield _line(self.provider, self.job, item, self.spec)


def chunk_create(
    job: Job, provider: Provider, spec: JobSpec, chunk: BatchChunk, owner: str
) -> bool:
    """Create one pending chunk's batch: recorded ``submitting`` first (a
    conditional move: a chunk another worker took, or of a job being
    cancelled, is left alone), the input file uploaded once (its id kept at
    once), then the create, whose remote id is recorded at once."""
    now = clock.now()
    claimed = BatchChunk.objects.filter(
        pk=chunk.pk,
        state=State.PENDING,
        job__status__in=list(JOB_ACTIVE),
        job__cancel_requested_at__isnull=True,
    ).update(
        state=State.SUBMITTING,
        lease_owner=owner,
        lease_expires_at=now + timedelta(seconds=lease_seconds()),
    )
    if not claimed:
        return False
    chunk.refresh_from_db()
    lines = chunk_lines(job, provider, spec, chunk)
    creating = False
    try:
        if not chunk.input_file_id:
            file_id = provider.batch_upload(lines)  # type: ignore[attr-defined]
            if file_id:
                BatchChunk.objects.filter(pk=chunk.pk).update(input_file_id=file_id)
                chunk.input_file_id = file_id
        creating = True
        state = provider.batch_create(lines, chunk.input_file_id or None, metadata(chunk))  # type: ignore[attr-defined]
    except ProviderError as exc:
        _create_failed(job, provider, chunk, exc, owner, creating=creating)
        return False
    chunk_record_live(job, provider, chunk, state)
    return True


def _create_failed(
    job: Job,
    provider: Provider,
    chunk: BatchChunk,
    exc: ProviderError,
    owner: str,
    *,
    creating: bool,
) -> None:
    message = redact(exc.message)
    mine = BatchChunk.objects.filter(pk=chunk.pk, state=State.SUBMITTING, lease_owner=owner)
    if exc.status_code == 413:
        if chunk.items > 1:
            chunk_split(job, chunk, message, owner)
            return
        message = f"This row alone is too large for a batch: {message}"
        exc = ProviderError(message, kind=ErrorKind.INVALID_SPEC, status_code=413)
    if exc.kind in (ErrorKind.NOT_FOUND, ErrorKind.AUTH):
        # No batch API on this server, or a credential it refuses: the job fails.
        mine.update(state=State.FAILED, error=message, lease_owner="", lease_expires_at=None)
        raise exc
    if creating and exc.kind == ErrorKind.TIMEOUT:
        # The create may have arrived: looked up by its metadata at the next step.
        mine.update(lease_expires_at=clock.now() - timedelta(seconds=1))
        raise Deferred(clock.monotonic() + backoff(1, exc.retry_after), message)
    failures = chunk.poll_failures + 1
    if exc.retryable and failures < MAX_CREATE_FAILURES:
        mine.update(
            state=State.PENDING, lease_owner="", lease_expires_at=None, poll_failures=failures
        )
        delay = backoff(failures, exc.retry_after)
        event_add(
            job.pk,
            f"Creating batch {chunk.number + 1} failed, again in {delay:.0f} s: {message}",
            kind=JobEvent.Kind.RETRY,
        )
        raise Deferred(clock.monotonic() + delay, message)
    mine.update(
        state=State.FAILED,
        error=message,
        lease_owner="",
        lease_expires_at=None,
        ended_at=clock.now(),
    )
    event_add(
        job.pk,
        f"Batch {chunk.number + 1} could not be created: {message}",
        kind=JobEvent.Kind.ERROR,
    )
    rows_fail(job, chunk, message)


def chunk_split(job: Job, chunk: BatchChunk, message: str, owner: str) -> list[BatchChunk]:
    """A create refused as too large (HTTP 413): the chunk is ``split`` and two
    pending chunks, each half of its rows, take its place (created next, and
    split again while refused, down to one row). One transaction: a worker
    that dies before it leaves the chunk ``submitting``, looked up as after
    any crash mid-create; after it, the halves are there to create. Halves
    of a job whose cancel was asked meanwhile are never created."""
    middle = (chunk.start_index + chunk.end_index) // 2
    now = clock.now()
    with transaction.atomic():
        cancelled = (
            Job.objects.select_for_update()
            .filter(pk=job.pk)
            .values_list("cancel_requested_at", flat=True)
            .first()
        )
        top = BatchChunk.objects.filter(job_id=job.pk).aggregate(top=Max("number"))["top"]
        halves = [
            BatchChunk(
                job=job,
                number=top + n,
                start_index=start,
                end_index=end,
                requests=Item.objects.filter(
                    job_id=job.pk, index__gte=start, index__lt=end, status__in=list(ITEM_ACTIVE)
                ).count(),
            )
            for n, (start, end) in enumerate(
                ((chunk.start_index, middle), (middle, chunk.end_index)), 1
            )
        ]
        said = f"Too large for one batch ({message}); split into batches {top + 2} and {top + 3}."
        moved = BatchChunk.objects.filter(
            pk=chunk.pk, state=State.SUBMITTING, lease_owner=owner
        ).update(state=State.SPLIT, error=said, lease_owner="", lease_expires_at=None, ended_at=now)
        if not moved:
            return []
        if cancelled is not None:
            for half in halves:
                half.state, half.error, half.ended_at = (
                    State.FAILED,
                    "Cancelled before it was created.",
                    now,
                )
        BatchChunk.objects.bulk_create(halves)
        event_add(job.pk, f"Batch {chunk.number + 1}: {said}", kind=JobEvent.Kind.RETRY)
    if cancelled is not None:
        job_end_if_done(job.pk)
    return halves


def chunk_record_live(job: Job, provider: Provider, chunk: BatchChunk, state: BatchState) -> bool:
    """The batch exists at the provider: its id, the chunk live, its items
    running, the job running with the provider's word. A cancel asked
    meanwhile is passed on at once."""
    now = clock.now()
    next_poll = now + timedelta(seconds=settings.BATCH_POLL_SECONDS)
    with transaction.atomic():
        moved = BatchChunk.objects.filter(pk=chunk.pk, state=State.SUBMITTING).update(
            state=State.LIVE,
            remote_id=state.remote_id,
            submitted_at=now,
            next_poll_at=next_poll,
            poll_failures=0,
            lease_owner="",
            lease_expires_at=None,
            **_state_fields(state),
        )
        if not moved:
            return False
        active = Item.objects.filter(
            _chunk_items(chunk), status__in=item_sources_for(ItemStatus.RUNNING)
        )
        started = active.update(
            status=ItemStatus.RUNNING, attempts=F("attempts") + 1, updated_at=now
        )
        if started:
            Job.objects.filter(pk=job.pk, status__in=list(JOB_ACTIVE)).update(
                items_running=F("items_running") + started
            )
        job_transition(
            job.pk,
            JobStatus.RUNNING,
            provider_status=state.provider_status[:100],
            message=(
                f"Batch {chunk.number + 1} created at {provider.label}: {state.remote_id} "
                f"({chunk.requests} request(s))."
            ),
        )
    tasks_queue.nudge_batch_poll_at(chunk.pk, next_poll)
    chunk.refresh_from_db()
    if chunk.cancel_requested:
        chunk_cancel(job, provider, chunk)
    return True


def chunk_reconcile(job: Job, provider: Provider, chunk: BatchChunk, owner: str) -> str:
    """A chunk left ``submitting`` by a worker that stopped mid-create: the
    batch is looked up by its metadata. Found: recorded live. Not there: the
    create never happened, the chunk is pending again (and created once).
    Cannot be looked up: its outcome is unknown, its rows fail saying so."""
    now = clock.now()
    claimed = (
        BatchChunk.objects.filter(pk=chunk.pk, state=State.SUBMITTING)
        .filter(Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True))
        .update(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds()))
    )
    if not claimed:
        return "skipped"
    try:
        found = provider.batch_find(metadata(chunk))  # type: ignore[attr-defined]
    except BatchLookupUnsupported:
        chunk_unknown(job, chunk)
        return "unknown"
    except ProviderError as exc:
        BatchChunk.objects.filter(pk=chunk.pk, lease_owner=owner).update(
            lease_expires_at=now - timedelta(seconds=1)
        )
        if exc.kind in (ErrorKind.NOT_FOUND, ErrorKind.AUTH):
            raise
        raise Deferred(
            clock.monotonic() + backoff(1, exc.retry_after), redact(exc.message)
        ) from None
    if found is None:
        BatchChunk.objects.filter(pk=chunk.pk, state=State.SUBMITTING, lease_owner=owner).update(
            state=State.PENDING, lease_owner="", lease_expires_at=None
        )
        event_add(
            job.pk,
            f"Batch {chunk.number + 1}: a worker stopped before creating it (no such batch at "
            f"{provider.label}); creating it now.",
        )
        return "pending"
    event_add(
        job.pk,
        f"Batch {chunk.number + 1}: a worker stopped mid-create; found it at "
        f"{provider.label} ({found.remote_id}), not created again.",
    )
    chunk_record_live(job, provider, chunk, found)
    return "found"


def chunk_unknown(job: Job, chunk: BatchChunk) -> None:
    moved = BatchChunk.objects.filter(pk=chunk.pk, state=State.SUBMITTING).update(
        state=State.UNKNOWN,
        error=UNKNOWN,
        lease_owner="",
        lease_expires_at=None,
        ended_at=clock.now(),
    )
    if not moved:
        return
    event_add(job.pk, f"Batch {chunk.number + 1}: {UNKNOWN}.", kind=JobEvent.Kind.ERROR)
    rows_fail(job, chunk, UNKNOWN)
    job_end_if_done(job.pk)


def chunk_resubmit(chunk: BatchChunk, user: Any = None, *, via: str = "") -> Job:
    """Send the rows of a chunk whose outcome is unknown (or that failed) again,
    as a new batch job linked to the first (``retry_of``), over the rows of
    the chunk that did not complete. Asked by a person (the job page), never
    by the worker: the first batch may exist after all. ValueError when the
    chunk is not one to resubmit."""
    job = chunk.job
    if chunk.state not in (State.UNKNOWN, State.FAILED):
        raise ValueError("Only a batch whose outcome is unknown, or that failed, is resubmitted.")
    if job.credential is None:
        raise ValueError("The credential of this job was deleted; clone it to pick another.")
    problem = mode_problem(job.credential, Job.Mode.BATCH)
    if problem:
        raise ValueError(problem)
    rows = list(
        Item.objects.filter(_chunk_items(chunk))
        .exclude(status=ItemStatus.COMPLETED)
        .order_by("index")
        .values("index", "source_index", "input", "input_fields")
    )
    if not rows:
        raise ValueError("Every row of this batch completed.")
    with transaction.atomic():
        new = job_redo(job, rows, user=user, mode=Job.Mode.BATCH)
        BatchChunk.objects.filter(pk=chunk.pk).update(
            error=f"{chunk.error} Resubmitted as job {new.pk}.".strip()
        )
        event_add(
            job.pk, f"Batch {chunk.number + 1} resubmitted as job {new.pk}: {len(rows)} row(s)"
        )
        audit(
            user,
            job.team,
            "job.retried",
            job,
            new_job=new.pk,
            batch=chunk.number + 1,
            **via_details(via),
        )
    return new


# --- polling ----------------------------------------------------------------------------------


def batch_poll(chunk_id: int) -> str:
    """One status check of a live chunk whose check is due (a task; holds the
    chunk's lease, never the job's, and no worker between checks). On an
    ended batch its results are read; the job ends when its last chunk has."""
    owner = worker_id()
    now = clock.now()
    claimed = (
        BatchChunk.objects.filter(pk=chunk_id, state=State.LIVE, job__status__in=list(JOB_ACTIVE))
        .filter(Q(next_poll_at__lte=now) | Q(next_poll_at__isnull=True))
        .filter(Q(lease_owner="") | Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True))
        .update(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds()))
    )
    if not claimed:
        return "skipped"
    chunk = BatchChunk.objects.select_related("job", "job__credential").get(pk=chunk_id)
    job = chunk.job
    try:
        if job.deadline_at and job.deadline_at <= now:
            job_fail(job.pk, "The job passed its deadline before finishing.", retryable=True)
            return "failed"
        if job.credential is None:
            job_fail(job.pk, "The job's credential was deleted.")
            return "failed"
        provider = build_provider(job.credential)
        with provider:
            return _poll(job, provider, chunk)
    except ProviderError as exc:
        job_fail(job.pk, redact(exc.message), retryable=exc.retryable)
        return "failed"
    finally:
        BatchChunk.objects.filter(pk=chunk_id, lease_owner=owner).update(
            lease_owner="", lease_expires_at=None
        )


def _poll(job: Job, provider: Provider, chunk: BatchChunk) -> str:
    try:
        state = provider.batch_get(chunk.remote_id)  # type: ignore[attr-defined]
    except ProviderError as exc:
        return _poll_failed(job, chunk, exc)
    now = clock.now()
    if state.provider_status != chunk.provider_status:
        event_add(
            job.pk,
            f"{provider.label} says: {state.provider_status} (batch {chunk.number + 1})",
        )
    Job.objects.filter(pk=job.pk, status__in=list(JOB_ACTIVE)).update(
        provider_status=state.provider_status[:100]
    )
    fields = {**_state_fields(state), "poll_failures": 0}
    if state.phase == BatchPhase.ENDED:
        BatchChunk.objects.filter(pk=chunk.pk).update(**fields)
        try:
            read = results_read(job, provider, chunk, state)
        except ProviderError as exc:
            # A download that failed: read again at the next check (the rows
            # already written stay so), or, gone for good, this batch's rows
            # fail; the other batches of the job go on.
            return _poll_failed(job, chunk, exc, reading=True)
        if not read:
            return "stopped"
        BatchChunk.objects.filter(pk=chunk.pk, state=State.LIVE).update(
            state=State.ENDED, ended_at=now, next_poll_at=None
        )
        event_add(job.pk, f"Batch {chunk.number + 1} {state.ended_as or 'ended'}: results read.")
        job_end_if_done(job.pk)
        return "ended"
    if state.phase == BatchPhase.FAILED:
        text = "; ".join(state.errors) or (
            f"{provider.label} refused the batch ({state.provider_status})."
        )
        text = redact(text)
        BatchChunk.objects.filter(pk=chunk.pk).update(
            **fields, state=State.FAILED, error=text, ended_at=now, next_poll_at=None
        )
        event_add(job.pk, f"Batch {chunk.number + 1} failed: {text}", kind=JobEvent.Kind.ERROR)
        rows_fail(job, chunk, text)
        job_end_if_done(job.pk)
        return "failed"
    next_poll = now + timedelta(seconds=settings.BATCH_POLL_SECONDS)
    BatchChunk.objects.filter(pk=chunk.pk).update(**fields, next_poll_at=next_poll)
    tasks_queue.nudge_batch_poll_at(chunk.pk, next_poll)
    return "polled"


def _poll_failed(job: Job, chunk: BatchChunk, exc: ProviderError, *, reading: bool = False) -> str:
    """A status check (or, ``reading``, the download of an ended batch's
    results) failed: checked again later with backoff, or, when asking again
    cannot help or has been tried enough, the chunk fails with its rows."""
    message = redact(exc.message)
    failures = chunk.poll_failures + 1
    now = clock.now()
    what = "reads of the results" if reading else "status checks"
    if exc.kind in (ErrorKind.AUTH, ErrorKind.NOT_FOUND) or failures >= MAX_POLL_FAILURES:
        if exc.kind == ErrorKind.NOT_FOUND:
            # Lost (deleted, another account's, past its retention): asking again cannot help.
            said = redact(exc.detail) if exc.detail else message
            error = (
                f"The results of batch {chunk.remote_id} are no longer available (404): {said}"
                if reading
                else f"The provider no longer knows batch {chunk.remote_id} (404): {said}"
            )
        elif failures < MAX_POLL_FAILURES:
            error = message
        else:
            error = f"Gave up after {failures} failed {what}: {message}"
        BatchChunk.objects.filter(pk=chunk.pk).update(
            state=State.FAILED,
            error=error,
            poll_failures=failures,
            ended_at=now,
            next_poll_at=None,
        )
        event_add(job.pk, f"Batch {chunk.number + 1}: {error}", kind=JobEvent.Kind.ERROR)
        rows_fail(job, chunk, error)
        job_end_if_done(job.pk)
        return "failed"
    delay = max(float(settings.BATCH_POLL_SECONDS), backoff(failures, exc.retry_after))
    next_poll = now + timedelta(seconds=delay)
    BatchChunk.objects.filter(pk=chunk.pk).update(poll_failures=failures, next_poll_at=next_poll)
    attempt = (
        f"Reading the results of batch {chunk.number + 1} (try {failures})"
        if reading
        else (f"Status check {failures} of batch {chunk.number + 1}")
    )
    event_add(
        job.pk,
        f"{attempt} failed, next in {delay:.0f} s: {message}",
        kind=JobEvent.Kind.RETRY,
    )
    tasks_queue.nudge_batch_poll_at(chunk.pk, next_poll)
    return "retry"


def _state_fields(state: BatchState) -> dict[str, Any]:
    counts = {
        name: value
        for name in ("total", "completed", "failed", "processing")
        if (value := getattr(state, name)) is not None
    }
    fields: dict[str, Any] = {
        "provider_status": state.provider_status[:40],
        "counts": counts,
        "output_file_id": state.output_file_id[:255],
        "error_file_id": state.error_file_id[:255],
        "results_url": state.results_url[:1000],
    }
    if state.input_file_id:
        fields["input_file_id"] = state.input_file_id[:255]
    return fields


# --- results ----------------------------------------------------------------------------------


def index_of(job: Job, chunk: BatchChunk, request_id: str) -> int | None:
    """The item index a result's ``custom_id`` names, when it is one of this
    chunk's requests (ids of another job, or out of the chunk, are refused)."""
    prefix = custom_id(job.pk, 0)[: -len("0")]
    rest = request_id[len(prefix) :] if request_id.startswith(prefix) else ""
    if not rest.isdigit() or custom_id(job.pk, int(rest)) != request_id:
        return None
    index = int(rest)
    return index if chunk.start_index <= index < chunk.end_index else None


def results_read(job: Job, provider: Provider, chunk: BatchChunk, state: BatchState) -> bool:
    """Every result line of an ended batch, spooled as it is read, then written
    in item order WRITE_EVERY items at a time (``result_order``: the lines
    come in any order); then the chunk's rows without a result fail. False
    when the job ended meanwhile (nothing more is written)."""
    schema = job.spec.get("output_schema")
    stray = 0
    unread = Unreadable()
    with ResultSpool(chunk.end_index - chunk.start_index) as spool:
        for result in provider.batch_results(state):  # type: ignore[attr-defined]
            index = index_of(job, chunk, result.custom_id)
            if index is None:
                if result.custom_id:
                    stray += 1
                else:
                    unread.add(result.message)
                continue
            spool.add(index - chunk.start_index, result)
        if not _write_in_order(job, chunk, spool, schema):
            return False
    if stray:
        logger.warning("Job %s batch %s: %s result(s) of other requests", job.pk, chunk.pk, stray)
        event_add(
            job.pk,
            f"Batch {chunk.number + 1}: {stray} result line(s) named no row of it; ignored.",
            kind=JobEvent.Kind.ERROR,
        )
    unread.report(job, chunk)
    return rows_fail(job, chunk, NO_RESULT)


class Unreadable:
    """Result lines that named no row (not JSON and no ``custom_id`` in sight,
    an object without one): counted, the first few reasons kept for the log."""

    KEEP = 3

    def __init__(self) -> None:
        self.count = 0
        self.reasons: list[str] = []

    def add(self, reason: str) -> None:
        self.count += 1
        if len(self.reasons) < self.KEEP and reason not in self.reasons:
            self.reasons.append(reason)

    def report(self, job: Job, chunk: BatchChunk) -> None:
        if not self.count:
            return
        why = " ".join(self.reasons)
        logger.warning(
            "Job %s batch %s: %s result line(s) could not be read: %s",
            job.pk,
            chunk.pk,
            self.count,
            why,
        )
        event_add(
            job.pk,
            f"Batch {chunk.number + 1}: {self.count} result line(s) could not be read and "
            f"named no row ({why}); rows left without a result fail with '{NO_RESULT}'.",
            kind=JobEvent.Kind.ERROR,
        )


def _write_in_order(job: Job, chunk: BatchChunk, spool: ResultSpool, schema: Any) -> bool:
    found: dict[int, BatchResult] = {}
    for place, result in spool:
        found[chunk.start_index + place] = result
        if len(found) >= WRITE_EVERY:
            if not _write_results(job, found, schema):
                return False
            found.clear()
    return not found or _write_results(job, found, schema)


def _write_results(job: Job, found: dict[int, BatchResult], schema: Any) -> bool:
    changes = Changes()
    low, high = min(found), max(found)
    # Results come in item order (ResultSpool): a range, not a thousand parameters.
    rows = Item.objects.filter(job_id=job.pk)
    if high - low < 2 * len(found):
        rows = rows.filter(index__gte=low, index__lte=high)
    else:
        rows = rows.filter(index__in=list(found))
    for item in rows:
        result = found.get(item.index)
        if result is None or item.status in ITEM_ENDED:
            continue
        changes.add(item, item.status)
        item.attempts = max(item.attempts, 1)
        if result.kind == ResultKind.SUCCEEDED and result.result is not None:
            item_complete(item, result.result, schema)
        elif result.kind == ResultKind.EXPIRED:
            item_fail(item, EXPIRED)
        elif result.kind == ResultKind.CANCELLED:
            check_item_move(item.status, ItemStatus.CANCELLED)
            item.status = ItemStatus.CANCELLED
            item.error = "cancelled: the batch was cancelled before this row ran"
        else:
            said = ": ".join(part for part in (result.code, result.message) if part)
            item_fail(item, said or "the provider reported an error for this row")
    return items_write(job.pk, changes) if changes else True


def _active_rows(job: Job, chunk: BatchChunk) -> Iterator[list[Item]]:
    while True:
        rows = list(
            Item.objects.filter(_chunk_items(chunk), status__in=list(ITEM_ACTIVE)).order_by(
                "index"
            )[:WRITE_EVERY]
        )
        if not rows:
            return
        yield rows


def rows_fail(job: Job, chunk: BatchChunk, error: str) -> bool:
    """The chunk's rows that have not ended fail with ``error``, WRITE_EVERY at
    a time. False when the job ended meanwhile."""
    for rows in _active_rows(job, chunk):
        changes = Changes()
        for item in rows:
            changes.add(item, item.status)
            item_fail(item, error)
        if not items_write(job.pk, changes):
            return False
    return True


def job_end_if_done(job_id: int) -> None:
    """Once no chunk may change any more, the job ends: cancelled when its
    cancel was asked, failed with the provider's words when every batch was
    refused, else by the rule (``jobs_end``)."""
    if BatchChunk.objects.filter(job_id=job_id, state__in=OPEN).exists():
        return
    job = Job.objects.filter(pk=job_id, status__in=list(JOB_ACTIVE)).first()
    if job is None:
        return
    if job.cancel_requested_at is not None:
        jobs_end([job_id], status=JobStatus.CANCELLED, message="Cancelled: " + _done(job_id))
        return
    chunks = list(
        BatchChunk.objects.filter(job_id=job_id)
        .exclude(state=State.SPLIT)
        .values_list("state", "error")
    )
    refused = [error for state, error in chunks if state == State.FAILED and error]
    if chunks and len(refused) == len(chunks) and not job.items_completed:
        error = "; ".join(dict.fromkeys(refused))
        jobs_end([job_id], status=JobStatus.FAILED, error=error, message=f"Failed: {error}")
        return
    if not jobs_end([job_id]):
        # Rows no batch covered (none should be): they fail, then the rule.
        jobs_end([job_id], status=JobStatus.FAILED, error=NO_RESULT, message=f"Failed: {NO_RESULT}")


def _done(job_id: int) -> str:
    job = Job.objects.get(pk=job_id)
    return (
        f"the batches have ended; {job.items_completed} of {job.progress_total} row(s) "
        "completed and keep their outputs."
    )


# --- cancel -----------------------------------------------------------------------------------


def batch_cancel(job_id: int) -> int:
    """Ask the provider to cancel every live chunk of a job whose cancel was
    asked (a task). Returns how many were asked. The chunks are polled on as
    before and their results read; the job ends cancelled after the last."""
    job = Job.objects.select_related("credential").filter(pk=job_id).first()
    if job is None or job.credential is None:
        return 0
    chunks = list(
        BatchChunk.objects.filter(job_id=job_id, state=State.LIVE, cancel_requested=True)
        .exclude(remote_id="")
        .order_by("number")
    )
    if not chunks:
        return 0
    asked = 0
    try:
        provider = build_provider(job.credential)
    except ProviderError as exc:
        event_add(job_id, f"Cancel not sent: {redact(exc.message)}", kind=JobEvent.Kind.ERROR)
        return 0
    with provider:
        for chunk in chunks:
            asked += chunk_cancel(job, provider, chunk)
    return asked


def chunk_cancel(job: Job, provider: Provider, chunk: BatchChunk) -> bool:
    try:
        state = provider.batch_cancel(chunk.remote_id)  # type: ignore[attr-defined]
    except ProviderError as exc:
        # A batch that ended already cannot be cancelled: its results are read as ever.
        event_add(
            job.pk,
            f"Cancel of batch {chunk.number + 1} not taken: {redact(exc.message)}",
            kind=JobEvent.Kind.ERROR,
        )
        return False
    BatchChunk.objects.filter(pk=chunk.pk, state=State.LIVE).update(
        provider_status=state.provider_status[:40]
    )
    event_add(
        job.pk, f"Asked {provider.label} to cancel batch {chunk.number + 1} ({chunk.remote_id})."
    )
    return True
