"""Slices: one big online job worked on by every free worker process.

A sync job with more than ``DASHBOARD_SLICE_ITEMS`` (500) pending items is cut
into slices of ``SLICE_SIZE`` contiguous items (``JobSlice``). A worker
process, on any machine, claims one (so it counts as one of the job's
workers), takes an equal share of the credential's slots (one share per
worker on the job) and claims more, as many as that width runs in about
``ROUNDS`` calls a slot, or its width's part of what is left when that is
less (guided scheduling: the runs get shorter towards the end, and the
workers end together). The claim is one
conditional UPDATE whatever its size (PostgreSQL first locks the rows it
picks with ``FOR UPDATE SKIP LOCKED``, so two claimers never wait on each
other); the worker runs the slices' pending items with the sync runner and
renews their leases at every write. A slice whose lease expired (a killed
worker) is taken over: its items already recorded stay so, the rest go
again.

One helper task (``dashboard.tasks.advance_slices``) is queued at a time:
whoever claims while slices are still unclaimed queues one, unless one was
queued less than ``HELPER_AGAIN_SECONDS`` ago and has not started (a busy
cluster's pusher may hold it in its own queue), so helpers fill the free
workers of every cluster one by one and stop when there is nothing left to
claim. The job ends (``jobs_end``, by the rule, conditional) when whoever
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

#: Items per slice: the unit of a claim and of a takeover.
SLICE_SIZE = 100
#: A claim covers about this many calls per slot: long enough that the few
#: queries between two claims are nothing, short enough that the shares of
#: the slots follow the workers as they come and go.
ROUNDS = 40
#: The most slices in one claim.
MAX_CLAIM = 500
#: Seconds a helper waits for the workers already on the job to give it some
#: of the credential's slots (they give them back at their next slice).
SLOT_WAIT = 10.0
#: A queued helper not started after this long is taken for stuck (a busy
#: cluster's pusher took it into its own queue, or the broker lost it):
#: another may be queued, for a free worker elsewhere. A stale one that runs
#: later claims a slice if one is left, else returns at once.
HELPER_AGAIN_SECONDS = 1
#: Takeovers of one slice (its worker killed every time) before the job fails.
MAX_TAKEOVERS = 5

Running = JobSlice.State.RUNNING
Pending = JobSlice.State.PENDING
Done = JobSlice.State.DONE


class SliceGaveUp(Exception):
    """A slice was taken over more than ``MAX_TAKEOVERS`` times."""


def slices_ensure(job: Job, pending: int) -> bool:
    """Cut the job into slices when it has more than ``DASHBOARD_SLICE_ITEMS`` pending
    items (once; a concurrent cut of the same job adds nothing). True when
    the job is worked on in slices."""
    if JobSlice.objects.filter(job_id=job.pk).exists():
        return True
    if pending <= settings.DASHBOARD_SLICE_ITEMS:
        return False
    last = Item.objects.filter(job_id=job.pk).aggregate(last=Max("index"))["last"]
    count = math.ceil((last + 1) / SLICE_SIZE)
    JobSlice.objects.bulk_create(
        [
            JobSlice(
                job_id=job.pk,
                number=n,
                start_index=n * SLICE_SIZE,
                end_index=min(last + 1, (n + 1) * SLICE_SIZE),
            )
            for n in range(count)
        ],
        ignore_conflicts=True,
    )
    event_add(job.pk, f"Cut into {count:,} slices of {SLICE_SIZE:,} prompts for every worker.")
    return True


def claim_size(width: int, limit: int, unclaimed: int) -> int:
    """Items to claim for a run ``width`` calls wide, on a credential of
    ``limit`` slots with ``unclaimed`` items left to claim: about ``ROUNDS``
    calls a slot, or this width's part of what is left when that is less
    (guided scheduling: the runs get shorter towards the end, and the workers
    end together; a worker alone on the job takes all that is left)."""
    width = max(1, width)
    guided = math.ceil(unclaimed * width / max(width, limit))
    return max(SLICE_SIZE, min(ROUNDS * width, guided))


def unclaimed_items(job_id: int) -> int:
    """About how many items are left to claim: slices are claimed in order,
    so those after the first unclaimed one (two index lookups)."""
    first = (
        JobSlice.objects.filter(job_id=job_id, state=Pending)
        .order_by("number")
        .values_list("number", flat=True)
        .first()
    )
    if first is None:
        return 0
    last = (
        JobSlice.objects.filter(job_id=job_id)
        .order_by("-number")
        .values_list("number", flat=True)
        .first()
    )
    return ((last or 0) - first + 1) * SLICE_SIZE


def _expiry() -> object:
    return clock.now() + timedelta(seconds=limits.lease_seconds())


def slices_claim(job_id: int, owner: str, items: int = 1) -> list[JobSlice]:
    """Claim the job's first unclaimed slices, about ``items`` items (at
    least one slice), with one UPDATE; when none is unclaimed, take over one
    whose worker's lease expired. Empty when there is nothing to claim.
    Raises ``SliceGaveUp`` when a slice has been taken over too often."""
    count = max(1, min(MAX_CLAIM, math.ceil(items / SLICE_SIZE)))
    for _ in range(5):  # lost a race on SQLite: look again
        with transaction.atomic():
            ids = [
                found.pk
                for found in JobSlice.objects.select_for_update(skip_locked=True)
                .filter(job_id=job_id, state=Pending)
                .order_by("number")
                .only("pk")[:count]
            ]
            if not ids:
                break
            moved = JobSlice.objects.filter(pk__in=ids, state=Pending).update(
                state=Running, owner=owner, lease_expires_at=_expiry(), running=0
            )
        if moved:
            return list(
                JobSlice.objects.filter(pk__in=ids, owner=owner, state=Running).order_by("number")
            )
    taken = _take_over(job_id, owner)
    return [taken] if taken is not None else []


def _take_over(job_id: int, owner: str) -> JobSlice | None:
    now = clock.now()
    expired = Q(state=Running, lease_expires_at__lt=now)
    for _ in range(5):
        with transaction.atomic():
            found = (
                JobSlice.objects.select_for_update(skip_locked=True)
                .filter(expired, job_id=job_id)
                .order_by("number")
                .first()
            )
            if found is None:
                return None
            moved = JobSlice.objects.filter(
                expired, pk=found.pk, owner=found.owner, lease_expires_at=found.lease_expires_at
            ).update(
                owner=owner,
                lease_expires_at=_expiry(),
                running=0,
                takeovers=F("takeovers") + 1,
            )
            if not moved:
                continue
            if found.running:
                # The killed worker's calls in flight are not any more.
                Job.objects.filter(pk=job_id).update(
                    items_running=Greatest(F("items_running") - found.running, Value(0))
                )
        found.refresh_from_db()
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
    return JobSlice.objects.filter(job_id=job_id, state__in=[Pending, Running]).exists()


def other_owners(job_id: int, owner: str) -> int:
    """The other worker processes on the job now (live leases): a helper
    counts once it has claimed its first slice, waiting for its share of the
    slots."""
    return (
        JobSlice.objects.filter(job_id=job_id, state=Running, lease_expires_at__gte=clock.now())
        .exclude(owner=owner)
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
