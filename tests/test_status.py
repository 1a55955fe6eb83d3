from __future__ import annotations

import pytest

from dashboard import status as s
from dashboard.status import InstanceStatus as I
from dashboard.status import JobStatus as J

JOB_MOVES = [
    (J.PENDING, J.QUEUED, True),
    (J.PENDING, J.RUNNING, True),
    (J.PENDING, J.FAILED, True),
    (J.PENDING, J.CANCELLED, True),
    (J.QUEUED, J.RUNNING, True),
    (J.QUEUED, J.PENDING, False),
    (J.RUNNING, J.COMPLETED, True),
    (J.RUNNING, J.QUEUED, False),
    (J.RUNNING, J.PENDING, False),
    (J.RUNNING, J.RUNNING, True),
    (J.COMPLETED, J.FAILED, False),
    (J.COMPLETED, J.COMPLETED, False),
    (J.FAILED, J.RUNNING, False),
    (J.CANCELLED, J.COMPLETED, False),
    (J.CANCELLED, J.CANCELLED, False),
]


@pytest.mark.parametrize(("current", "new", "allowed"), JOB_MOVES)
def test_job_moves(current: str, new: str, allowed: bool) -> None:
    assert s.can_move(current, new) is allowed


def test_terminal_statuses_never_change() -> None:
    for terminal in s.JOB_TERMINAL:
        for new in J:
            assert not s.can_move(terminal, new)


def test_sources_for_is_the_where_clause() -> None:
    assert set(s.sources_for(J.COMPLETED)) == {J.PENDING, J.QUEUED, J.RUNNING}
    assert set(s.sources_for(J.QUEUED)) == {J.PENDING, J.QUEUED}
    assert set(s.sources_for(J.RUNNING)) == {J.PENDING, J.QUEUED, J.RUNNING}


def test_check_move_raises() -> None:
    with pytest.raises(s.TransitionError):
        s.check_move(J.COMPLETED, J.RUNNING)


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        (I.REQUESTED, I.LOADING, True),
        (I.LOADING, I.RUNNING, True),
        (I.RUNNING, I.STOPPED, True),
        (I.RUNNING, I.EXPIRED, True),
        (I.RUNNING, I.LOADING, False),
        (I.STOPPED, I.RUNNING, False),
        (I.EXPIRED, I.RUNNING, False),
        (I.LOADING, I.FAILED, True),
    ],
)
def test_instance_moves(current: str, new: str, allowed: bool) -> None:
    assert s.instance_can_move(current, new) is allowed


# --- items ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("pending", "running", True),
        ("pending", "completed", True),  # a call of a few ms is never written running
        ("pending", "cancelled", True),
        ("running", "completed", True),
        ("running", "pending", True),  # requeued: its worker stopped mid-call
        ("completed", "failed", False),
        ("failed", "completed", False),
        ("cancelled", "completed", False),
        ("cancelled", "pending", False),
    ],
)
def test_item_moves(current: str, new: str, allowed: bool) -> None:
    assert s.item_can_move(current, new) is allowed


def test_item_sources_for_is_the_where_clause() -> None:
    assert set(s.item_sources_for("running")) == {"pending"}
    assert set(s.item_sources_for("pending")) == {"running"}
    assert set(s.item_sources_for("cancelled")) == {"pending", "running"}


def test_an_ended_item_is_never_completed_again() -> None:
    """The writers of an item's outcome go through the item rules: an item a
    cancel ended is not turned into a completed one by a late answer."""
    from dashboard.jobs.items import item_complete, item_fail
    from dashboard.models import Item
    from providers import ItemResult

    item = Item(index=0, input="x", status="cancelled")
    with pytest.raises(s.TransitionError):
        item_complete(item, ItemResult(output="late"), None)
    with pytest.raises(s.TransitionError):
        item_fail(item, "late")
    assert item.status == "cancelled" and item.output is None
