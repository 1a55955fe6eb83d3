from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "LLM Jobs Dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)

        # Notifications listen to the jobs' and instances' events here, not by
        # being imported from them: jobs and instances must not import notify
        # (the layers in pyproject.toml), and a receiver connected at import
        # time would depend on someone importing it first.
        from .notify import receivers  # connected once, when the app is ready

        receivers.connect()

        # Scores are written as items complete, in the same way (jobs must
        # not import evals).
        from .evals import receivers as evals_receivers  # connected once, when ready

        evals_receivers.connect()
