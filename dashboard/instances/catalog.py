"""The model catalog: the provider's model list cached per credential (the
providers that list their models: Bytez, an OpenAI-compatible server's
``GET /v1/models``), or the documented list plus what the team has run (the
others); and what the new-job form shows beside its model field."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Count, Max, OuterRef, QuerySet, Subquery

from dashboard.core import clock
from dashboard.core.connect import build_provider, credential_redact
from dashboard.core.health import credential_record_call
from dashboard.models import Credential, Job, ModelCatalogEntry, ModelInstance
from providers import (
    ModelInfo,
    ProviderError,
    get_provider_class,
)

from .services import live_instance, provider_has_instances

logger = logging.getLogger(__name__)

#: The provider's model list is fetched at most once per period...
CATALOG_REFRESH_SECONDS = 3600
#: ...or on an admin's demand, but never twice within this interval.
CATALOG_MIN_INTERVAL_SECONDS = 60
CATALOG_ERROR_PREFIX = "Model catalog refresh failed"


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
    try:
        return bool(get_provider_class(credential.provider).lists_models)
    except KeyError:  # not a registered provider
        return False


def catalog_fetched_at(credential_id: int) -> datetime | None:
    return ModelCatalogEntry.objects.filter(credential_id=credential_id).aggregate(
        last=Max("fetched_at")
    )["last"]


def catalog_error(credential: Credential) -> str:
    if credential.last_error.startswith(CATALOG_ERROR_PREFIX):
        # Scrubbed again on the way out: the row may predate this redaction.
        return credential_redact(credential, credential.last_error)
    return ""


def catalog_wait_seconds(
    credential: Credential, *, force: bool, at: datetime | None = None
) -> float:
    """Seconds before a refresh may fetch again (0: now)."""
    at = at or clock.now()
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
    at = clock.now()
    if catalog_wait_seconds(credential, force=force, at=at) > 0:
        return "fresh"
    last = catalog_fetched_at(credential_id)
    # Claim the refresh: a second worker's claim on the same rows matches nothing.
    if last is not None and not ModelCatalogEntry.objects.filter(
        credential_id=credential_id, fetched_at=last
    ).update(fetched_at=at):
        return "fresh"
    try:
        with build_provider(credential) as provider:
            models = provider.list_models()
    except ProviderError as exc:
        credential_record_call(credential_id, exc)
        if last is not None:
            ModelCatalogEntry.objects.filter(credential_id=credential_id, fetched_at=at).update(
                fetched_at=last
            )
        Credential.objects.filter(pk=credential_id).update(
            last_error=f"{CATALOG_ERROR_PREFIX}: {credential_redact(credential, exc.message)}",
            last_error_at=at,
        )
        return "failed"
    credential_record_call(credential_id, None)
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


# --- the new-job form's model list -------------------------------------------------------------

#: Names shown per group beside the model field; the catalog page has the rest.
MODEL_CHOICES_SHOWN = 12
#: The team's past models are looked for among this many of its latest jobs.
RECENT_JOBS_SCANNED = 2000


@dataclass(frozen=True)
class ModelGroup:
    key: str  # "recent", "documented", "listed"
    title: str
    names: list[str]
    total: int  # matching names in all, of which ``names`` are the first

    @property
    def more(self) -> int:
        return self.total - len(self.names)


@dataclass(frozen=True)
class ModelChoices:
    """What the form shows beside the model field for one credential."""

    groups: list[ModelGroup]
    state: CatalogState
    #: The cached list is due for a fetch (the caller queues it; never fetched here).
    stale: bool

    @property
    def names(self) -> list[str]:
        """Every name shown, once, in the order shown (the datalist's too)."""
        return list(dict.fromkeys(name for group in self.groups for name in group.names))

    @property
    def first(self) -> str:
        return self.names[0] if self.names else ""


def team_models(
    credential: Credential, query: str = "", limit: int = MODEL_CHOICES_SHOWN
) -> list[str]:
    """The models the team ran on this provider, most recent first, among its
    latest jobs (a bounded walk of the job_history index, not a GROUP BY)."""
    lowered = query.strip().lower()
    recent = (
        Job.objects.filter(team_id=credential.team_id)
        .order_by("-created_at", "-id")
        .values_list("provider", "model")[:RECENT_JOBS_SCANNED]
    )
    names: dict[str, None] = {}
    for provider, model in recent:
        if provider == credential.provider and lowered in model.lower():
            names.setdefault(model)
            if len(names) >= limit:
                break
    return list(names)


def model_choices(credential: Credential, query: str = "") -> ModelChoices:
    """The team's past models on this provider, the models the provider
    documents and, for a provider that lists its models, its cached list;
    each filtered by ``query`` (part of a name, any case)."""
    query = query.strip()
    lowered = query.lower()
    cls = get_provider_class(credential.provider)
    label = credential.get_provider_display()
    groups = []
    recent = team_models(credential, query)
    if recent:
        groups.append(ModelGroup("recent", "Your team's recent models", recent, len(recent)))
    documented = [name for name in cls.documented_models if lowered in name.lower()]
    if documented:
        title = (
            f"{label} documents" if cls.documents_model_list else f"Named in {label}'s documents"
        )
        groups.append(
            ModelGroup("documented", title, documented[:MODEL_CHOICES_SHOWN], len(documented))
        )
    state = catalog_state(credential)
    stale = False
    if catalog_from_provider(credential):
        entries = ModelCatalogEntry.objects.filter(credential=credential)
        if query:
            entries = entries.filter(name__icontains=query)
        listed = list(entries.order_by("name").values_list("name", flat=True)[:MODEL_CHOICES_SHOWN])
        total = entries.count() if len(listed) == MODEL_CHOICES_SHOWN else len(listed)
        if listed:
            groups.append(ModelGroup("listed", f"{label}'s model list", listed, total))
        stale = catalog_wait_seconds(credential, force=False) <= 0
    return ModelChoices(groups, state, stale)


def model_warning(credential: Credential, name: str) -> str:
    """Why ``name`` may be wrong on this credential, or "": not in the
    provider's documented list (MyMagic), not in its fetched model list, or
    (a provider with instances) no instance of it live. A warning, not an
    error: lists age, and an instance may be loaded before the job runs."""
    name = name.strip()
    if not name:
        return ""
    cls = get_provider_class(credential.provider)
    label = credential.get_provider_display()
    if cls.model_is_documented(name) is False:
        return (
            f"“{name}” is not in {label}'s documented model list "
            f"({', '.join(cls.documented_models)}): check the name; the job is still accepted."
        )
    if catalog_from_provider(credential):
        entries = ModelCatalogEntry.objects.filter(credential=credential)
        count = entries.count()
        if count and not entries.filter(name=name).exists():
            return (
                f"“{name}” is not among the {count} models {label} listed for this credential: "
                "check the name."
            )
    if provider_has_instances(credential.provider) and live_instance(credential.pk, name) is None:
        return (
            f"No instance of “{name}” is live on this credential: the job fails unless it is "
            "loaded first. Request and load it on the Instances page."
        )
    return ""
