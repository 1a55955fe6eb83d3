"""The one time seam. Code that waits, measures or stamps time calls these,
through the module (``clock.now()``), so a test replaces time in one place and
never sleeps on it."""

from __future__ import annotations

import time
from datetime import datetime

from django.utils import timezone


def now() -> datetime:
    """Wall-clock time, aware, for rows and deadlines."""
    return timezone.now()


def monotonic() -> float:
    """Seconds on a clock that never goes back, for budgets and intervals."""
    return time.monotonic()


def sleep(seconds: float) -> None:
    time.sleep(seconds)
