"""Local HTTP servers that speak each provider's protocol (tests and the demo)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from .base import DEFAULT_TOKEN, Fault, Simulator, completion_text

#: slug -> (module, class)
SIMULATORS: dict[str, tuple[str, str]] = {
    "together": ("providers.simulators.together", "TogetherSimulator"),
    "mymagic": ("providers.simulators.mymagic", "MyMagicSimulator"),
    "bytez": ("providers.simulators.bytez", "BytezSimulator"),
    "lamini": ("providers.simulators.lamini", "LaminiSimulator"),
    "gridrepublic": ("providers.simulators.gridrepublic", "GridRepublicSimulator"),
    "openai": ("providers.simulators.openai_compat", "OpenAISimulator"),
    "anthropic": ("providers.simulators.anthropic", "AnthropicSimulator"),
}


def get_simulator_class(slug: str) -> type[Simulator]:
    module_name, class_name = SIMULATORS[slug]
    return getattr(importlib.import_module(module_name), class_name)


def available() -> list[str]:
    """Every registered slug, in order (``start_all`` counts ports in this order).
    A simulator that does not import fails loudly when started: see
    :func:`import_errors`."""
    return list(SIMULATORS)


def import_errors(registry: Mapping[str, tuple[str, str]] | None = None) -> dict[str, str]:
    """slug -> a readable reason, for every simulator that does not import."""
    errors: dict[str, str] = {}
    for slug, (module_name, class_name) in (SIMULATORS if registry is None else registry).items():
        try:
            getattr(importlib.import_module(module_name), class_name)
        except Exception as exc:  # an import can raise anything: report it, never hide it
            errors[slug] = f"{module_name}.{class_name}: {type(exc).__name__}: {exc}"
    return errors


def start_all(
    *, host: str = "127.0.0.1", base_port: int = 0, token: str = DEFAULT_TOKEN, latency: float = 0.0
) -> dict[str, Simulator]:
    """Start every simulator; ports count up from ``base_port`` (0: any free port)."""
    started: dict[str, Simulator] = {}
    try:
        for offset, slug in enumerate(available()):
            port = base_port + offset if base_port else 0
            sim = get_simulator_class(slug)(token=token, latency=latency, host=host, port=port)
            sim.start()
            started[slug] = sim
    except BaseException:
        for sim in started.values():  # no half-started set left serving
            sim.stop()
        raise
    return started


__all__ = [
    "DEFAULT_TOKEN",
    "SIMULATORS",
    "Fault",
    "Simulator",
    "available",
    "completion_text",
    "get_simulator_class",
    "import_errors",
    "start_all",
]
