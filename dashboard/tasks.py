"""django-q2 tasks: thin wrappers that call the services by id.

Their dotted paths (``dashboard.tasks.*``) are stored by the sweep's schedule
and by every queued task, so they stay stable whatever moves behind them.
Nothing imports this module: work is enqueued by name (``dashboard.core.queue``).
A task is only a nudge: if one is lost, the periodic sweep finds the due work
in the database again.
"""

from __future__ import annotations

from dashboard.evals import judge as evals_judge
from dashboard.evals import scores as evals_scores
from dashboard.instances import catalog, poller, services
from dashboard.instances import sweep as instances_sweep_module
from dashboard.jobs import batch as job_batch
from dashboard.jobs import poller as job_poller
from dashboard.jobs import sweep as job_sweep
from dashboard.jobs import worker
from dashboard.notify import emails, webhooks
from dashboard.notify import sweep as notify_sweep_module


def advance_job(job_id: int) -> str:
    return worker.advance_job(job_id)


def advance_slices(job_id: int) -> str:
    return worker.advance_slices(job_id)


def poll_credential(credential_id: int) -> int:
    return job_poller.poll_credential(credential_id)


def batch_poll(chunk_id: int) -> str:
    return job_batch.batch_poll(chunk_id)


def batch_cancel(job_id: int) -> int:
    return job_batch.batch_cancel(job_id)


def sweep() -> dict[str, int]:
    return (
        job_sweep.sweep()
        | instances_sweep_module.instances_sweep()
        | notify_sweep_module.notify_sweep()
    )


def instances_poll(credential_id: int) -> int:
    return poller.instances_poll(credential_id)


def instances_reconcile(credential_id: int) -> int:
    return poller.instances_reconcile(credential_id)


def catalog_refresh(credential_id: int, force: bool = False) -> str:
    return catalog.catalog_refresh(credential_id, force=force)


def instances_sweep() -> dict[str, int]:
    return instances_sweep_module.instances_sweep()


def instance_stop(instance_id: int) -> str:
    return services.instance_stop(instance_id)


def webhook_deliver(delivery_id: int) -> str:
    return webhooks.delivery_send(delivery_id)


def email_send(notification_id: int) -> str:
    return emails.email_send(notification_id)


def job_rescore(job_id: int, names: list[str] | None = None) -> int:
    return evals_scores.job_rescore(job_id, names)


def judge_start(job_id: int, names: list[str] | None = None) -> list[int]:
    return evals_judge.judge_start(job_id, names)


def judge_finish(job_id: int) -> int | None:
    return evals_judge.judge_finish(job_id)
