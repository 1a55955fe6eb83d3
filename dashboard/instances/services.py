"""Model instances (Bytez): the facts, the transitions, and the services the
pages and the API call (request, load, shut down).

Every status write is a conditional UPDATE through the status rules
(``instance_sources_for``), so the web, the poller, the sweep and the admin
never undo each other's moves and a terminal status never changes again.

Provider calls are never made while holding a row lock.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.db.models.functions import Coalesce

from dashboard.core import clock, events
from dashboard.core import queue as tasks_queue
from dashboard.core.audit import audit, via_details
from dashboard.core.connect import build_provider, credential_redact
from dashboard.core.health import credential_record_call
from dashboard.models import Credential, ModelCatalogEntry, ModelInstance, Team
from dashboard.status import (
    INSTANCE_LIVE,
    INSTANCE_TERMINAL,
    InstanceStatus,
    instance_can_move,
    instance_sources_for,
)
from providers import (
    PROVIDERS,
    ErrorKind,
    InstanceState,
    Provider,
    ProviderError,
    RemoteInstance,
    get_provider_class,
)
from providers.base import shorten
from providers.bytez import model_available

logger = logging.getLogger(__name__)


#: Seconds a model may stay ``requested`` (Bytez preparing it, or available
#: and waiting for someone to load it) before it is given up.
REQUEST_DEADLINE_SECONDS = 30 * 60
#: Bytez's expiration period when the load does not set one.
DEFAULT_EXPIRATION_SECONDS = 30 * 60
#: Wait after a failed check that is worth retrying (unless Retry-After says more).
ERROR_RETRY_SECONDS = 5.0
#: Bytez bills at least a minute of an instance.
MIN_BILLED_SECONDS = 60
MAX_CONCURRENCY = 100
MIN_EXPIRATION_SECONDS = 60
MAX_EXPIRATION_SECONDS = 24 * 3600
#: How long a claimed check or stop holds the row: longer than any provider
#: call. A stop still claimed after that lost its worker and is due again.
CLAIM_SECONDS = 60
STOP_CLAIM_SECONDS = CLAIM_SECONDS
STOPPING_PREFIX = "Shutting down"


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


def provider_has_instances(slug: str) -> bool:
    try:
        return bool(get_provider_class(slug).has_instances)
    except KeyError:  # not a registered provider; a broken adapter fails the system check
        return False


def instance_credentials() -> QuerySet[Credential]:
    """The credentials whose provider has model instances to manage."""
    return Credential.objects.filter(
        provider__in=[slug for slug in PROVIDERS if provider_has_instances(slug)]
    )


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
    end = instance.ended_at or at or clock.now()
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
    return (instance.expires_at - (at or clock.now())).total_seconds()


def live_instance(credential_id: int, model: str) -> ModelInstance | None:
    return ModelInstance.objects.filter(
        credential_id=credential_id, model=model, status__in=INSTANCE_LIVE
    ).first()


def catalog_ram(credential_id: int, model: str) -> float | None:
    return (
        ModelCatalogEntry.objects.filter(credential_id=credential_id, name=model)
        .values_list("required_ram_gb", flat=True)
        .first()
    )


def instance_transition(
    instance_id: int,
    new: str,
    *,
    where: Q | None = None,
    stop_revert: bool = False,
    **fields: Any,
) -> bool:
    """Move an instance to ``new`` if the rules allow it from where it is now
    (staying put while live is allowed: a check that sees no change) and the
    row still matches ``where``. False when another writer got there first.
    ``stop_revert``: a stop whose call failed goes back to running or loading
    (only the shutdown service says so); that is no news to announce, the
    instance never stopped."""
    at = clock.now()
    updates: dict[str, Any] = dict(fields)
    updates["status"] = new
    if new == InstanceStatus.RUNNING:
        updates.setdefault("running_since", Coalesce(F("running_since"), at))
        updates.setdefault("deadline_at", None)
    if new in INSTANCE_TERMINAL:
        updates.setdefault("ended_at", at)
        updates.update(next_check_at=None, deadline_at=None)
    sources = instance_sources_for(new, stop_revert=stop_revert)
    rows = ModelInstance.objects.filter(pk=instance_id, status__in=sources)
    if where is not None:
        rows = rows.filter(where)
    with transaction.atomic():
        # A move from another status is an event; staying put (a check that
        # saw no change) is not, so the two are told apart by the row count.
        moved = rows.exclude(status=new).update(**updates)
        if moved and stop_revert:
            return True
        if moved:
            events.instance_changed.send(sender=ModelInstance, instance_id=instance_id, status=new)
            return True
        if not instance_can_move(new, new):
            return False
        return bool(rows.filter(status=new).update(**updates))


def instance_fail(instance_id: int, error: str) -> bool:
    return instance_transition(instance_id, InstanceStatus.FAILED, error=error, message="")


#: The statuses a status check writes to: a stop under way is the stop's own.
CHECKED = INSTANCE_LIVE - {InstanceStatus.STOPPING}


def reschedule(instance_id: int, seconds: float, **fields: Any) -> None:
    ModelInstance.objects.filter(pk=instance_id, status__in=CHECKED).update(
        next_check_at=clock.now() + timedelta(seconds=seconds), **fields
    )


def record_error(instance: ModelInstance, what: str, exc: ProviderError, kinds: Iterable) -> None:
    """A failed provider call as data on the row: the instance fails when asking
    again cannot help, otherwise the error is shown and the check retried."""
    credential_record_call(instance.credential_id, exc)
    message = f"{what} failed: {credential_redact(instance.credential, exc.message)}"
    if exc.kind in kinds:
        instance_fail(instance.pk, message)
        return
    delay = max(ERROR_RETRY_SECONDS, min(exc.retry_after or 0.0, 300.0))
    reschedule(instance.pk, delay, error=message)


def remote_fields(remote: RemoteInstance, credential: Credential) -> dict[str, Any]:
    """What the provider reported, for the row (unknown fields keep their value).
    The status word is the provider's own text: redacted before it is stored."""
    said = credential_redact(credential, remote.provider_status)
    fields: dict[str, Any] = {"provider_status": shorten(said, 100)}
    for name, value in (
        ("concurrency", remote.concurrency),
        ("inferences", remote.inferences),
        ("expiration_seconds", remote.expiration_seconds),
        ("expires_at", remote.expires_at),
    ):
        if value is not None:
            fields[name] = value
    return fields


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
    via: str = "",
) -> ModelInstance:
    """Ask the provider to prepare ``model`` and, with ``load``, to load it with
    these settings as soon as it is available, audited (``via``: the surface
    that asked). The provider calls happen in the background; raises
    InstanceError for input the dashboard refuses."""
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
    at = clock.now()
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
                required_ram_gb=catalog_ram(credential.pk, model),
                created_by=user if getattr(user, "is_authenticated", False) else None,
                created_at=at,
                deadline_at=at + timedelta(seconds=REQUEST_DEADLINE_SECONDS),
                next_check_at=at,
            )
            audit(user, team, "instance.requested", instance, model=model, **via_details(via))
    except IntegrityError:
        existing = live_instance(credential.pk, model)
        raise InstanceError(
            _already_live(existing) if existing else "Another request for this model came first.",
            field="model",
            existing=existing,
        ) from None
    tasks_queue.nudge_instances_on_commit(credential.pk)
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
    via: str = "",
) -> ModelInstance:
    """Load a requested model with these settings: at once if the provider has
    it available, else as soon as it is; audited (``via``: the surface that
    asked). The call itself is the poller's."""
    concurrency, expiration_seconds = _clean_load_settings(concurrency, expiration_seconds)
    with transaction.atomic():
        updated = ModelInstance.objects.filter(
            pk=instance.pk, status=InstanceStatus.REQUESTED, concurrency__isnull=True
        ).update(
            concurrency=concurrency,
            expiration_seconds=expiration_seconds,
            message=f"Load asked{_by(user)}.",
            error="",
            next_check_at=clock.now(),
        )
        if updated:
            audit(
                user,
                instance.team,
                "instance.loaded",
                instance,
                model=instance.model,
                **via_details(via),
            )
    instance.refresh_from_db()
    if not updated:
        if instance_wants_load(instance):
            raise InstanceError("A load of this instance is already under way.")
        raise InstanceError(
            f"The instance is {instance.get_status_display().lower()}; only a requested model can be loaded."
        )
    tasks_queue.nudge_instances_on_commit(instance.credential_id)
    return instance


