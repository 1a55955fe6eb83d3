"""System checks run at start-up (``manage.py check``, runserver, qcluster):
an adapter that does not import is an error, not a provider quietly gone."""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Warning, register

import providers
from providers import simulators


@register()
def provider_adapters_import(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    problems: list[Any] = [
        Error(
            f"The {slug} provider adapter does not import: {reason}",
            hint="Reinstall the dependencies (make setup) or fix the adapter module.",
            id="dashboard.E001",
        )
        for slug, reason in providers.import_errors().items()
    ]
    problems += [
        Warning(
            f"The {slug} simulator does not import: {reason}",
            hint="The demo and the tests need it; production does not.",
            id="dashboard.W001",
        )
        for slug, reason in simulators.import_errors().items()
    ]
    return problems
