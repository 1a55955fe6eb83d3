from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from dashboard.crypto import SecretDecryptionError, rotate
from dashboard.models import Credential


class Command(BaseCommand):
    help = (
        "Re-encrypt every secret under the first key of DASHBOARD_ENCRYPTION_KEYS. "
        "Deploy with the new key first and the old ones after it; once this ran, "
        "the old keys can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        done = 0
        for pk in Credential.objects.values_list("pk", flat=True):
            with transaction.atomic():
                stored = Credential.objects.filter(pk=pk).values_list("secret", flat=True).first()
                if stored is None:
                    continue
                try:
                    rotated = rotate(stored)
                except SecretDecryptionError as exc:
                    raise CommandError(f"Credential {pk}: {exc}") from None
                # Conditional: a secret changed meanwhile is left for the next run.
                done += Credential.objects.filter(pk=pk, secret=stored).update(secret=rotated)
        self.stdout.write(f"Re-encrypted {done} secret(s) under the first key.")