def instance_stop_begin(instance: ModelInstance, user: Any, *, via: str = "") -> ModelInstance:
    """Start shutting the instance down, without calling the provider here (a
    page or admin request never waits on it): a requested model is cancelled at
    once (nothing runs at the provider yet; a load under way is undone by the
    poller), a loading or running one becomes ``stopping`` and a task
    (:func:`instance_stop`) makes the call. The shutdown is audited once, by the
    caller that moved the row (``via``: the surface that asked). Returns the
    fresh row; a terminal or stopping instance is returned unchanged."""
    instance.refresh_from_db()
    # A poller may move the row meanwhile (requested -> loading): look again.
    for _ in range(3):
        if instance.status in INSTANCE_TERMINAL or instance.status == InstanceStatus.STOPPING:
            break
        if instance.status == InstanceStatus.REQUESTED:
            moved = instance_transition(
                instance.pk,
                InstanceStatus.STOPPED,
                message=f"Cancelled{_by(user)} before it was loaded.",
                error="",
            )
        else:
            # Due at once: the task, or the credential's poll loop, claims it.
            moved = instance_transition(
                instance.pk,
                InstanceStatus.STOPPING,
                message=f"{STOPPING_PREFIX}{_by(user)}…",
                error="",
                next_check_at=clock.now(),
            )
            if moved:
                tasks_queue.nudge_instance_stop_on_commit(instance.pk)
        instance.refresh_from_db()
        if moved:
            audit(
                user,
                instance.team,
                "instance.shutdown",
                instance,
                model=instance.model,
                **via_details(via),
            )
            break
    return instance


