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
