"""Provider adapters, looked up by slug.

Adapters are imported on first use, so a slow adapter import costs nothing
until a job needs it. A broken adapter is never hidden: :func:`import_errors`
names every registered adapter that does not import, for a start-up check.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from .base import (
    ConnectionCheck,
    ErrorKind,
    InstanceState,
    ItemResult,
    JobSpec,
    ModelInfo,
    Provider,
    ProviderError,
    RemoteInstance,
    RemoteState,
    RemoteStatus,
    SpecError,
    TokenUsage,
)

#: slug -> (module, class, label). The order is the order shown in forms.
PROVIDERS: dict[str, tuple[str, str, str]] = {
    "together": ("providers.together", "TogetherProvider", "Together"),
    "mymagic": ("providers.mymagic", "MyMagicProvider", "MyMagic"),
    "bytez": ("providers.bytez", "BytezProvider", "Bytez"),
    "lamini": ("providers.lamini", "LaminiProvider", "Lamini"),
    "gridrepublic": ("providers.gridrepublic", "GridRepublicProvider", "GridRepublic"),
    "openai": ("providers.openai_compat", "OpenAIProvider", "OpenAI-compatible"),
    "anthropic": ("providers.anthropic", "AnthropicProvider", "Anthropic"),
}

PROVIDER_CHOICES = [(slug, label) for slug, (_, _, label) in PROVIDERS.items()]


def get_provider_class(slug: str) -> type[Provider]:
    """The adapter class of ``slug``. KeyError for an unknown slug; an adapter
    that fails to import raises whatever its import raised."""
    try:
        module_name, class_name, _ = PROVIDERS[slug]
    except KeyError:
        raise KeyError(f"Unknown provider {slug!r}") from None
    return load_class(slug, module_name, class_name)


def load_class(slug: str, module_name: str, class_name: str) -> type[Provider]:
    """Import one registry entry and check that it is the adapter it claims to be."""
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise TypeError(f"{module_name}.{class_name} is not a Provider subclass")
    if getattr(cls, "slug", None) != slug:
        raise TypeError(
            f"{module_name}.{class_name} has slug {getattr(cls, 'slug', None)!r}, "
            f"but is registered as {slug!r}"
        )
    return cls


def import_errors(
    registry: Mapping[str, tuple[str, str, str]] | None = None,
) -> dict[str, str]:
    """slug -> a readable reason, for every registered adapter that does not
    import (empty when all do). Meant for a start-up system check."""
    errors: dict[str, str] = {}
    for slug, (module_name, class_name, _) in (PROVIDERS if registry is None else registry).items():
        try:
            load_class(slug, module_name, class_name)
        except Exception as exc:  # an import can raise anything: report it, never hide it
            errors[slug] = f"{module_name}.{class_name}: {type(exc).__name__}: {exc}"
    return errors


__all__ = [
    "PROVIDERS",
    "PROVIDER_CHOICES",
    "ConnectionCheck",
    "ErrorKind",
    "InstanceState",
    "RemoteInstance",
    "ItemResult",
    "ModelInfo",
    "JobSpec",
    "Provider",
    "ProviderError",
    "RemoteState",
    "RemoteStatus",
    "SpecError",
    "TokenUsage",
    "get_provider_class",
    "import_errors",
]
