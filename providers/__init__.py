"""Provider adapters, looked up by slug. Imported lazily so a broken or slow
adapter import never breaks the others."""

from __future__ import annotations

import importlib

from .base import (
    ErrorKind,
    InstanceState,
    InstanceStatus,
    JobSpec,
    ModelInfo,
    Provider,
    ProviderError,
    RemoteState,
    RemoteStatus,
    SpecError,
)

#: slug -> (module, class, label). The order is the order shown in forms.
PROVIDERS: dict[str, tuple[str, str, str]] = {
    "together": ("providers.together", "TogetherProvider", "Together"),
    "mymagic": ("providers.mymagic", "MyMagicProvider", "MyMagic"),
    "bytez": ("providers.bytez", "BytezProvider", "Bytez"),
    "lamini": ("providers.lamini", "LaminiProvider", "Lamini"),
    "gridrepublic": ("providers.gridrepublic", "GridRepublicProvider", "GridRepublic"),
    "openai": ("providers.openai_compat", "OpenAIProvider", "OpenAI-compatible"),
}

PROVIDER_CHOICES = [(slug, label) for slug, (_, _, label) in PROVIDERS.items()]


def available() -> list[str]:
    """Slugs whose adapter module is present."""
    return [slug for slug in PROVIDERS if _importable(slug)]


def get_provider_class(slug: str) -> type[Provider]:
    try:
        module_name, class_name, _ = PROVIDERS[slug]
    except KeyError:
        raise KeyError(f"Unknown provider {slug!r}") from None
    return getattr(importlib.import_module(module_name), class_name)


def _importable(slug: str) -> bool:
    try:
        get_provider_class(slug)
    except (ImportError, AttributeError):
        return False
    return True


__all__ = [
    "PROVIDERS",
    "PROVIDER_CHOICES",
    "ErrorKind",
    "InstanceState",
    "InstanceStatus",
    "ModelInfo",
    "JobSpec",
    "Provider",
    "ProviderError",
    "RemoteState",
    "RemoteStatus",
    "SpecError",
    "available",
    "get_provider_class",
]
