"""Watching instances: one check of one instance, instances started outside
the dashboard, and the poll loop of one credential.

One poll loop per credential (:func:`instances_poll`) watches its live
instances for under the task budget and enqueues its successor. Each check is
claimed first with a conditional update of the row's ``next_check_at`` (a
per-instance lease, distinct from the job poller's credential lease): two
loops never check the same instance, and a loop that loses a claim knows
another loop is on the credential and stops, so duplicate chains die out."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q

from dashboard.core import clock
from dashboard.core import queue as tasks_queue
from dashboard.core.connect import build_provider, credential_redact
from dashboard.core.health import credential_record_call
from dashboard.models import Credential, ModelInstance
from dashboard.status import INSTANCE_LIVE, InstanceStatus
from providers import (
    ErrorKind,
    InstanceState,
    Provider,
    ProviderError,
    RemoteInstance,
)
from providers.base import shorten
from providers.bytez import model_available

from .services import (
    CHECKED,
    CLAIM_SECONDS,  # noqa: F401  (the claim's length, named here too)
    DEFAULT_EXPIRATION_SECONDS,
    REQUEST_DEADLINE_SECONDS,
    catalog_ram,
    instance_claim,
    instance_fail,
    instance_is_available,
    instance_stop_with,
    instance_transition,
    instance_wants_load,
    live_instance,
    provider_has_instances,
    record_error,
    remote_fields,
    reschedule,
)

logger = logging.getLogger(__name__)

#: Seconds a model may stay ``loading``; a cold load takes 1.5 to 5 minutes.
LOAD_DEADLINE_SECONDS = 15 * 60
#: Seconds between checks while requested or loading, and while running.
FAST_CHECK_SECONDS = 1.0
RUNNING_CHECK_SECONDS = 10.0
#: Seconds between two looks at GET /model/instances inside one poll loop.
RECONCILE_SECONDS = 60.0
#: A loop ends (and leaves the next nudge to the sweep) when nothing is due sooner.
SUCCESSOR_HORIZON_SECONDS = 60.0
#: Our clock and the provider's may disagree a little about ``expires_at``.
EXPIRY_SKEW_SECONDS = 5
#: Right after a load the provider may not know the instance yet.
LOAD_NOT_FOUND_GRACE_SECONDS = 20
#: Kinds that will not get better by asking again (the instance fails).
PERMANENT_KINDS = frozenset(
    {ErrorKind.AUTH, ErrorKind.REJECTED, ErrorKind.NOT_FOUND, ErrorKind.INVALID_SPEC}
)


def instance_check(instance: ModelInstance, provider: Provider) -> None:
    """Advance one claimed instance by one provider call."""
    if instance.status not in INSTANCE_LIVE:
        return
    if instance.status == InstanceStatus.STOPPING:
        # Due only when its task was lost or its worker died: finish the stop.
        instance_stop_with(instance, provider)
        return
    if (
        instance.status in (InstanceStatus.REQUESTED, InstanceStatus.LOADING)
        and instance.deadline_at is not None
        and instance.deadline_at <= clock.now()
    ):
        _fail_deadline(instance, provider)
    elif instance.status == InstanceStatus.REQUESTED:
        _check_requested(instance, provider)
    else:
        _check_loaded(instance, provider)


def deadline_message(instance: ModelInstance) -> str:
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
    if instance_fail(instance.pk, deadline_message(instance)) and (
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
            record_error(instance, "Request", exc, PERMANENT_KINDS)
            return
        credential_record_call(instance.credential_id, None)
        said = shorten(credential_redact(instance.credential, remote.provider_status), 100)
        if not model_available(remote):
            instance_transition(
                instance.pk,
                InstanceStatus.REQUESTED,
                provider_status=said,
                message=f"{provider.label} is preparing the model.",
                error="",
                next_check_at=clock.now() + timedelta(seconds=FAST_CHECK_SECONDS),
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
        reschedule(instance.pk, 0, provider_status=instance.provider_status)


def _load(instance: ModelInstance, provider: Provider) -> None:
    try:
        remote = provider.load_model(
            instance.model,
            concurrency=instance.concurrency or 1,
            expiration_seconds=instance.expiration_seconds,
        )
    except ProviderError as exc:
        record_error(instance, "Load", exc, PERMANENT_KINDS)
        return
    credential_record_call(instance.credential_id, None)
    at = clock.now()
    fields = remote_fields(remote, instance.credential)
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
            record_error(instance, "Status check", exc, {ErrorKind.AUTH, ErrorKind.INVALID_SPEC})
        return
    credential_record_call(instance.credential_id, None)
    instance_apply(instance, remote, label=provider.label)


def instance_apply(instance: ModelInstance, remote: RemoteInstance, *, label: str) -> None:
    """Record what the provider reports about a loaded instance."""
    fields = remote_fields(remote, instance.credential)
    at = clock.now()
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
            error=f"{label} reports the instance as {fields['provider_status'] or 'failed'}.",
        )
    if not moved:
        # The report contradicts the rules (e.g. "loading" after "running"): keep watching.
        reschedule(instance.pk, RUNNING_CHECK_SECONDS)


def _expired_message(instance: ModelInstance) -> str:
    period = instance.expiration_seconds or DEFAULT_EXPIRATION_SECONDS
    return f"Expired: no run within its expiration period ({duration_text(period)})."


def _instance_gone(instance: ModelInstance) -> None:
    """The provider has no instance of the model any more: expired when its
    expiry had come, else stopped by someone outside the dashboard."""
    at = clock.now()
    if instance.status == InstanceStatus.LOADING:
        loaded_at = (instance.deadline_at or at) - timedelta(seconds=LOAD_DEADLINE_SECONDS)
        if at - loaded_at < timedelta(seconds=LOAD_NOT_FOUND_GRACE_SECONDS):
            reschedule(instance.pk, FAST_CHECK_SECONDS)
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


def adopt_external(credential: Credential, remote: RemoteInstance) -> ModelInstance | None:
    """A row for an instance the provider runs but the dashboard did not start."""
    at = clock.now()
    status = (
        InstanceStatus.RUNNING if remote.state == InstanceState.RUNNING else InstanceStatus.LOADING
    )
    fields = remote_fields(remote, credential)
    try:
        with transaction.atomic():
            instance = ModelInstance.objects.create(
                team_id=credential.team_id,
                credential=credential,
                model=remote.model,
                status=status,
                external=True,
                message="Started outside the dashboard.",
                required_ram_gb=catalog_ram(credential.pk, remote.model),
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
    tasks_queue.nudge_instances_on_commit(credential.pk)
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
            with build_provider(credential) as own:
                return instances_reconcile(credential_id, own)
        except ProviderError as exc:
            # Only discovery: the instances' own checks report what matters.
            said = credential_redact(credential, exc.message)
            logger.info("Instance list of credential %s: %s", credential_id, said)
            return 0
    try:
        remotes = provider.list_instances()
    except ProviderError as exc:
        credential_record_call(credential_id, exc)
        raise
    credential_record_call(credential_id, None)
    listed = {
        remote.model: remote
        for remote in remotes
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
            created += adopt_external(credential, remote) is not None
        elif row.status == InstanceStatus.REQUESTED:
            instance_apply(row, remote, label=provider.label)  # loaded by someone else meanwhile
    missing = [
        row.pk
        for model, row in rows.items()
        if model not in listed
        and row.status in (InstanceStatus.LOADING, InstanceStatus.RUNNING)  # not a stop's
    ]
    if missing:
        ModelInstance.objects.filter(pk__in=missing, status__in=CHECKED).update(
            next_check_at=clock.now()
        )
    return created


def _due(credential_id: int, at: datetime) -> list[ModelInstance]:
    return list(
        ModelInstance.objects.filter(credential_id=credential_id, status__in=INSTANCE_LIVE)
        .filter(Q(next_check_at__lte=at) | Q(next_check_at__isnull=True))
        .select_related("credential")
        .order_by("pk")
    )


def claim(instance: ModelInstance, at: datetime) -> bool | None:
    """Take the next check of this instance (see ``services.instance_claim``)."""
    return instance_claim(instance, at)


def _seconds_to_next_check(credential_id: int) -> float | None:
    """None when nothing live is left to watch."""
    rows = ModelInstance.objects.filter(credential_id=credential_id, status__in=INSTANCE_LIVE)
    if rows.filter(next_check_at__isnull=True).exists():
        return 0.0
    first = rows.order_by("next_check_at").values_list("next_check_at", flat=True).first()
    if first is None:
        return None
    return max(0.0, (first - clock.now()).total_seconds())


def _run_checks(credential_id: int, provider: Provider, stop_at: float) -> tuple[int, bool]:
    """Check every due instance once. Returns (checks done, lost a claim)."""
    done = 0
    for instance in _due(credential_id, clock.now()):
        if clock.monotonic() >= stop_at:
            break
        claimed = claim(instance, clock.now())
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
    stop_at = clock.monotonic() + (budget if budget is not None else settings.TASK_BUDGET)
    try:
        provider = build_provider(credential)
    except ProviderError as exc:
        credential_record_call(credential_id, exc)
        said = credential_redact(credential, exc.message)
        _fail_credential_instances(credential_id, f"Cannot use the credential: {said}")
        return 0
    checks, successor = 0, False
    last_reconcile: float | None = None
    with provider:
        while True:
            done, lost = _run_checks(credential_id, provider, stop_at)
            checks += done
            if lost:
                return checks  # another loop watches this credential
            if last_reconcile is None or clock.monotonic() - last_reconcile >= RECONCILE_SECONDS:
                last_reconcile = clock.monotonic()
                _reconcile_quietly(credential_id, provider)
            wait = _seconds_to_next_check(credential_id)
            if wait is None or wait > SUCCESSOR_HORIZON_SECONDS:
                break  # nothing to watch soon; the sweep nudges when something is due
            wait = min(max(wait, 0.05), FAST_CHECK_SECONDS)  # new requests get seen within a second
            if clock.monotonic() + wait >= stop_at:
                successor = True
                break
            clock.sleep(wait)
    if successor:
        tasks_queue.nudge_instances(credential_id)
    return checks


def _reconcile_quietly(credential_id: int, provider: Provider) -> None:
    try:
        instances_reconcile(credential_id, provider)
    except ProviderError as exc:
        said = provider.redact(exc.message)
        logger.info("Instance list of credential %s: %s", credential_id, said)