def instance_shutdown(instance: ModelInstance, user: Any, *, via: str = "") -> ModelInstance:
    """Shut the instance down and wait for the provider's answer (the JSON
    API's DELETE answers with the outcome): stopped; or, when the call failed,
    back where it was with the error on the row; or failed (an auth error: the
    dashboard cannot manage it any more). Returns the fresh row."""
    instance = instance_stop_begin(instance, user, via=via)
    if instance.status == InstanceStatus.STOPPING:
        instance_stop(instance.pk, wait=True)
    instance.refresh_from_db()
    return instance


def instance_claim(instance: ModelInstance, at: datetime) -> bool | None:
    """Take the next check (or the stop) of this instance: a compare-and-swap
    of ``next_check_at``. True: ours; False: another worker took it; None: the
    row left the live statuses meanwhile."""
    rows = ModelInstance.objects.filter(pk=instance.pk, status__in=INSTANCE_LIVE)
    if instance.next_check_at is None:
        rows = rows.filter(next_check_at__isnull=True)
    else:
        rows = rows.filter(next_check_at=instance.next_check_at)
    if rows.update(next_check_at=at + timedelta(seconds=CLAIM_SECONDS)):
        return True
    still_live = ModelInstance.objects.filter(pk=instance.pk, status__in=INSTANCE_LIVE).exists()
    return False if still_live else None


def instance_stop(instance_id: int, *, wait: bool = False) -> str:
    """The provider call of a stop under way (the task; the API, with ``wait``).
    Claims the stop first, so a redelivered task, the poll loop and the API
    never call twice; a stop claimed by a worker that died is due again once
    its claim has run out. Returns the row's status afterwards, "done" when
    there was no stop to make, "busy" when another worker has it."""
    give_up = clock.monotonic() + (STOP_CLAIM_SECONDS if wait else 0)
    while True:
        instance = ModelInstance.objects.select_related("credential").filter(pk=instance_id).first()
        if instance is None or instance.status != InstanceStatus.STOPPING:
            return "done"
        at = clock.now()
        due = instance.next_check_at is None or instance.next_check_at <= at
        if due and instance_claim(instance, at):
            break
        if clock.monotonic() >= give_up:
            return "busy"
        clock.sleep(0.5)  # the API waits for the worker that has it
    try:
        provider = build_provider(instance.credential)
    except ProviderError as exc:
        return _stop_failed(instance, exc)
    with provider:
        return instance_stop_with(instance, provider)


def instance_stop_with(instance: ModelInstance, provider: Provider) -> str:
    """Make the claimed stop's call (POST /model/delete) and record the outcome."""
    try:
        provider.shutdown_model(instance.model)
    except ProviderError as exc:
        if exc.kind != ErrorKind.NOT_FOUND:  # already gone is what we wanted
            return _stop_failed(instance, exc)
    else:
        credential_record_call(instance.credential_id, None)
    moved = instance_transition(
        instance.pk,
        InstanceStatus.STOPPED,
        where=Q(status=InstanceStatus.STOPPING),
        message=_stopped_message(instance.message),
        error="",
    )
    return InstanceStatus.STOPPED if moved else _status(instance.pk)


def _stop_failed(instance: ModelInstance, exc: ProviderError) -> str:
    """A failed stop: the instance fails when the dashboard cannot manage it any
    more (auth, a base URL it may not call); otherwise it goes back to where it
    was, the error on the row, and is checked again at once."""
    credential_record_call(instance.credential_id, exc)
    message = f"Shut down failed: {credential_redact(instance.credential, exc.message)}"
    if exc.kind in (ErrorKind.AUTH, ErrorKind.INVALID_SPEC):
        instance_fail(instance.pk, message)
        return _status(instance.pk)
    back = InstanceStatus.RUNNING if instance.running_since else InstanceStatus.LOADING
    instance_transition(
        instance.pk,
        back,
        stop_revert=True,
        message="",
        error=message,
        next_check_at=clock.now(),
        # Back as it was: its running time is not restarted.
        running_since=F("running_since"),
        deadline_at=F("deadline_at"),
    )
    return _status(instance.pk)


def _status(instance_id: int) -> str:
    return (
        ModelInstance.objects.filter(pk=instance_id).values_list("status", flat=True).first()
        or "done"
    )


def _stopped_message(stopping: str) -> str:
    """The stopped row's message, from the stopping one: "Shutting down by
    bob…" becomes "Shut down by bob."."""
    if stopping.startswith(STOPPING_PREFIX):
        return "Shut down" + stopping[len(STOPPING_PREFIX) :].rstrip("…") + "."
    return "Shut down."
