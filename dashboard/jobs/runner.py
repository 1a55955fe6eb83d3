"""The sync runner (Together, Lamini, Bytez runs, OpenAI-compatible servers).

One slice of a job: its pending items, grouped into the provider's units, run
on a thread pool as wide as the credential's free slots. Pool threads only
call the provider and return what happened (an :class:`Outcome`); the main
thread alone decides (retry, pause, fail) and records, flushing every
``FLUSH_INTERVAL`` only the items that changed, with the job's counters, in one
transaction. Prompts are read from the database a chunk ahead of dispatch, so
a worker never holds a whole large job in memory.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import queue
import random
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import F

from dashboard.core import clock
from dashboard.core.connect import credential_redact
from dashboard.core.health import credential_record_call
from dashboard.core.logs import redact
from dashboard.instances.gate import note_runs
from dashboard.models import Credential, Item, Job, JobEvent, JobSlice
from dashboard.status import ItemStatus, JobStatus
from providers import ErrorKind, ItemResult, JobSpec, Provider, ProviderError
from providers.data import RateInfo

from . import cache, limits, slices
from .cost import DEFAULT_MAX_TOKENS
from .items import (
    Changes,
    estimate_tokens,
    item_complete,
    item_fail,
    items_pending,
    items_requeue_running,
    items_write,
)
from .leases import lease_seconds, renew_job
from .retry import MAX_CALL_ATTEMPTS, Deferred, backoff
from .services import job_fail, job_finish, job_transition
from .slices import SliceGaveUp

logger = logging.getLogger(__name__)

#: Seconds between two writes of what the pool returned.
FLUSH_INTERVAL = 0.3
#: Pending items read ahead of dispatch, per query.
LOOKAHEAD = 1000
#: Errors no retry can help: every other call would fail the same way.
FATAL_KINDS = frozenset({ErrorKind.AUTH, ErrorKind.NOT_FOUND, ErrorKind.INVALID_SPEC})
#: A credential-wide pause this short is waited out in the loop.
SHORT_PAUSE = 3.0
#: Calls given to the pool per thread: 1 running and 3 waiting, so the threads
#: keep busy while the worker's own thread writes a flush or waits for the GIL
#: (figure 9 of the benchmarks: 32 threads, 96 calls queued behind them).
QUEUED_PER_THREAD = 4
#: A pause learned from the headers' reset is stretched by up to this
#: fraction, so the calls it held do not all come back in the same instant.
RATE_JITTER = 0.1


@dataclass
class Call:
    """What a pool thread gets: the unit's items and a spec holding only their prompts."""

    items: list[Item]
    spec: JobSpec
    #: Tokens taken from the credential's tokens-per-minute budget for it.
    tokens: int = 0


@dataclass
class Outcome:
    """What a pool thread returns; it writes nothing shared."""

    call: Call
    results: list[ItemResult] | None = None
    error: ProviderError | None = None
    #: What the answer's rate-limit headers said.
    rate: RateInfo | None = None


class Hold:
    """The one thing pool threads share: until when (monotonic) the provider
    asked this credential to wait, as the latest answer said. A thread about to
    call waits it out, so a call queued behind the one that learned it does not
    go before the main thread has recorded the pause."""

    def __init__(self) -> None:
        self._until = 0.0
        self._lock = threading.Lock()

    def extend(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, clock.monotonic() + seconds)

    def wait(self) -> None:
        with self._lock:
            left = self._until - clock.monotonic()
        if left > 0:
            clock.sleep(min(left, SHORT_PAUSE))


def run_call(
    provider: Provider,
    call: Call,
    on_chunk: Callable[[int, str], None] | None,
    hold: Hold | None = None,
) -> Outcome:
    """On a pool thread: one provider call, no database."""
    take_rate = getattr(provider, "take_rate", lambda: None)
    if hold is not None:
        hold.wait()
    try:
        results = provider.run_items(call.spec, list(range(len(call.items))), on_chunk)
    except ProviderError as exc:
        # A refusal: the main thread pauses the credential and holds the calls
        # queued behind this one.
        take_rate()
        return Outcome(call, error=exc, rate=exc.rate)
    outcome = Outcome(call, results=results, rate=take_rate())
    wait = outcome.rate.wait() if outcome.rate is not None else 0.0
    if hold is not None and wait > 0:
        hold.extend(min(wait, limits.MAX_PAUSE_SECONDS))
    return outcome


