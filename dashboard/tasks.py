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
    return engine.sweep() | instances_sweep()


# --- model instances (dashboard.instances) ---------------------------------------------


def instances_poll(credential_id: int) -> int:
    from .instances import instances_poll as poll

    return poll(credential_id)


def instances_reconcile(credential_id: int) -> int:
    from .instances import instances_reconcile as reconcile

    return reconcile(credential_id)


def catalog_refresh(credential_id: int, force: bool = False) -> str:
    from .instances import catalog_refresh as refresh

    return refresh(credential_id, force=force)


def instances_sweep() -> dict[str, int]:
    from .instances import instances_sweep as sweep_instances

    return sweep_instances()
