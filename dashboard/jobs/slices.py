"""Slices: one big online job worked on by every free worker process.

A sync job with more than ``SLICE_ITEMS`` pending items is cut into slices
of contiguous items (``JobSlice``), largest first: each is a share of what is
left (``slices_plan``), so the workers start at once on small ones and finish
together on small ones, whatever the job's size. Any worker process, on any
machine, claims one with a conditional UPDATE (PostgreSQL first locks the
row it picks with ``FOR UPDATE SKIP LOCKED``, so two claimers never wait on
each other), runs its pending items with the sync runner and renews the
slice's lease at every write. A slice whose lease expired (a killed worker)
is taken over: its items already recorded stay so, the rest go again. Each
claim costs the same whatever the job's size.

One helper task (``dashboard.tasks.advance_slices``) is queued at a time:
whoever claims a slice while others are still unclaimed queues one, unless
one was queued less than ``HELPER_AGAIN_SECONDS`` ago and has not started
(a busy cluster's pusher may hold it in its own queue), so helpers fill the
free workers of every cluster one by one and stop when there is nothing
left to claim. The job ends (``jobs_end``, by the rule, conditional) when whoever
records its last item finds no slice unfinished.
"""

from __future__ import annotations

import math
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, IntegerField, Max, Q, Sum, Value, When
from django.db.models.functions import Greatest

from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.models import Item, Job, JobSlice
from dashboard.status import JobStatus

from . import limits
from .services import event_add

#: A job with more pending items than this is cut into slices; a smaller one
#: runs as one piece, as it always did.
SLICE_ITEMS = 500
#: The smallest and largest slice: the first ones and the last ones are the
#: smallest (workers start at once, and none is left alone with a long tail);
#: between, each is ``1 / (2 × workers)`` of what is left.
SLICE_MIN = 100
SLICE_MAX = 2000
#: The most slices one worker claims at once (for a wide credential: it keeps
#: about two calls per slot of items in hand).
MAX_CLAIM = 8
#: Seconds a helper waits for the workers already on the job to give it some
#: of the credential's slots (they give them back at their next slice).
SLOT_WAIT = 10.0
#: A queued helper not started after this long is taken for stuck (a busy
#: cluster's pusher took it into its own queue, or the broker lost it):
#: another may be queued, for a free worker elsewhere. A stale one that runs
#: later claims a slice if one is left, else returns at once.
HELPER_AGAIN_SECONDS = 2
#: Takeovers of one slice (its worker killed every time) before the job fails.
MAX_TAKEOVERS = 5

Running = JobSlice.State.RUNNING
Pending = JobSlice.State.PENDING
Done = JobSlice.State.DONE


class SliceGaveUp(Exception):
    """A slice was taken over more than ``MAX_TAKEOVERS`` times."""


def slices_ensure(job: Job, pending: int) -> bool:
    """Cut the job into slices when it has more pending items than one
    (once; a concurrent cut of the same job adds nothing). True when the job
    is worked on in slices."""
    if JobSlice.objects.filter(job_id=job.pk).exists():
        return True
    if pending <= SLICE_ITEMS:
        return False
    last = Item.objects.filter(job_id=job.pk).aggregate(last=Max("index"))["last"]
    plan = slices_plan(last + 1, int(settings.Q_CLUSTER.get("workers") or 1))
    JobSlice.objects.bulk_create(
        [
            JobSlice(job_id=job.pk, number=n, start_index=start, end_index=end)
            for n, (start, end) in enumerate(plan)
        ],
        ignore_conflicts=True,
    )
    sizes = [end - start for start, end in plan]
    event_add(
        job.pk,
        f"Cut into {len(plan):,} slices of {min(sizes):,} to {max(sizes):,} prompts "
        "for every free worker.",
    )
    return True


def slices_plan(total: int, workers: int) -> list[tuple[int, int]]:
    """``[start, end)`` ranges over ``total`` items: ``SLICE_MIN`` for the
    first ``workers`` (each worker's first slice is short, so the slots spread
    over the workers as they arrive), then each a ``1 / (2 × workers)`` share
    of what is left (guided scheduling), within ``SLICE_MIN``–``SLICE_MAX``.
    A few dozen slices for any size up to tens of thousands of items; past
    that, ``SLICE_MAX`` each."""
    workers = max(1, workers)
    plan: list[tuple[int, int]] = []
    start = 0
    while start < total:
        left = total - start
        size = SLICE_MIN if len(plan) < workers else math.ceil(left / (2 * workers))
        size = min(left, max(SLICE_MIN, min(SLICE_MAX, size)))
        plan.append((start, start + size))
        start += size
    return plan


def _expiry() -> object:
    return clock.now() + timedelta(seconds=limits.lease_seconds())