@dataclass(order=True)
class _Retry:
    ready: float
    seq: int
    items: list[Item] = field(compare=False)


class SyncRun:
    """One task's run of a sync job, or of the slices it claimed of a big
    one (``slices``; then ``job_lease`` says whether it holds the job's own
    lease too): the main thread's state."""

    def __init__(
        self,
        job: Job,
        provider: Provider,
        deadline: float,
        owner: str = "",
        *,
        slices: list[JobSlice] | None = None,
        job_lease: bool = True,
    ) -> None:
        self.job = job
        self.provider = provider
        self.deadline = deadline
        self.owner = owner
        self.base = {k: v for k, v in job.spec.items() if k != "prompts"}
        self.schema = self.base.get("output_schema")
        self.stream = bool(self.base.get("stream"))
        self.slice_ids = [s.pk for s in slices] if slices is not None else None
        self.job_lease = job_lease
        self.pending: Iterator[Item] = (
            items_pending(job.pk, chunk=LOOKAHEAD)
            if slices is None
            else itertools.chain.from_iterable(
                items_pending(job.pk, chunk=LOOKAHEAD, start=s.start_index, stop=s.end_index)
                for s in slices
            )
        )
        self.units: deque[list[Item]] = deque()
        self.retries: list[_Retry] = []
        self.seq = itertools.count()
        self.changes = Changes()
        self.chunks: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        #: Calls arrive here as they end (a done-callback puts them): taking them
        #: costs the same however many are in flight, where
        #: ``concurrent.futures.wait`` installs a waiter on every one of them.
        self.finished: queue.SimpleQueue[Future[Outcome]] = queue.SimpleQueue()
        self.events: list[JobEvent] = []
        self.hold = Hold()
        self.failed_now: list[tuple[list[Item], str]] = []
        self.retried_now: list[tuple[list[Item], float, str]] = []
        self.waited_now: list[tuple[list[Item], float, str]] = []
        self.cached_now = 0
        #: Rate-limit refusals per unit (by its first item), for the backoff
        #: when the provider says not when to come back.
        self.refusals: dict[int, int] = {}
        #: Reported tokens minus estimated ones, for the tokens-per-minute budget.
        self.token_delta = 0
        #: The job's own deadline (monotonic): rows stop waiting on rate limits then.
        self.job_deadline: float | None = None
        if job.deadline_at is not None:
            left = (job.deadline_at - clock.now()).total_seconds()
            self.job_deadline = clock.monotonic() + left
        max_tokens = self.base.get("max_tokens")
        self.output_allowance = max_tokens if isinstance(max_tokens, int) else DEFAULT_MAX_TOKENS
        self.system_tokens = estimate_tokens(self.base.get("system_prompt") or "")
        self.successes = 0
        self.failures: list[ProviderError] = []
        self.fatal: ProviderError | None = None
        self.deferred: Deferred | None = None
        #: Until when (monotonic) the provider asked this credential to wait, and
        #: the database's moment of that pause once waited out.
        self.paused_until = 0.0
        #: When the rpm/tpm budget admits the next call (monotonic; 0: no wait).
        self.admit_at = 0.0
        self.pause_wall: datetime | None = None
        self.honoured_pause: datetime | None = None
        #: Time known to have passed because the loop slept until then (a test's
        #: clock may not move while it "sleeps").
        self.slept_until = 0.0
        self.check_limits = True
        self.stopping = False
        self.job_left = False
        #: The calls in flight as last written. Alone on a job, the run writes
        #: the job's count as it is; on slices, by how much its own moved.
        self.in_flight_written = -1 if slices is None else 0
        self.last_heartbeat = clock.monotonic()

    # -- what to run next -------------------------------------------------------------

    def spec_for(self, items: list[Item]) -> JobSpec:
        return JobSpec.from_dict({**self.base, "prompts": [item.input for item in items]})

    def refill(self) -> None:
        """Group the next chunk of pending items into the provider's units
        (after taking from the cache what it already has)."""
        while not self.units:
            chunk = list(itertools.islice(self.pending, LOOKAHEAD))
            if not chunk:
                return
            for item in chunk:
                if not item.request_hash:
                    item.request_hash = cache.request_hash(self.job, self.base, item.input)
            if self.job.cache:
                chunk = self.from_cache(chunk)
            if not chunk:
                continue
            for unit in self.provider.units(self.spec_for(chunk)):
                self.units.append([chunk[position] for position in unit])

    def from_cache(self, chunk: list[Item]) -> list[Item]:
        """Complete the items the team's cache answers (one query); the rest."""
        sources = cache.cache_sources(
            self.job.team_id, (item.request_hash for item in chunk), exclude_job=self.job.pk
        )
        rest = []
        for item in chunk:
            source = sources.get(item.request_hash)
            if source is None:
                rest.append(item)
                continue
            self.touch(item)
            cache.item_from_cache(item, source)
            self.cached_now += 1
        return rest

    def now(self) -> float:
        return max(clock.monotonic(), self.slept_until)

    def sleep_until(self, moment: float) -> None:
        now = self.now()
        if moment > now:
            clock.sleep(moment - now)
        self.slept_until = max(self.slept_until, moment)
        if moment >= self.paused_until:
            self.paused_until, self.honoured_pause = 0.0, self.pause_wall

    def next_unit(self, now: float) -> list[Item] | None:
        if self.retries and self.retries[0].ready <= now:
            return heapq.heappop(self.retries).items
        if not self.units:
            self.refill()
        return self.units.popleft() if self.units else None

    def has_work(self) -> bool:
        if self.units or self.retries:
            return True
        self.refill()
        return bool(self.units)

    # -- recording what came back -----------------------------------------------------

    def touch(self, item: Item) -> None:
        self.changes.add(item, item.status)

    def started(self, items: list[Item]) -> None:
        # Counted, not written: a call of a few milliseconds would cost a row
        # write for nothing. The job's running count says how many are in flight.
        for item in items:
            item.attempts += 1

    def unstarted(self, items: list[Item]) -> None:
        for item in items:
            item.attempts -= 1

    def record(self, outcome: Outcome) -> None:
        items = outcome.call.items
        if outcome.results is not None:
            self.successes += 1
            reported = None
            for item, result in zip(items, outcome.results, strict=False):
                self.touch(item)
                item_complete(item, result, self.schema)
                if result.tokens_in is not None or result.tokens_out is not None:
                    used = (result.tokens_in or 0) + (result.tokens_out or 0)
                    reported = used + (reported or 0)
            if reported is not None and outcome.call.tokens:
                self.token_delta += reported - outcome.call.tokens
            self.learn(outcome.rate)
            return
        exc = outcome.error
        assert exc is not None
        self.failures.append(exc)
        message = credential_redact(self.job.credential, exc.message)
        if exc.kind == ErrorKind.RATE_LIMIT:
            self.refused(items, exc, message)
            return
        if exc.kind in FATAL_KINDS:
            self.fatal = exc
        elif exc.retryable and items[0].attempts < MAX_CALL_ATTEMPTS:
            delay = backoff(items[0].attempts, exc.retry_after)
            now = self.now()
            if exc.retry_after is not None:
                # The provider said when to come back: for every call on this
                # credential, not just this one.
                self.pause_wall = limits.pause_credential(self.job.credential_id, delay)
                self.paused_until = max(self.paused_until, now + delay)
            # Not written until the row ends: its retry is in the timeline.
            heapq.heappush(self.retries, _Retry(now + delay, next(self.seq), items))
            self.retried_now.append((items, delay, message))
            return
        for item in items:
            self.touch(item)
            item_fail(item, message)
        self.failed_now.append((items, message))

    def refused(self, items: list[Item], exc: ProviderError, message: str) -> None:
        """A 429: a pause for the whole credential, not a failed attempt. The
        unit waits (Retry-After, else the reset its headers gave, else a
        backoff, with jitter) and goes again; it fails only when that wait
        would pass the job's deadline."""
        self.unstarted(items)
        refusals = self.refusals.get(items[0].pk, 0) + 1
        self.refusals[items[0].pk] = refusals
        delay = exc.retry_after
        if delay is None:
            # The reset its headers gave (jittered: the budget refills for every
            # waiting call at once), else a backoff (jittered already).
            learned = exc.rate.wait() if exc.rate is not None else 0.0
            delay = learned * (1 + random.uniform(0, RATE_JITTER)) or backoff(refusals)
        delay = min(delay, limits.MAX_PAUSE_SECONDS)
        now = self.now()
        if self.job_deadline is not None and now + delay >= self.job_deadline:
            reason = f"Still rate limited when the job's deadline passed: {message}"
            for item in items:
                self.touch(item)
                item_fail(item, reason)
            self.failed_now.append((items, reason))
            return
        self.pause(delay, f"{self.provider.label} answered 429 (rate limited)")
        heapq.heappush(self.retries, _Retry(now + delay, next(self.seq), items))
        self.waited_now.append((items, delay, message))

    def learn(self, rate: RateInfo | None) -> None:
        """The provider's headers say a budget is spent: hold every call on the
        credential until it resets, before the provider has to refuse one."""
        wait = rate.wait() if rate is not None else 0.0
        if wait > 0:
            self.pause(wait, f"{self.provider.label}'s rate-limit headers: budget spent")

    def pause(self, seconds: float, reason: str) -> None:
        self.pause_wall = limits.pause_credential(self.job.credential_id, seconds, reason=reason)
        self.paused_until = max(self.paused_until, self.now() + seconds)

    def collect_chunks(self) -> None:
        streamed: dict[int, list[str]] = {}
        while True:
            try:
                index, text = self.chunks.get_nowait()
            except queue.Empty:
                break
            streamed.setdefault(index, []).append(text)
        self.events += [
            JobEvent(job_id=self.job.pk, kind=JobEvent.Kind.STREAM, message="".join(parts), unit=i)
            for i, parts in streamed.items()
        ]

    def summarize(self) -> None:
        """One event per kind per flush, however many prompts it covers."""
        if self.failed_now:
            items = [item for unit, _ in self.failed_now for item in unit]
            first = self.failed_now[0][1]
            self.events.append(
                JobEvent(
                    job_id=self.job.pk,
                    kind=JobEvent.Kind.ERROR,
                    message=f"{prompt_label([i.index for i in items])} failed: {first}",
                )
            )
        if self.retried_now:
            items = [item for unit, _, _ in self.retried_now for item in unit]
            _, delay, first = self.retried_now[0]
            attempt = items[0].attempts
            self.events.append(
                JobEvent(
                    job_id=self.job.pk,
                    kind=JobEvent.Kind.RETRY,
                    message=f"Retry {attempt}/{MAX_CALL_ATTEMPTS - 1} of "
                    f"{prompt_label([i.index for i in items])} in {delay:.1f} s after: {first}",
                )
            )
        if self.waited_now:
            items = [item for unit, _, _ in self.waited_now for item in unit]
            _, delay, first = self.waited_now[0]
            self.events.append(
                JobEvent(
                    job_id=self.job.pk,
                    kind=JobEvent.Kind.RETRY,
                    message=f"{prompt_label([i.index for i in items]).capitalize()} "
                    f"wait {delay:.1f} s (not counted as an attempt) after: {first}",
                )
            )
        if self.cached_now:
            rows = "row" if self.cached_now == 1 else "rows"
            self.events.append(
                JobEvent(
                    job_id=self.job.pk,
                    kind=JobEvent.Kind.EVENT,
                    message=f"{self.cached_now:,} {rows} from the cache (no call).",
                )
            )
        self.failed_now, self.retried_now, self.waited_now = [], [], []
        self.cached_now = 0

    # -- writing -----------------------------------------------------------------------

    def flush(self, in_flight: int = 0) -> bool:
        """Write what changed (items, counters, events, health); False when the
        job left 'running' or the lease was lost."""
        self.collect_chunks()
        self.summarize()
        if self.events:
            JobEvent.objects.bulk_create(self.events)
            self.events = []
        self.record_health()
        self.check_limits = True  # another worker may have opened the circuit meanwhile
        if clock.monotonic() - self.last_heartbeat > lease_seconds() / 3:
            self.last_heartbeat = clock.monotonic()
            if self.job_lease and not renew_job(self.job.pk, self.owner):
                return False  # another worker owns the job now
            if self.slice_ids is not None and not slices.slices_hold(
                self.slice_ids, self.owner, self.in_flight_written
            ):
                return False  # another worker took the slice over
            limits.slots_renew(self.job.credential_id, self.owner)
        running: dict[str, object] = {}
        if in_flight != self.in_flight_written:
            if self.slice_ids is None:
                running = {"items_running": in_flight}
            else:
                running = {"items_running": F("items_running") + in_flight - self.in_flight_written}
        if not self.changes and not running:
            return Job.objects.filter(pk=self.job.pk, status=JobStatus.RUNNING).exists()
        guard = None
        if self.slice_ids is not None:
            ids = self.slice_ids
            guard = lambda: slices.slices_hold(ids, self.owner, in_flight)  # noqa: E731
        written = items_write(
            self.job.pk,
            self.changes,
            statuses=[JobStatus.RUNNING],
            job_fields=running,
            scorers=self.job.scorers,
            guard=guard,
        )
        self.in_flight_written = in_flight
        return written

    def record_health(self) -> None:
        """Feed the credential's circuit breaker (and a model instance's run
        count) with what happened since the last flush."""
        failures, self.failures = self.failures, []
        successes, self.successes = self.successes, 0
        delta, self.token_delta = self.token_delta, 0
        if delta:
            limits.tokens_adjust(self.job.credential, delta)
        if successes or failures:
            limits.circuit_record(self.job.credential_id, successes=successes, failures=failures)
            # The credential's health says what the latest call saw (a 401 at once).
            credential_record_call(self.job.credential_id, failures[-1] if failures else None)
        if self.provider.has_instances and successes:
            note_runs(self.job, successes)

    def blocked(self) -> Deferred | None:
        """A reason to stop dispatching: a pause asked by the provider, an open
        circuit, or the requests-per-minute budget spent."""
        credential = self.job.credential
        assert credential is not None
        if self.check_limits:
            self.check_limits = False
            until = limits.paused_until(credential)
            if until is not None and (self.honoured_pause is None or until > self.honoured_pause):
                self.pause_wall = until
                wait_for = (until - clock.now()).total_seconds()
                self.paused_until = max(self.paused_until, clock.monotonic() + wait_for)
            wait_for = limits.circuit_wait(credential)
            if wait_for:
                return Deferred(
                    clock.monotonic() + wait_for,
                    f"{self.provider.label} keeps failing (circuit open)",
                )
        if self.paused_until > self.now():
            return Deferred(self.paused_until, f"{self.provider.label} asked to wait (Retry-After)")
        return None

    def tokens_for(self, items: list[Item]) -> int:
        """A call's share of the tokens-per-minute budget: its prompts' estimated
        input tokens plus the output they may use."""
        return sum(
            estimate_tokens(item.input) + self.system_tokens + self.output_allowance
            for item in items
        )

    def admitted(self, call: Call) -> Deferred | None:
        """Ask the credential's rpm/tpm budgets for the call: None when it may go."""
        credential = self.job.credential
        assert credential is not None
        if not credential.requests_per_minute and not credential.tokens_per_minute:
            return None
        if credential.tokens_per_minute:
            call.tokens = self.tokens_for(call.items)
        wait_for = limits.rate_acquire(credential, tokens=call.tokens)
        if not wait_for:
            return None
        return Deferred(
            clock.monotonic() + wait_for,
            "the credential's requests- or tokens-per-minute limit is reached",
        )

    # -- the loop ----------------------------------------------------------------------

    def on_chunk_for(self, call: Call) -> Callable[[int, str], None] | None:
        if not self.stream:
            return None
        indexes = [item.index for item in call.items]
        return lambda position, text: self.chunks.put((indexes[position], text))

    def run(self, workers: int, pool: ThreadPoolExecutor | None = None) -> None:
        """Run on a pool of ``workers`` threads (``pool``, kept by the caller,
        else one of its own for this run)."""
        if pool is not None:
            self.loop(pool, workers)
        else:
            with ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix=f"job{self.job.pk}"
            ) as own:
                self.loop(own, workers)
        if not self.job_left and not self.flush():
            self.job_left = True

    def loop(self, pool: ThreadPoolExecutor, workers: int) -> None:
        in_flight: dict[Future[Outcome], Call] = {}
        last_flush = clock.monotonic()
        while True:
            if not self.stopping:
                self.dispatch(pool, in_flight, workers)
            if not in_flight:
                if self.stopping or not self.wait_for_retry():
                    break
                continue
            for future in self.ended(self.wait_for_next()):
                call = in_flight.pop(future)
                if future.cancelled():
                    self.unstarted(call.items)
                    self.units.appendleft(call.items)  # never ran: it goes again
                else:
                    self.record(future.result())
            if self.fatal is not None:
                self.stopping = True
            if self.stopping or self.paused_until > self.now():
                # Calls queued behind the running ones wait for the next slice
                # or the end of the pause; the running ones finish.
                for future in in_flight:
                    future.cancel()
            if clock.monotonic() - last_flush >= FLUSH_INTERVAL or not in_flight:
                last_flush = clock.monotonic()
                if not self.flush(min(workers, len(in_flight))):
                    self.job_left = self.stopping = True

    def wait_for_next(self) -> float:
        """How long the loop may wait for a call to end before it looks again:
        at most until the rpm/tpm budget admits the next call."""
        if not self.admit_at:
            return FLUSH_INTERVAL
        wait = self.admit_at - self.now()
        self.admit_at = 0.0
        return max(0.0, min(FLUSH_INTERVAL, wait))

    def ended(self, timeout: float) -> list[Future[Outcome]]:
        """The calls that ended: waits up to ``timeout`` for the first one, then
        takes every other that has ended too."""
        try:
            done = [self.finished.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                done.append(self.finished.get_nowait())
            except queue.Empty:
                return done

    def dispatch(
        self, pool: ThreadPoolExecutor, in_flight: dict[Future[Outcome], Call], workers: int
    ) -> None:
        """Start calls while the pool has room: as many as it has threads, and
        more queued behind them (``QUEUED_PER_THREAD``), so a thread that finishes a call
        starts the next one at once instead of waiting for this thread to hand
        it one. Sets ``stopping`` (and ``deferred``) when this slice must stop
        dispatching: budget spent, a long pause."""
        while len(in_flight) < workers * QUEUED_PER_THREAD and self.fatal is None:
            now = self.now()
            if now >= self.deadline:
                self.defer(Deferred(now, "time budget of this task used up"))
                return
            blocked = self.blocked()
            call = None
            if blocked is None:
                items = self.next_unit(now)
                if items is None:
                    return
                call = Call(items, self.spec_for(items))
                blocked = self.admitted(call)
                if blocked is not None:
                    self.units.appendleft(items)  # it goes first once the budget allows
            if blocked is not None:
                pause = blocked.when - now
                if pause > SHORT_PAUSE or now + pause >= self.deadline:
                    self.defer(blocked)
                elif not in_flight:
                    self.sleep_until(blocked.when)
                    continue
                # A short pause: the calls in flight keep the loop turning, and
                # it turns again when the budget allows the next call.
                self.admit_at = blocked.when
                return
            assert call is not None
            self.started(call.items)
            future = pool.submit(run_call, self.provider, call, self.on_chunk_for(call), self.hold)
            in_flight[future] = call
            future.add_done_callback(self.finished.put)

    def defer(self, deferred: Deferred) -> None:
        self.deferred = deferred
        self.stopping = True

    def wait_for_retry(self) -> bool:
        """Nothing in flight and nothing new to start: wait for the next retry
        if it is due soon. False when the slice is over (all done, or deferred)."""
        if not self.retries:
            return False
        ready = self.retries[0].ready
        if ready - self.now() > SHORT_PAUSE or ready >= self.deadline:
            self.defer(Deferred(ready, "waiting to retry"))
            return False
        if not self.flush():
            self.job_left = self.stopping = True
            return False
        self.sleep_until(ready)
        return True


def _ended(run: SyncRun) -> str | None:
    """What a run that stopped before its items were done says: "stopped" (the
    job was cancelled or failed meanwhile, or its lease or slice taken over),
    "failed" (a fatal answer); a pause or more prompts to run raise Deferred.
    None when the run's items are done."""
    if run.job_left:
        return "stopped"
    if run.fatal is not None:
        job_fail(run.job.pk, redact(run.fatal.message), retryable=False)
        return "failed"
    if run.deferred is not None:
        raise run.deferred
    if run.has_work():
        raise Deferred(clock.monotonic(), "more prompts to run")
    return None


def run_sync_job(job: Job, provider: Provider, deadline: float, owner: str = "") -> str:
    """Run one slice of a sync job. Returns what happened; raises Deferred when
    the job must continue later."""
    first = Item.objects.filter(job_id=job.pk).order_by("index").only("input").first()
    spec = JobSpec.from_dict({**job.spec, "prompts": [first.input] if first else []})
    provider.validate(spec)
    credential = job.credential
    assert credential is not None
    items_requeue_running(job.pk)  # calls a stopped worker left in flight
    todo = Item.objects.filter(job_id=job.pk, status=ItemStatus.PENDING).count()
    if not todo:
        return _finish(job)
    circuit = limits.circuit_wait(credential)
    if circuit:
        raise Deferred(
            clock.monotonic() + circuit, f"{provider.label} keeps failing (circuit open)"
        )
    if slices.slices_ensure(job, todo):
        return run_slices(job, provider, deadline, owner, job_lease=True)
    workers = limits.slots_acquire(credential, owner, min(credential.max_concurrency, todo))
    if not workers:
        _no_slot(job)
    _running(job, provider)
    run = SyncRun(job, provider, deadline, owner)
    run.run(workers)
    return _ended(run) or _finish(job)


def _no_slot(job: Job) -> None:
    Job.objects.filter(pk=job.pk, status__in=[JobStatus.PENDING, JobStatus.QUEUED]).update(
        provider_status="waiting for a free slot"
    )
    raise Deferred(clock.monotonic() + 5, "every concurrency slot of the credential is busy")


def _running(job: Job, provider: Provider) -> None:
    if job.status != JobStatus.RUNNING:
        job_transition(
            job.pk, JobStatus.RUNNING, provider_status="", message=f"Running on {provider.label}."
        )
        job.status = JobStatus.RUNNING


#: Seconds the job's own task waits between looks at slices other workers
#: hold (to take over one whose worker died, or to end the job).
WATCH_INTERVAL = 1.0


def run_slices(
    job: Job, provider: Provider, deadline: float, owner: str, *, job_lease: bool
) -> str:
    """Work on a big job's slices until none is left to claim: take a share
    of the credential's slots, claim slices for that width, run their pending
    items, mark them done; again. The job's own task (``job_lease``) then
    watches the slices others hold, taking over any whose worker died; a
    helper returns. Whoever finds every slice done ends the job. Raises
    Deferred like ``run_sync_job``; what it still holds is let go on the way
    out."""
    credential = job.credential
    assert credential is not None
    pools = _Pools(job.pk)
    try:
        while True:
            now = clock.monotonic()
            if now >= deadline:
                raise Deferred(now, "time budget of this task used up")
            # One slice first: it makes this worker one of those on the job.
            held = slices.slices_claim(job.pk, owner)
            if not held:
                # Watching, not calling: the slots go to the workers on the slices.
                limits.slots_release(credential.pk, owner)
                if not slices.slices_unfinished(job.pk):
                    return _finish(job)
                if not job_lease:
                    return "idle"
                clock.sleep(max(0.0, min(WATCH_INTERVAL, deadline - now)))
                if not renew_job(job.pk, owner):
                    return "stopped"
                job.refresh_from_db(fields=["status"])
                if job.is_terminal:
                    return "stopped"
                continue
            # An equal share of the credential's slots for each worker on the job
            # (those on it already give theirs back at their next claim).
            owners = slices.other_owners(job.pk, owner) + 1
            limit = max(1, credential.max_concurrency)
            workers = _slots_for(job, credential, owner, math.ceil(limit / owners), held, job_lease)
            if not workers:
                slices.slices_let_go(job.pk, owner)
                if job_lease:
                    _no_slot(job)
                return "no slot"
            _running(job, provider)
            # A helper for the slices still unclaimed; it takes its share of the
            # slots as those on the job give theirs back at their next claim.
            slices.helper_enqueue(job.pk)
            size = slices.claim_size(workers, limit, slices.unclaimed_items(job.pk))
            if size > held[0].items:
                held += slices.slices_claim(job.pk, owner, size - held[0].items)
            items = sum(piece.items for piece in held)
            if items < workers:
                workers = limits.slots_resize(credential, owner, items)
            run = SyncRun(job, provider, deadline, owner, slices=held, job_lease=job_lease)
            run.run(workers, pools.get(workers))
            if outcome := _ended(run):
                return outcome
            slices.slices_done([piece.pk for piece in held], owner)
    except SliceGaveUp as exc:
        job_fail(job.pk, str(exc), retryable=True)
        return "failed"
    finally:
        slices.slices_let_go(job.pk, owner)
        pools.close()


class _Pools:
    """The thread pool a task's slices run on, kept from one slice to the
    next while its width stays (each of its threads keeps its HTTP client and
    connection); a new width gets a new pool."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.width = 0
        self.pool: ThreadPoolExecutor | None = None

    def get(self, width: int) -> ThreadPoolExecutor:
        if self.pool is None or width != self.width:
            self.close()
            self.width = width
            self.pool = ThreadPoolExecutor(
                max_workers=width, thread_name_prefix=f"job{self.job_id}"
            )
        return self.pool

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


def _slots_for(
    job: Job,
    credential: Credential,
    owner: str,
    want: int,
    held: list[JobSlice],
    job_lease: bool,
) -> int:
    """Hold ``want`` of the credential's slots (fewer if no more are free),
    waiting up to ``SLOT_WAIT`` for the workers already on the job to give
    some back when none is, the leases of ``held`` renewed meanwhile. 0 when
    none came."""
    give_up = clock.monotonic() + slices.SLOT_WAIT
    while True:
        workers = limits.slots_resize(credential, owner, want)
        if workers or clock.monotonic() >= give_up:
            return workers
        clock.sleep(0.05)
        slices.slices_hold([piece.pk for piece in held], owner)
        if job_lease:
            renew_job(job.pk, owner)


def _finish(job: Job) -> str:
    status = job_finish(job.pk)
    return status or "stopped"


def prompt_label(indexes: list[int]) -> str:
    """One of "prompt 3", "prompts 1–40" or "5 prompts" (1-based, as the page shows them)."""
    if len(indexes) == 1:
        return f"prompt {indexes[0] + 1}"
    ordered = sorted(indexes)
    if ordered[-1] - ordered[0] + 1 == len(ordered):
        return f"prompts {ordered[0] + 1}–{ordered[-1] + 1}"
    return f"{len(ordered)} prompts"
