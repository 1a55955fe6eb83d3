"""django-q2 tasks: thin wrappers that load by id and call the engine.

A task is only a nudge: if enqueueing fails (broker down) the periodic sweep
finds the due work from the database, so a lost message delays, never loses.
"""

from __future__ import annotations

import logging

from django.conf import settings

from . import engine

logger = logging.getLogger(__name__)


def enqueue(func: str, *args: object) -> None:
    from django_q.tasks import async_task

    try:
        async_task(func, *args, timeout=settings.TASK_TIMEOUT)
    except Exception:
        logger.warning(
            "Could not enqueue %s%s; the sweep will pick it up.", func, args, exc_info=True
        )


def advance_job(job_id: int) -> str:
    return engine.advance_job(job_id)


def poll_credential(credential_id: int) -> int:
    return engine.poll_credential(credential_id)


def sweep() -> dict[str, int]:
    return engine.sweep()
