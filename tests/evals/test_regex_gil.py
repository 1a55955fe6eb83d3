"""The regular expressions run while an item is recorded (the ``regex``,
``numeric`` scorers and an output schema's ``pattern``) keep the GIL.

The ``regex`` package releases the GIL around every match unless told not to;
in a worker whose threads hold it in turn (32 calls in flight), taking it back
costs up to the interpreter's switch interval a match: measured at 20 ms a
call, 200 µs a verdict instead of 5 µs, and a scored job 10 % slower. Here the
switch interval is half a second and another thread wants the GIL: a match that
let go of it would wait that long for it."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dashboard.core.structured import problems
from dashboard.evals.scorers import verdict

SWITCH_INTERVAL = 0.5


@pytest.fixture
def busy_thread() -> Iterator[None]:
    """A thread that computes for as long as the test runs, under a long switch interval."""
    before = sys.getswitchinterval()
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    thread = threading.Thread(target=spin, daemon=True)
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        thread.start()
        yield
    finally:
        stop.set()
        sys.setswitchinterval(before)
        thread.join()


CASES: dict[str, Callable[[], Any]] = {
    "regex scorer": lambda: verdict({"type": "regex", "value": r"answer \d+"}, "the answer 42"),
    "numeric scorer": lambda: verdict({"type": "numeric", "value": 42}, "so it is 42 in all."),
    "schema pattern": lambda: problems(
        {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]+$"}}},
        {"code": "ABC"},
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_match_never_lets_go_of_the_gil(name: str, busy_thread: None) -> None:
    run = CASES[name]
    started = time.perf_counter()
    for _ in range(3):
        result = run()
    elapsed = time.perf_counter() - started
    assert result in ((True, 1.0, ""), [])
    assert elapsed < SWITCH_INTERVAL / 2, f"{name}: {elapsed:.2f} s for three matches"
