"""Model instances (Bytez): request, load, watch, expire and shut down; the
model catalog; and the gate the job engine asks before a Bytez run.

Every status write is a conditional UPDATE through the status rules
(``instance_sources_for``), so the web, the poller, the sweep and the admin
never undo each other's moves and a terminal status never changes again.

One poll loop per credential (:func:`instances_poll`) watches its live
instances for under the task budget and enqueues its successor. Each check is
claimed first with a conditional update of the row's ``next_check_at`` (a
per-instance lease, distinct from the job poller's credential lease): two
loops never check the same instance, and a loop that loses a claim knows
another loop is on the credential and stops, so duplicate chains die out.
Provider calls are never made while holding a row lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Max, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from providers import (
    PROVIDERS,
    ErrorKind,
    InstanceState,
    ModelInfo,
    Provider,
    ProviderError,
    get_provider_class,
)
from providers import InstanceStatus as RemoteInstance
from providers.base import shorten
from providers.bytez import model_available

from . import engine
from .logs import redact
from .models import Credential, Job, ModelCatalogEntry, ModelInstance, Team
from .status import INSTANCE_LIVE, INSTANCE_TERMINAL, InstanceStatus, instance_sources_for

logger = logging.getLogger(__name__)

#: Seconds a model may stay ``requested`` (Bytez preparing it, or available
#: and waiting for someone to load it) before it is given up.
REQUEST_DEADLINE_SECONDS = 30 * 60
#: Seconds a model may stay ``loading``; a cold load takes 1.5 to 5 minutes.
LOAD_DEADLINE_SECONDS = 15 * 60
#: Bytez's expiration period when the load does not set one.
DEFAULT_EXPIRATION_SECONDS = 30 * 60
#: Seconds between checks while requested or loading, and while running.
FAST_CHECK_SECONDS = 1.0
RUNNING_CHECK_SECONDS = 10.0
#: How long a claimed check holds the row: longer than any provider call.
CLAIM_SECONDS = 60
#: Wait after a failed check that is worth retrying (unless Retry-After says more).
ERROR_RETRY_SECONDS = 5.0
#: Seconds between two looks at GET /model/instances inside one poll loop.
RECONCILE_SECONDS = 60.0
#: A loop ends (and leaves the next nudge to the sweep) when nothing is due sooner.
SUCCESSOR_HORIZON_SECONDS = 60.0
#: The sweep nudges a credential whose checks are this late (nobody is polling it).
SWEEP_GRACE_SECONDS = 15
#: The sweep fails requested/loading rows this long past their deadline itself.
DEADLINE_BACKSTOP_SECONDS = 120
#: The sweep looks for instances started elsewhere every this many minutes.
RECONCILE_EVERY_MINUTES = 5
#: Our clock and the provider's may disagree a little about ``expires_at``.
EXPIRY_SKEW_SECONDS = 5
#: Right after a load the provider may not know the instance yet.
LOAD_NOT_FOUND_GRACE_SECONDS = 20
#: Bytez bills at least a minute of an instance.
MIN_BILLED_SECONDS = 60
MAX_CONCURRENCY = 100
MIN_EXPIRATION_SECONDS = 60
MAX_EXPIRATION_SECONDS = 24 * 3600

#: The provider's model list is fetched at most once per period...
CATALOG_REFRESH_SECONDS = 3600
#: ...or on an admin's demand, but never twice within this interval.
CATALOG_MIN_INTERVAL_SECONDS = 60
CATALOG_ERROR_PREFIX = "Model catalog refresh failed"

#: Kinds that will not get better by asking again (the instance fails).
PERMANENT_KINDS = frozenset(
    {ErrorKind.AUTH, ErrorKind.REJECTED, ErrorKind.NOT_FOUND, ErrorKind.INVALID_SPEC}
)

# Injected so tests drive the dashboard's clock together with the simulator's.
now: Callable[[], datetime] = timezone.now


class InstanceError(ValueError):
    """A request the dashboard refuses, with a message for the user (and the
    form field it concerns, for the API's ``fields``)."""

    def __init__(
        self, message: str, *, field: str | None = None, existing: ModelInstance | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.existing = existing


# --- small facts about providers and rows -----------------------------------------------


def provider_has_instances(slug: str) -> bool:
    try:
        return bool(get_provider_class(slug).has_instances)
    except (KeyError, ImportError, AttributeError):
        return False


def instance_is_available(instance: ModelInstance) -> bool:
    """Requested, and the provider says the model is ready to be loaded."""
    if instance.status != InstanceStatus.REQUESTED:
        return False
    said = instance.provider_status
    return model_available(RemoteInstance(instance.model, InstanceState.REQUESTED, said, said))


def instance_wants_load(instance: ModelInstance) -> bool:
    """A requested row carries its load settings once someone asked to load it
    (the API does at once; the page when the user clicks Load)."""
    return instance.status == InstanceStatus.REQUESTED and instance.concurrency is not None


def instance_uptime(instance: ModelInstance, at: datetime | None = None) -> float | None:
    if instance.running_since is None:
        return None
    end = instance.ended_at or at or now()
    return max(0.0, (end - instance.running_since).total_seconds())


def instance_cost(
    instance: ModelInstance, rate: Decimal | None, at: datetime | None = None
) -> Decimal | None:
    """Required RAM (GB) x billed seconds (at least a minute) x the team's rate
    per GB-second; None when any of the three is unknown."""
    uptime = instance_uptime(instance, at)
    if rate is None or uptime is None or instance.required_ram_gb is None:
        return None
    seconds = max(MIN_BILLED_SECONDS, int(uptime))
    return Decimal(str(instance.required_ram_gb)) * seconds * rate


def instance_expires_in(instance: ModelInstance, at: datetime | None = None) -> float | None:
    if instance.expires_at is None or instance.status not in INSTANCE_LIVE:
        return None
    return (instance.expires_at - (at or now())).total_seconds()


def live_instance(credential_id: int, model: str) -> ModelInstance | None:
    return ModelInstance.objects.filter(
        credential_id=credential_id, model=model, status__in=INSTANCE_LIVE
    ).first()


def _catalog_ram(credential_id: int, model: str) -> float | None:
    return (
        ModelCatalogEntry.objects.filter(credential_id=credential_id, name=model)
        .values_list("required_ram_gb", flat=True)
        .first()
    )


def _nudge_poller(credential_id: int) -> None:
    from .tasks import enqueue

    enqueue("dashboard.tasks.instances_poll", credential_id)


def _nudge_on_commit(credential_id: int) -> None:
    transaction.on_commit(lambda: _nudge_poller(credential_id))


# --- transitions -------------------------------------------------------------------------


def instance_transition(
    instance_id: int, new: str, *, where: Q | None = None, **fields: Any
) -> bool:
    """Move an instance to ``new`` if the rules allow it from where it is now
    (staying put while live is allowed: a check that sees no change) and the
    row still matches ``where``. False when another writer got there first."""
    at = now()
    updates: dict[str, Any] = dict(fields)
    updates["status"] = new
    if new == InstanceStatus.RUNNING:
        updates.setdefault("running_since", Coalesce(F("running_since"), at))
        updates.setdefault("deadline_at", None)
    if new in INSTANCE_TERMINAL:
        updates.setdefault("ended_at", at)
        updates.update(next_check_at=None, deadline_at=None)
    rows = ModelInstance.objects.filter(pk=instance_id, status__in=instance_sources_for(new))
    if where is not None:
        rows = rows.filter(where)
    return bool(rows.update(**updates))


def instance_fail(instance_id: int, error: str) -> bool:
    return instance_transition(instance_id, InstanceStatus.FAILED, error=error, message="")


def _reschedule(instance_id: int, seconds: float, **fields: Any) -> None:
    ModelInstance.objects.filter(pk=instance_id, status__in=INSTANCE_LIVE).update(
        next_check_at=now() + timedelta(seconds=seconds), **fields
    )


def _record_error(instance: ModelInstance, what: str, exc: ProviderError, kinds: Iterable) -> None:
    """A failed provider call as data on the row: the instance fails when asking
    again cannot help, otherwise the error is shown and the check retried."""
    message = f"{what} failed: {redact(exc.message)}"
    if exc.kind in kinds:
        instance_fail(instance.pk, message)
        return
    delay = max(ERROR_RETRY_SECONDS, min(exc.retry_after or 0.0, 300.0))
    _reschedule(instance.pk, delay, error=message)


def _remote_fields(remote: RemoteInstance) -> dict[str, Any]:
    """What the provider reported, for the row (unknown fields keep their value)."""
    fields: dict[str, Any] = {"provider_status": shorten(remote.provider_status, 100)}
    for name, value in (
        ("concurrency", remote.concurrency),
        ("inferences", remote.inferences),
        ("expiration_seconds", remote.expiration_seconds),
        ("expires_at", remote.expires_at),
    ):
        if value is not None:
            fields[name] = value
    return fields


# --- services the pages and the API call ----------------------------------------------------


def _clean_load_settings(concurrency: Any, expiration_seconds: Any) -> tuple[int, int | None]:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise InstanceError("Concurrency must be a whole number.", field="concurrency")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InstanceError(
            f"Concurrency must be between 1 and {MAX_CONCURRENCY}.", field="concurrency"
        )
    if expiration_seconds is None:
        return concurrency, None
    if isinstance(expiration_seconds, bool) or not isinstance(expiration_seconds, int):
        raise InstanceError(
            "The expiration period must be a whole number of seconds.", field="expiration_seconds"
        )
    if not MIN_EXPIRATION_SECONDS <= expiration_seconds <= MAX_EXPIRATION_SECONDS:
        raise InstanceError(
            f"The expiration period must be between {MIN_EXPIRATION_SECONDS} and "
            f"{MAX_EXPIRATION_SECONDS} seconds.",
            field="expiration_seconds",
        )
    return concurrency, expiration_seconds


def instance_request(
    team: Team,
    credential: Credential,
    model: str,
    user: Any,
    concurrency: int = 1,
    expiration_seconds: int | None = None,
    *,
    load: bool = True,
) -> ModelInstance:
    """Ask the provider to prepare ``model`` and, with ``load``, to load it with
    these settings as soon as it is available. The provider calls happen in
    the background; raises InstanceError for input the dashboard refuses."""
    if credential.team_id != team.pk:
        raise InstanceError("No such credential in this team.", field="credential")
    if not provider_has_instances(credential.provider):
        raise InstanceError(
            f"{credential.get_provider_display()} has no model instances to manage.",
            field="credential",
        )
    model = (model or "").strip()
    if not model:
        raise InstanceError("A model name is required.", field="model")
    if len(model) > 200:
        raise InstanceError("A model name has at most 200 characters.", field="model")
    concurrency, expiration_seconds = _clean_load_settings(concurrency, expiration_seconds)
    existing = live_instance(credential.pk, model)
    if existing is not None:
        raise InstanceError(_already_live(existing), field="model", existing=existing)
    at = now()
    try:
        with transaction.atomic():
            instance = ModelInstance.objects.create(
                team=team,
                credential=credential,
                model=model,
                status=InstanceStatus.REQUESTED,
                message=f"Requested{_by(user)}; asking {credential.get_provider_display()} "
                "to prepare the model.",
                concurrency=concurrency if load else None,
                expiration_seconds=expiration_seconds if load else None,
                required_ram_gb=_catalog_ram(credential.pk, model),
                created_by=user if getattr(user, "is_authenticated", False) else None,
                created_at=at,
                deadline_at=at + timedelta(seconds=REQUEST_DEADLINE_SECONDS),
                next_check_at=at,
            )
    except IntegrityError:
        existing = live_instance(credential.pk, model)
        raise InstanceError(
            _already_live(existing) if existing else "Another request for this model came first.",
            field="model",
            existing=existing,
        ) from None
    _nudge_on_commit(credential.pk)
    return instance


def _already_live(instance: ModelInstance) -> str:
    return (
        f"{instance.model} already has an instance on this credential "
        f"(#{instance.pk}, {instance.get_status_display().lower()})."
    )


def _by(user: Any) -> str:
    return f" by {user.get_username()}" if getattr(user, "is_authenticated", False) else ""


def instance_load(
    instance: ModelInstance,
    user: Any,
    *,
    concurrency: int = 1,
    expiration_seconds: int | None = None,
) -> ModelInstance:
    """Load a requested model with these settings: at once if the provider has
    it available, else as soon as it is. The call itself is the poller's."""
    concurrency, expiration_seconds = _clean_load_settings(concurrency, expiration_seconds)
    updated = ModelInstance.objects.filter(
        pk=instance.pk, status=InstanceStatus.REQUESTED, concurrency__isnull=True
    ).update(
        concurrency=concurrency,
        expiration_seconds=expiration_seconds,
        message=f"Load asked{_by(user)}.",
        error="",
        next_check_at=now(),
    )
    instance.refresh_from_db()
    if not updated:
        if instance_wants_load(instance):
            raise InstanceError("A load of this instance is already under way.")
        raise InstanceError(
            f"The instance is {instance.get_status_display().lower()}; only a requested model can be loaded."
        )
    _nudge_on_commit(instance.credential_id)
    return instance


def instance_shutdown(instance: ModelInstance, user: Any) -> ModelInstance:
    """Shut the instance down (POST /model/delete) and mark it stopped. A
    provider error leaves it as it was with the error on the row (an auth
    error fails it: the dashboard cannot manage it any more). Returns the
    fresh row; a terminal instance is returned unchanged."""
    instance.refresh_from_db()
    # A poller may move the row meanwhile (requested -> loading): look again.
    for _ in range(3):
        if instance.status in INSTANCE_TERMINAL:
            break
        if instance.status == InstanceStatus.REQUESTED:
            # Nothing runs at the provider yet; a load under way is undone by the poller.
            message = f"Cancelled{_by(user)} before it was loaded."
        else:
            error = _shutdown_call(instance)
            if error is not None:
                _record_shutdown_error(instance, error)
                break
            message = f"Shut down{_by(user)}."
        moved = instance_transition(instance.pk, InstanceStatus.STOPPED, message=message, error="")
        instance.refresh_from_db()
        if moved:
            break
    instance.refresh_from_db()
    return instance


def _shutdown_call(instance: ModelInstance) -> ProviderError | None:
    try:
        with engine.build_provider(instance.credential) as provider:
            provider.shutdown_model(instance.model)
    except ProviderError as exc:
        if exc.kind != ErrorKind.NOT_FOUND:  # already gone is what we wanted
            return exc
    return None


def _record_shutdown_error(instance: ModelInstance, exc: ProviderError) -> None:
    message = f"Shut down failed: {redact(exc.message)}"
    if exc.kind in (ErrorKind.AUTH, ErrorKind.INVALID_SPEC):
        instance_fail(instance.pk, message)
    else:
        ModelInstance.objects.filter(pk=instance.pk, status__in=INSTANCE_LIVE).update(error=message)


# --- the job engine's side: the gate and the run counter --------------------------------------


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
            with engine.build_provider(credential) as provider:
                remote = provider.instance_status(job.model)
        except ProviderError as exc:
            if exc.kind == ErrorKind.NOT_FOUND:
                return ("fail", _not_loaded_message(job.model, credential))
            return None  # the run itself reports (and retries) a provider that is unwell
        if remote.state not in (InstanceState.RUNNING, InstanceState.LOADING):
            return ("fail", _not_loaded_message(job.model, credential))
        instance = _adopt_external(credential, remote)
        if instance is None:
            return None
    if instance.status == InstanceStatus.RUNNING:
        return None
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
        expires_at=now() + timedelta(seconds=expiration),
    )


# --- background: one check of one instance ---------------------------------------------------


def instance_check(instance: ModelInstance, provider: Provider) -> None:
    """Advance one claimed instance by one provider call."""
    if instance.status not in INSTANCE_LIVE:
        return
    if (
        instance.status in (InstanceStatus.REQUESTED, InstanceStatus.LOADING)
        and instance.deadline_at is not None
        and instance.deadline_at <= now()
    ):
        _fail_deadline(instance, provider)
    elif instance.status == InstanceStatus.REQUESTED:
        _check_requested(instance, provider)
    else:
        _check_loaded(instance, provider)


def _deadline_message(instance: ModelInstance) -> str:
    if instance.status == InstanceStatus.LOADING:
        minutes = LOAD_DEADLINE_SECONDS // 60
        said = f" (last status: {instance.provider_status})" if instance.provider_status else ""
        return f"Gave up: the model did not finish loading within {minutes} min{said}."
    minutes = REQUEST_DEADLINE_SECONDS // 60
    if instance_is_available(instance):
        return (
            f"Gave up: the model was available but not loaded within {minutes} min of the "
            "request. Request it again to load it."
        )
    said = f" (last message: {instance.provider_status})" if instance.provider_status else ""
    return f"Gave up: the provider had not made the model available within {minutes} min{said}."


def _fail_deadline(instance: ModelInstance, provider: Provider) -> None:
    if instance_fail(instance.pk, _deadline_message(instance)) and (
        instance.status == InstanceStatus.LOADING
    ):
        _shutdown_quietly(provider, instance.model)  # a stuck load may still be billed


def _shutdown_quietly(provider: Provider, model: str) -> None:
    try:
        provider.shutdown_model(model)
    except ProviderError as exc:
        logger.info("Could not shut down %s after giving up on it: %s", model, exc.message)


def _check_requested(instance: ModelInstance, provider: Provider) -> None:
    if not instance_is_available(instance):
        try:
            remote = provider.request_model(instance.model)
        except ProviderError as exc:
            _record_error(instance, "Request", exc, PERMANENT_KINDS)
            return
        said = shorten(remote.provider_status, 100)
        if not model_available(remote):
            instance_transition(
                instance.pk,
                InstanceStatus.REQUESTED,
                provider_status=said,
                message=f"{provider.label} is preparing the model.",
                error="",
                next_check_at=now() + timedelta(seconds=FAST_CHECK_SECONDS),
            )
            return
        instance.provider_status = said
    if instance_wants_load(instance):
        _load(instance, provider)
        return
    # Available: it waits for a person to load it; the deadline check is its next one.
    waiting = instance_transition(
        instance.pk,
        InstanceStatus.REQUESTED,
        where=Q(concurrency__isnull=True),
        provider_status=instance.provider_status,
        message="Model available: load it.",
        error="",
        next_check_at=instance.deadline_at,
    )
    if not waiting:  # someone asked to load it while we were asking Bytez
        _reschedule(instance.pk, 0, provider_status=instance.provider_status)


def _load(instance: ModelInstance, provider: Provider) -> None:
    try:
        remote = provider.load_model(
            instance.model,
            concurrency=instance.concurrency or 1,
            expiration_seconds=instance.expiration_seconds,
        )
    except ProviderError as exc:
        _record_error(instance, "Load", exc, PERMANENT_KINDS)
        return
    at = now()
    fields = _remote_fields(remote)
    fields.setdefault(
        "expiration_seconds", instance.expiration_seconds or DEFAULT_EXPIRATION_SECONDS
    )
    new = (
        InstanceStatus.RUNNING if remote.state == InstanceState.RUNNING else InstanceStatus.LOADING
    )
    moved = instance_transition(
        instance.pk,
        new,
        **fields,
        message=f"Loading on {provider.label} (a cold load takes 1.5 to 5 minutes).",
        error="",
        deadline_at=at + timedelta(seconds=LOAD_DEADLINE_SECONDS),
        next_check_at=at + timedelta(seconds=FAST_CHECK_SECONDS),
    )
    if not moved:
        # Stopped (or failed) while the load was on its way: undo it, or it is billed.
        _shutdown_quietly(provider, instance.model)


def _check_loaded(instance: ModelInstance, provider: Provider) -> None:
    try:
        remote = provider.instance_status(instance.model)
    except ProviderError as exc:
        if exc.kind == ErrorKind.NOT_FOUND:
            _instance_gone(instance)
        else:
            _record_error(instance, "Status check", exc, {ErrorKind.AUTH, ErrorKind.INVALID_SPEC})
        return
    instance_apply(instance, remote, label=provider.label)


def instance_apply(instance: ModelInstance, remote: RemoteInstance, *, label: str) -> None:
    """Record what the provider reports about a loaded instance."""
    fields = _remote_fields(remote)
    at = now()
    if remote.state == InstanceState.RUNNING:
        moved = instance_transition(
            instance.pk,
            InstanceStatus.RUNNING,
            **fields,
            message="" if not instance.external else instance.message,
            error="",
            next_check_at=at + timedelta(seconds=RUNNING_CHECK_SECONDS),
        )
    elif remote.state == InstanceState.LOADING:
        moved = instance_transition(
            instance.pk,
            InstanceStatus.LOADING,
            **fields,
            error="",
            next_check_at=at + timedelta(seconds=FAST_CHECK_SECONDS),
        )
    elif remote.state == InstanceState.EXPIRED:
        moved = instance_transition(
            instance.pk, InstanceStatus.EXPIRED, **fields, message=_expired_message(instance)
        )
    elif remote.state == InstanceState.STOPPED:
        moved = instance_transition(
            instance.pk, InstanceStatus.STOPPED, **fields, message="Stopped outside the dashboard."
        )
    else:
        moved = instance_transition(
            instance.pk,
            InstanceStatus.FAILED,
            **fields,
            error=f"{label} reports the instance as {remote.provider_status or 'failed'}.",
        )
    if not moved:
        # The report contradicts the rules (e.g. "loading" after "running"): keep watching.
        _reschedule(instance.pk, RUNNING_CHECK_SECONDS)


def _expired_message(instance: ModelInstance) -> str:
    period = instance.expiration_seconds or DEFAULT_EXPIRATION_SECONDS
    return f"Expired: no run within its expiration period ({duration_text(period)})."


def _instance_gone(instance: ModelInstance) -> None:
    """The provider has no instance of the model any more: expired when its
    expiry had come, else stopped by someone outside the dashboard."""
    at = now()
    if instance.status == InstanceStatus.LOADING:
        loaded_at = (instance.deadline_at or at) - timedelta(seconds=LOAD_DEADLINE_SECONDS)
        if at - loaded_at < timedelta(seconds=LOAD_NOT_FOUND_GRACE_SECONDS):
            _reschedule(instance.pk, FAST_CHECK_SECONDS)
            return
    if instance.expires_at is not None and at >= instance.expires_at - timedelta(
        seconds=EXPIRY_SKEW_SECONDS
    ):
        instance_transition(
            instance.pk,
            InstanceStatus.EXPIRED,
            provider_status="gone",
            message=_expired_message(instance),
        )
        return
    if instance.status == InstanceStatus.LOADING:
        instance_fail(
            instance.pk,
            "The provider has no instance of the model any more: the load did not "
            "complete, or it was stopped outside the dashboard.",
        )
        return
    instance_transition(
        instance.pk,
        InstanceStatus.STOPPED,
        provider_status="gone",
        message="Stopped outside the dashboard.",
    )


def duration_text(seconds: float) -> str:
    """A short human duration: "45 s", "4 min 12 s", "1 h 3 min"."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes} min" + (f" {rest} s" if rest else "")
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h" + (f" {rest // 60} min" if rest // 60 else "")


# --- background: instances started elsewhere --------------------------------------------------


def _adopt_external(credential: Credential, remote: RemoteInstance) -> ModelInstance | None:
    """A row for an instance the provider runs but the dashboard did not start."""
    at = now()
    status = (
        InstanceStatus.RUNNING if remote.state == InstanceState.RUNNING else InstanceStatus.LOADING
    )
    fields = _remote_fields(remote)
    try:
        with transaction.atomic():
            instance = ModelInstance.objects.create(
                team_id=credential.team_id,
                credential=credential,
                model=remote.model,
                status=status,
                external=True,
                message="Started outside the dashboard.",
                required_ram_gb=_catalog_ram(credential.pk, remote.model),
                created_at=at,
                running_since=(remote.created_at or at)
                if status == InstanceStatus.RUNNING
                else None,
                deadline_at=at + timedelta(seconds=LOAD_DEADLINE_SECONDS)
                if status == InstanceStatus.LOADING
                else None,
                next_check_at=at + timedelta(seconds=FAST_CHECK_SECONDS),
                **fields,
            )
    except IntegrityError:
        return live_instance(credential.pk, remote.model)  # someone else recorded it first
    _nudge_on_commit(credential.pk)
    return instance


def instances_reconcile(credential_id: int, provider: Provider | None = None) -> int:
    """Compare the credential's live rows with GET /model/instances: instances
    started elsewhere get a row (external); rows the provider no longer lists
    are checked at once. Returns the number of rows created."""
    credential = Credential.objects.filter(pk=credential_id).first()
    if credential is None or not provider_has_instances(credential.provider):
        return 0
    if provider is None:
        try:
            with engine.build_provider(credential) as own:
                return instances_reconcile(credential_id, own)
        except ProviderError as exc:
            # Only discovery: the instances' own checks report what matters.
            logger.info("Instance list of credential %s: %s", credential_id, redact(exc.message))
            return 0
    listed = {
        remote.model: remote
        for remote in provider.list_instances()
        if remote.state in (InstanceState.RUNNING, InstanceState.LOADING)
    }
    rows = {
        row.model: row
        for row in ModelInstance.objects.filter(
            credential_id=credential_id, status__in=INSTANCE_LIVE
        )
    }
    created = 0
    for model, remote in listed.items():
        row = rows.get(model)
        if row is None:
            created += _adopt_external(credential, remote) is not None
        elif row.status == InstanceStatus.REQUESTED:
            instance_apply(row, remote, label=provider.label)  # loaded by someone else meanwhile
    missing = [
        row.pk
        for model, row in rows.items()
        if model not in listed and row.status != InstanceStatus.REQUESTED
    ]
    if missing:
        ModelInstance.objects.filter(pk__in=missing, status__in=INSTANCE_LIVE).update(
            next_check_at=now()
        )
    return created


# --- background: the poll loop of one credential --------------------------------------------


def _due(credential_id: int, at: datetime) -> list[ModelInstance]:
    return list(
        ModelInstance.objects.filter(credential_id=credential_id, status__in=INSTANCE_LIVE)
        .filter(Q(next_check_at__lte=at) | Q(next_check_at__isnull=True))
        .select_related("credential")
        .order_by("pk")
    )


def _claim(instance: ModelInstance, at: datetime) -> bool | None:
    """Take the next check of this instance. True: ours; False: another poller
    took it; None: the row left the live statuses meanwhile."""
    rows = ModelInstance.objects.filter(pk=instance.pk, status__in=INSTANCE_LIVE)
    if instance.next_check_at is None:
        rows = rows.filter(next_check_at__isnull=True)
    else:
        rows = rows.filter(next_check_at=instance.next_check_at)
    if rows.update(next_check_at=at + timedelta(seconds=CLAIM_SECONDS)):
        return True
    still_live = ModelInstance.objects.filter(pk=instance.pk, status__in=INSTANCE_LIVE).exists()
    return False if still_live else None


def _seconds_to_next_check(credential_id: int) -> float | None:
    """None when nothing live is left to watch."""
    rows = ModelInstance.objects.filter(credential_id=credential_id, status__in=INSTANCE_LIVE)
    if rows.filter(next_check_at__isnull=True).exists():
        return 0.0
    first = rows.order_by("next_check_at").values_list("next_check_at", flat=True).first()
    if first is None:
        return None
    return max(0.0, (first - now()).total_seconds())


def _run_checks(credential_id: int, provider: Provider, stop_at: float) -> tuple[int, bool]:
    """Check every due instance once. Returns (checks done, lost a claim)."""
    done = 0
    for instance in _due(credential_id, now()):
        if engine.monotonic() >= stop_at:
            break
        claimed = _claim(instance, now())
        if claimed is None:
            continue
        if not claimed:
            return done, True
        instance_check(instance, provider)
        done += 1
    return done, False


def _fail_credential_instances(credential_id: int, message: str) -> None:
    for pk in ModelInstance.objects.filter(
        credential_id=credential_id, status__in=INSTANCE_LIVE
    ).values_list("pk", flat=True):
        instance_fail(pk, message)


def instances_poll(credential_id: int, *, budget: float | None = None) -> int:
    """Watch a credential's live instances for under the task budget: every
    second while one is requested or loading, every ten while running. Enqueues
    its successor while something is due soon. Returns the checks done."""
    credential = Credential.objects.filter(pk=credential_id).first()
    if credential is None or not provider_has_instances(credential.provider):
        return 0
    if not ModelInstance.objects.filter(
        credential_id=credential_id, status__in=INSTANCE_LIVE
    ).exists():
        return 0
    stop_at = engine.monotonic() + (budget if budget is not None else settings.TASK_BUDGET)
    try:
        provider = engine.build_provider(credential)
    except ProviderError as exc:
        _fail_credential_instances(credential_id, f"Cannot use the credential: {exc.message}")
        return 0
    checks, successor = 0, False
    last_reconcile: float | None = None
    with provider:
        while True:
            done, lost = _run_checks(credential_id, provider, stop_at)
            checks += done
            if lost:
                return checks  # another loop watches this credential
            if last_reconcile is None or engine.monotonic() - last_reconcile >= RECONCILE_SECONDS:
                last_reconcile = engine.monotonic()
                _reconcile_quietly(credential_id, provider)
            wait = _seconds_to_next_check(credential_id)
            if wait is None or wait > SUCCESSOR_HORIZON_SECONDS:
                break  # nothing to watch soon; the sweep nudges when something is due
            wait = min(max(wait, 0.05), FAST_CHECK_SECONDS)  # new requests get seen within a second
            if engine.monotonic() + wait >= stop_at:
                successor = True
                break
            engine.sleep(wait)
    if successor:
        _nudge_poller(credential_id)
    return checks


def _reconcile_quietly(credential_id: int, provider: Provider) -> None:
    try:
        instances_reconcile(credential_id, provider)
    except ProviderError as exc:
        logger.info("Instance list of credential %s: %s", credential_id, redact(exc.message))


# --- the sweep ------------------------------------------------------------------------------------


def instances_sweep() -> dict[str, int]:
    """Run every minute by the scheduler: past deadlines fail, credentials whose
    checks are late get a poller, and now and then every Bytez credential is
    asked for instances started elsewhere."""
    from .tasks import enqueue

    at = now()
    counts = {"instance_deadline": 0, "instance_pollers": 0, "instance_reconciles": 0}
    overdue = ModelInstance.objects.filter(
        status__in=[InstanceStatus.REQUESTED, InstanceStatus.LOADING],
        deadline_at__lt=at - timedelta(seconds=DEADLINE_BACKSTOP_SECONDS),
    )
    for instance in overdue:
        counts["instance_deadline"] += instance_fail(instance.pk, _deadline_message(instance))
    late = (
        ModelInstance.objects.filter(status__in=INSTANCE_LIVE)
        .filter(
            Q(next_check_at__lte=at - timedelta(seconds=SWEEP_GRACE_SECONDS))
            | Q(next_check_at__isnull=True)
        )
        .values_list("credential_id", flat=True)
        .distinct()
    )
    for credential_id in late:
        enqueue("dashboard.tasks.instances_poll", credential_id)
        counts["instance_pollers"] += 1
    if at.minute % RECONCILE_EVERY_MINUTES == 0:
        for credential_id in _instance_credentials().values_list("pk", flat=True):
            enqueue("dashboard.tasks.instances_reconcile", credential_id)
            counts["instance_reconciles"] += 1
    return counts


def _instance_credentials() -> QuerySet[Credential]:
    return Credential.objects.filter(
        provider__in=[slug for slug in PROVIDERS if provider_has_instances(slug)]
    )


# --- the model catalog ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogState:
    """What the catalog page says about the cached list."""

    source: str  # "provider" (cached), "documented", "history"
    fetched_at: datetime | None
    count: int
    error: str
    error_at: datetime | None = None


def catalog_from_provider(credential: Credential) -> bool:
    """Providers with a model-list endpoint: the list is cached per credential."""
    return provider_has_instances(credential.provider)


def catalog_fetched_at(credential_id: int) -> datetime | None:
    return ModelCatalogEntry.objects.filter(credential_id=credential_id).aggregate(
        last=Max("fetched_at")
    )["last"]


def catalog_error(credential: Credential) -> str:
    if credential.last_error.startswith(CATALOG_ERROR_PREFIX):
        return credential.last_error
    return ""


def catalog_wait_seconds(
    credential: Credential, *, force: bool, at: datetime | None = None
) -> float:
    """Seconds before a refresh may fetch again (0: now)."""
    at = at or now()
    interval = CATALOG_MIN_INTERVAL_SECONDS if force else CATALOG_REFRESH_SECONDS
    waits = [0.0]
    last = catalog_fetched_at(credential.pk)
    if last is not None:
        waits.append(interval - (at - last).total_seconds())
    if catalog_error(credential) and credential.last_error_at is not None:
        # A failing provider is asked again after the short interval, not on every page view.
        waits.append(CATALOG_MIN_INTERVAL_SECONDS - (at - credential.last_error_at).total_seconds())
    return max(waits)


def catalog_refresh(credential_id: int, *, force: bool = False) -> str:
    """Fetch the provider's model list into the cache, at most once per refresh
    period (``force``: an admin's "refresh now", at most once per minimum
    interval). Returns what happened: refreshed, fresh, failed or unsupported."""
    credential = Credential.objects.filter(pk=credential_id).first()
    if credential is None or not catalog_from_provider(credential):
        return "unsupported"
    at = now()
    if catalog_wait_seconds(credential, force=force, at=at) > 0:
        return "fresh"
    last = catalog_fetched_at(credential_id)
    # Claim the refresh: a second worker's claim on the same rows matches nothing.
    if last is not None and not ModelCatalogEntry.objects.filter(
        credential_id=credential_id, fetched_at=last
    ).update(fetched_at=at):
        return "fresh"
    try:
        with engine.build_provider(credential) as provider:
            models = provider.list_models()
    except ProviderError as exc:
        if last is not None:
            ModelCatalogEntry.objects.filter(credential_id=credential_id, fetched_at=at).update(
                fetched_at=last
            )
        Credential.objects.filter(pk=credential_id).update(
            last_error=f"{CATALOG_ERROR_PREFIX}: {redact(exc.message)}", last_error_at=at
        )
        return "failed"
    catalog_store(credential_id, models, at)
    return "refreshed"


def catalog_store(credential_id: int, models: list[ModelInfo], at: datetime) -> None:
    """Replace the cached list in a handful of queries: upsert in batches, then
    delete the names the provider no longer lists."""
    unique = {model.name: model for model in models if model.name and len(model.name) <= 300}
    with transaction.atomic():
        ModelCatalogEntry.objects.bulk_create(
            [
                ModelCatalogEntry(
                    credential_id=credential_id,
                    name=model.name,
                    required_ram_gb=model.required_ram_gb,
                    benchmarked=model.benchmarked,
                    fetched_at=at,
                )
                for model in unique.values()
            ],
            update_conflicts=True,
            unique_fields=["credential", "name"],
            update_fields=["required_ram_gb", "benchmarked", "fetched_at"],
            batch_size=500,
        )
        known = set(
            ModelCatalogEntry.objects.filter(credential_id=credential_id).values_list(
                "name", flat=True
            )
        )
        stale = sorted(known - set(unique))
        for start in range(0, len(stale), 500):
            ModelCatalogEntry.objects.filter(
                credential_id=credential_id, name__in=stale[start : start + 500]
            ).delete()
        # Instances requested before the list was known learn their size now.
        ModelInstance.objects.filter(
            credential_id=credential_id, required_ram_gb__isnull=True
        ).update(
            required_ram_gb=Subquery(
                ModelCatalogEntry.objects.filter(
                    credential_id=OuterRef("credential_id"), name=OuterRef("model")
                ).values("required_ram_gb")[:1]
            )
        )


def catalog_state(credential: Credential) -> CatalogState:
    if catalog_from_provider(credential):
        stats = ModelCatalogEntry.objects.filter(credential=credential).aggregate(
            last=Max("fetched_at"), count=Count("pk")
        )
        error = catalog_error(credential)
        return CatalogState(
            "provider",
            stats["last"],
            stats["count"],
            error,
            credential.last_error_at if error else None,
        )
    cls = get_provider_class(credential.provider)
    source = "documented" if cls.documented_models else "history"
    return CatalogState(source, None, len(_listed_models(credential)), "")


def _listed_models(credential: Credential) -> list[str]:
    """Providers without a list endpoint: what they document, plus what the
    team has run on this credential before."""
    documented = set(get_provider_class(credential.provider).documented_models)
    used = set(
        Job.objects.filter(credential=credential)
        .order_by()
        .values_list("model", flat=True)
        .distinct()
    )
    return sorted(documented | used, key=str.lower)


def catalog_models(credential: Credential, query: str = "") -> QuerySet[Any] | list[ModelInfo]:
    """The credential's models whose name contains ``query`` (any case), by name."""
    query = query.strip()
    if catalog_from_provider(credential):
        entries = ModelCatalogEntry.objects.filter(credential=credential).order_by("name", "pk")
        return entries.filter(name__icontains=query) if query else entries
    lowered = query.lower()
    return [ModelInfo(name) for name in _listed_models(credential) if lowered in name.lower()]