def slice_claim(job_id: int, owner: str) -> JobSlice | None:
    """Claim the job's first slice nobody works on, else one whose worker's
    lease expired (a takeover). None when there is none. Raises
    ``SliceGaveUp`` when a slice has been taken over too often."""
    now = clock.now()
    for claimable in (Q(state=Pending), Q(state=Running, lease_expires_at__lt=now)):
        for _ in range(5):  # lost a race on SQLite: look again
            with transaction.atomic():
                found = (
                    JobSlice.objects.select_for_update(skip_locked=True)
                    .filter(claimable, job_id=job_id)
                    .order_by("number")
                    .first()
                )
                if found is None:
                    break
                takeover = found.state == Running
                moved = (
                    JobSlice.objects.filter(
                        pk=found.pk,
                        state=found.state,
                        owner=found.owner,
                        lease_expires_at=found.lease_expires_at,
                    )
                    .filter(claimable)
                    .update(
                        state=Running,
                        owner=owner,
                        lease_expires_at=_expiry(),
                        running=0,
                        takeovers=F("takeovers") + (1 if takeover else 0),
                    )
                )
                if not moved:
                    continue
                if takeover and found.running:
                    # The killed worker's calls in flight are not any more.
                    Job.objects.filter(pk=job_id).update(
                        items_running=Greatest(F("items_running") - found.running, Value(0))
                    )
            found.refresh_from_db()
            if takeover:
                if found.takeovers > MAX_TAKEOVERS:
                    raise SliceGaveUp(
                        f"Gave up after {found.takeovers} interrupted attempts at prompts "
                        f"{found.start_index + 1}–{found.end_index}."
                    )
                event_add(
                    job_id,
                    f"Prompts {found.start_index + 1}–{found.end_index} resumed after a worker "
                    f"stopped mid-slice (takeover {found.takeovers}).",
                )
            return found
    return None


def slices_hold(ids: list[int], owner: str, running: int = 0) -> bool:
    """Renew the leases of the slices ``owner`` works on, and write the calls
    it has in flight (on the first). False when any was lost (taken over)."""
    if not ids:
        return True
    moved = JobSlice.objects.filter(pk__in=ids, owner=owner, state=Running).update(
        lease_expires_at=_expiry(),
        running=Case(
            When(pk=ids[0], then=Value(running)), default=Value(0), output_field=IntegerField()
        ),
    )
    return moved == len(ids)


def slices_done(ids: list[int], owner: str) -> None:
    JobSlice.objects.filter(pk__in=ids, owner=owner, state=Running).update(
        state=Done, lease_expires_at=None, running=0
    )


def slices_let_go(job_id: int, owner: str) -> int:
    """Give back what ``owner`` still holds of the job (a pause, the task's
    budget spent, an error): its items not recorded go again with the next
    claimer. Its calls still counted in flight are taken off the job's count."""
    with transaction.atomic():
        mine = JobSlice.objects.filter(job_id=job_id, owner=owner, state=Running)
        running = mine.aggregate(n=Sum("running"))["n"] or 0
        moved = mine.update(state=Pending, owner="", lease_expires_at=None, running=0)
        if running:
            Job.objects.filter(pk=job_id).update(
                items_running=Greatest(F("items_running") - running, Value(0))
            )
    return moved


def slices_unfinished(job_id: int) -> bool:
    return JobSlice.objects.filter(job_id=job_id).exclude(state=Done).exists()


def live_owners(job_id: int) -> int:
    """Worker processes on the job now (live leases), and one more for a
    helper queued lately that has not started yet: its share is kept for it."""
    now = clock.now()
    owners = (
        JobSlice.objects.filter(job_id=job_id, state=Running, lease_expires_at__gte=now)
        .values("owner")
        .distinct()
        .count()
    )
    recent = now - timedelta(seconds=HELPER_AGAIN_SECONDS)
    queued = Job.objects.filter(pk=job_id, slice_helper_at__gte=recent).exists()
    return owners + queued


def helper_enqueue(job_id: int) -> bool:
    """Queue a helper for the job when a slice is unclaimed and no helper is
    waiting in the broker already. True when one was queued."""
    if not JobSlice.objects.filter(job_id=job_id, state=Pending).exists():
        return False
    now = clock.now()
    stale = now - timedelta(seconds=HELPER_AGAIN_SECONDS)
    queued = (
        Job.objects.filter(pk=job_id, status=JobStatus.RUNNING)
        .filter(Q(slice_helper_at__isnull=True) | Q(slice_helper_at__lt=stale))
        .update(slice_helper_at=now)
    )
    if queued:
        tasks_queue.nudge_slices(job_id)
    return bool(queued)


def helper_started(job_id: int) -> None:
    Job.objects.filter(pk=job_id, slice_helper_at__isnull=False).update(slice_helper_at=None)
