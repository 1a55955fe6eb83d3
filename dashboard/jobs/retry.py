"""Retry pacing shared by the runner, the submitter and the poller."""

from __future__ import annotations

import random

#: Attempts per call (first try + retries) for 429, 5xx, timeouts.
MAX_CALL_ATTEMPTS = 4
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0


def backoff(attempt: int, retry_after: float | None = None) -> float:
    """Seconds before retry number ``attempt`` (1-based): Retry-After when the
    provider sent one, else exponential with full jitter."""
    if retry_after is not None:
        return min(retry_after, 300.0)
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Deferred(Exception):
    """Stop this task slice; the job is due again at ``when`` (a monotonic time)."""

    def __init__(self, when: float, reason: str) -> None:
        super().__init__(reason)
        self.when = when
        self.reason = reason
