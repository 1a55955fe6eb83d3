"""Local HTTP servers that speak each provider's protocol (tests and the demo)."""

from __future__ import annotations

import importlib

from .base import DEFAULT_TOKEN, Fault, Simulator, completion_text

#: slug -> (module, class)
SIMULATORS: dict[str, tuple[str, str]] = {
    "together": ("providers.simulators.together", "TogetherSimulator"),
    "mymagic": ("providers.simulators.mymagic", "MyMagicSimulator"),
    "bytez": ("providers.simulators.bytez", "BytezSimulator"),
    "lamini": ("providers.simulators.lamini", "LaminiSimulator"),
    "gridrepublic": ("providers.simulators.gridrepublic", "GridRepublicSimulator"),
    "openai": ("providers.simulators.openai_compat", "OpenAISimulator"),
}


def get_simulator_class(slug: str) -> type[Simulator]:
    module_name, class_name = SIMULATORS[slug]
    return getattr(importlib.import_module(module_name), class_name)


def available() -> list[str]:
    slugs = []
    for slug in SIMULATORS:
        try:
            get_simulator_class(slug)
        except (ImportError, AttributeError):
            continue
        slugs.append(slug)
    return slugs


def start_all(
    *, host: str = "127.0.0.1", base_port: int = 0, token: str = DEFAULT_TOKEN, latency: float = 0.0
) -> dict[str, Simulator]:
    """Start every available simulator; ports count up from ``base_port`` (0: any free port)."""
    started: dict[str, Simulator] = {}
    for offset, slug in enumerate(available()):
        port = base_port + offset if base_port else 0
        sim = get_simulator_class(slug)(token=token, latency=latency, host=host, port=port)
        sim.start()
        started[slug] = sim
    return started


__all__ = [
    "DEFAULT_TOKEN",
    "SIMULATORS",
    "Fault",
    "Simulator",
    "available",
    "completion_text",
    "get_simulator_class",
    "start_all",
]
