"""The status rules, in one pure module that every writer goes through.

Job: pending -> queued -> running -> completed | failed | cancelled.
Item (one prompt of a job): pending -> running -> completed | failed | cancelled
(running -> pending again when the worker that ran it stopped mid-call).
Model instance: requested -> loading -> running -> stopped | expired | failed;
a shutdown goes through stopping (running/loading -> stopping -> stopped, or
back to where it was when the provider call failed, or failed).
A terminal status never changes again.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class JobStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class ItemStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class InstanceStatus(models.TextChoices):
    REQUESTED = "requested", "Requested"
    LOADING = "loading", "Loading"
    RUNNING = "running", "Running"
    STOPPING = "stopping", "Stopping"
    STOPPED = "stopped", "Stopped"
    EXPIRED = "expired", "Expired"
    FAILED = "failed", "Failed"


JOB_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
JOB_ACTIVE = frozenset({JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING})
JOB_STATUSES = frozenset(JobStatus.values)

_JOB_NEXT: dict[str, frozenset[str]] = {
    JobStatus.PENDING: frozenset(
        {
            JobStatus.QUEUED,
            JobStatus.RUNNING,
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.QUEUED: frozenset(
        {JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}),
}

ITEM_ACTIVE = frozenset({ItemStatus.PENDING, ItemStatus.RUNNING})
ITEM_ENDED = frozenset({ItemStatus.COMPLETED, ItemStatus.FAILED, ItemStatus.CANCELLED})

INSTANCE_TERMINAL = frozenset(
    {InstanceStatus.STOPPED, InstanceStatus.EXPIRED, InstanceStatus.FAILED}
)
#: Live: something may run (and bill) at the provider; a stop under way too.
INSTANCE_LIVE = frozenset(
    {
        InstanceStatus.REQUESTED,
        InstanceStatus.LOADING,
        InstanceStatus.RUNNING,
        InstanceStatus.STOPPING,
    }
)
#: Where a stop goes back to when its provider call failed. Only the shutdown
#: service makes these moves: ``instance_sources_for`` leaves them out, so a
#: check or a run that still sees the instance running never undoes a stop.
INSTANCE_STOP_REVERTS = frozenset({InstanceStatus.RUNNING, InstanceStatus.LOADING})

_INSTANCE_NEXT: dict[str, frozenset[str]] = {
    InstanceStatus.REQUESTED: frozenset(
        {InstanceStatus.LOADING, InstanceStatus.RUNNING} | INSTANCE_TERMINAL
    ),
    InstanceStatus.LOADING: frozenset(
        {InstanceStatus.RUNNING, InstanceStatus.STOPPING} | INSTANCE_TERMINAL
    ),
    InstanceStatus.RUNNING: frozenset({InstanceStatus.STOPPING} | INSTANCE_TERMINAL),
    InstanceStatus.STOPPING: frozenset(INSTANCE_STOP_REVERTS | INSTANCE_TERMINAL),
}


class TransitionError(ValueError):
    pass


def can_move(current: str, new: str) -> bool:
    """True when a job may go from ``current`` to ``new`` (staying put is allowed
    for non-terminal statuses: a poll that sees no change is not an error)."""
    if current == new:
        return current not in JOB_TERMINAL
    return new in _JOB_NEXT.get(current, frozenset())


def sources_for(new: str) -> list[str]:
    """The statuses from which a job may move to ``new``: the WHERE clause of the
    conditional UPDATE that performs the move."""
    return [s for s in JOB_ACTIVE if can_move(s, new)]


def check_move(current: str, new: str) -> None:
    if not can_move(current, new):
        raise TransitionError(f"A job cannot go from {current} to {new}.")


def instance_can_move(current: str, new: str) -> bool:
    if current == new:
        return current not in INSTANCE_TERMINAL
    return new in _INSTANCE_NEXT.get(current, frozenset())


def instance_sources_for(new: str, *, stop_revert: bool = False) -> list[str]:
    """The WHERE clause of an instance move. A stop is moved back (to running
    or loading) only by the shutdown service when its call failed, which says
    so with ``stop_revert``: then the one source is ``stopping``."""
    if stop_revert:
        if new not in INSTANCE_STOP_REVERTS:
            raise TransitionError(f"A stop does not go back to {new}.")
        return [InstanceStatus.STOPPING]
    return [
        s
        for s in INSTANCE_LIVE
        if instance_can_move(s, new)
        and not (s == InstanceStatus.STOPPING and new in INSTANCE_STOP_REVERTS)
    ]


def is_terminal(status: str) -> bool:
    return status in JOB_TERMINAL


def job_end_status(*, completed: int) -> str:
    """The status of a job whose items have all ended: completed when at least
    one item completed, failed when none did."""
    return JobStatus.COMPLETED if completed else JobStatus.FAILED


def job_end_where() -> dict[str, Q]:
    """``job_end_status`` as WHERE clauses over a job row's counters, for the
    UPDATE that ends many jobs at once (``jobs.services.jobs_end``)."""
    return {JobStatus.COMPLETED: Q(items_completed__gt=0), JobStatus.FAILED: Q(items_completed=0)}


def item_can_move(current: str, new: str) -> bool:
    """Pending items start or end; running ones end, or go back to pending
    when the worker that ran them stopped mid-call (a synchronous call creates
    nothing to duplicate); an ended item never moves again."""
    if current == new:
        return current not in ITEM_ENDED
    if current == ItemStatus.PENDING:
        return True
    if current == ItemStatus.RUNNING:
        return new in ITEM_ENDED or new == ItemStatus.PENDING
    return False


def item_sources_for(new: str) -> list[str]:
    """The statuses from which an item may move to ``new``: the WHERE clause of
    the conditional UPDATE that moves many items at once."""
    return [s for s in ItemStatus.values if s != new and item_can_move(s, new)]


def check_item_move(current: str, new: str) -> None:
    if not item_can_move(current, new):
        raise TransitionError(f"An item cannot go from {current} to {new}.")
