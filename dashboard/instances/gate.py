"""The job engine's side of model instances: may a Bytez job run now (its
model loaded), and the run counter that moves an instance's expiry."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.db.models import F
from django.db.models.functions import Coalesce

from dashboard.core import clock
from dashboard.core.connect import build_provider
from dashboard.core.health import credential_record_call
from dashboard.models import Credential, Job, ModelInstance
from dashboard.status import InstanceStatus
from providers import (
    ErrorKind,
    InstanceState,
    ProviderError,
)
from providers.base import shorten

from .poller import adopt_external
from .services import (
    DEFAULT_EXPIRATION_SECONDS,
    instance_is_available,
    instance_transition,
    instance_wants_load,
    live_instance,
    provider_has_instances,
)

logger = logging.getLogger(__name__)


def bytez_job_gate(job: Job) -> tuple[str, str] | None:
    """May a job run on its model now? None = go ahead; ("wait", reason) while
    the team's instance of the model is requested or loading (the job stays
    queued with provider_status = reason); ("fail", message) when no instance
    is live, after asking the provider once in case it was loaded elsewhere."""
    credential = job.credential
    if credential is None or not provider_has_instances(credential.provider):
        return None
    instance = live_instance(credential.pk, job.model)
    if instance is None:
        try:
            with build_provider(credential) as provider:
                remote = provider.instance_status(job.model)
        except ProviderError as exc:
            credential_record_call(credential.pk, exc)
            if exc.kind == ErrorKind.NOT_FOUND:
                return ("fail", _not_loaded_message(job.model, credential))
            return None  # the run itself reports (and retries) a provider that is unwell
        credential_record_call(credential.pk, None)
        if remote.state not in (InstanceState.RUNNING, InstanceState.LOADING):
            return ("fail", _not_loaded_message(job.model, credential))
        instance = adopt_external(credential, remote)
        if instance is None:
            return None
    if instance.status == InstanceStatus.RUNNING:
        return None
    if instance.status == InstanceStatus.STOPPING:
        return (
            "fail",
            f"The instance of {job.model} is being shut down. Load it again on the "
            "Instances page (or POST /api/v1/instances) and retry.",
        )
    return ("wait", _wait_reason(instance))


def _not_loaded_message(model: str, credential: Credential) -> str:
    label = credential.get_provider_display()
    return (
        f"No instance of {model} is loaded on {label}. Load it on the Instances page "
        "(or POST /api/v1/instances) and retry."
    )


def _wait_reason(instance: ModelInstance) -> str:
    if instance_is_available(instance) and not instance_wants_load(instance):
        detail = "available; load it on the Instances page"
    else:
        detail = instance.provider_status or instance.get_status_display().lower()
    return shorten(f"Waiting for instance ({instance.status}: {detail})", 100)


def note_runs(job: Job, count: int) -> None:
    """After ``count`` successful runs of a job: count them on the instance and
    move its expiry, as the provider resets the expiration period on each run."""
    if count <= 0 or job.credential_id is None:
        return
    instance = live_instance(job.credential_id, job.model)
    if instance is None or instance.status == InstanceStatus.REQUESTED:
        return
    expiration = instance.expiration_seconds or DEFAULT_EXPIRATION_SECONDS
    # A run that succeeded proves the instance runs, even if no check saw it yet.
    instance_transition(
        instance.pk,
        InstanceStatus.RUNNING,
        inferences=Coalesce(F("inferences"), 0) + count,
        expires_at=clock.now() + timedelta(seconds=expiration),
    )
