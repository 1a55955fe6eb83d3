"""The audit trail: who did what to which object, append-only.

A leaf under every feature package, so the services that act (jobs, instances,
accounts, notify) each write their own event, whichever surface called them."""

from __future__ import annotations

from typing import Any

from django.db.models import Model

from dashboard.models import AuditEvent, Team


def audit(
    actor: Any, team: Team | None, action: str, target: Model | str = "", **details: Any
) -> AuditEvent:
    label = (
        target if isinstance(target, str) else f"{target._meta.verbose_name} {target.pk}: {target}"
    )
    return AuditEvent.objects.create(
        team=team,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        action=action,
        target=str(label)[:200],
        details=details,
    )


def via_details(surface: str) -> dict[str, str]:
    """The ``via`` detail of an event: which surface asked (web, api, admin,
    command); nothing when the caller did not say."""
    return {"via": surface} if surface else {}
