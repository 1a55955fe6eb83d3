"""An instance as the API shows it, and as webhooks deliver it."""

from __future__ import annotations

from typing import Any

from dashboard.models import ModelInstance


def instance_json(instance: ModelInstance) -> dict[str, Any]:
    return {
        "id": instance.pk,
        "model": instance.model,
        "status": instance.status,
        "provider_status": instance.provider_status,
        "concurrency": instance.concurrency,
        "inferences": instance.inferences,
        "expires_at": instance.expires_at,
        "error": instance.error,
        "credential": instance.credential_id,
        "team": instance.team_id,
        "created_at": instance.created_at,
    }
