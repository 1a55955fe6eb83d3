"""Slices: one big online job worked on by every free worker process.

A sync job with more pending items than one slice is cut into slices of
``SLICE_ITEMS`` contiguous items (``JobSlice``). Any worker process, on any
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

from django.db import transaction
from django.db.models import Case, F, IntegerField, Max, Q, Sum, Value, When
from django.db.models.functions import Greatest

from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.models import Item, Job, JobSlice
from dashboard.status import JobStatus

from . import limits
from .services import event_add

#: Items per slice: enough that a claim's few queries are nothing beside its
#: calls, few enough that every worker gets some of a job of thousands.
SLICE_ITEMS = 500
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
    count = math.ceil((last + 1) / SLICE_ITEMS)
    JobSlice.objects.bulk_create(
        [
            JobSlice(
                job_id=job.pk,
                number=n,
                start_index=n * SLICE_ITEMS,
                end_index=(n + 1) * SLICE_ITEMS,
            )
            for n in range(count)
        ],
        ignore_conflicts=True,
    )
    event_add(job.pk, f"Cut into {count:,} slices of {SLICE_ITEMS:,} prompts for every worker.")
    return True


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
    """Worker processes on the job now (live leases)."""
    return (
        JobSlice.objects.filter(job_id=job_id, state=Running, lease_expires_at__gte=clock.now())
        .values("owner")
        .distinct()
        .count()
    )


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
