from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from dashboard.core.crypto import SecretDecryptionError, rotate
from dashboard.models import Credential


class Command(BaseCommand):
    help = (
        "Re-encrypt every secret under the first key of DASHBOARD_ENCRYPTION_KEYS. "
        "Deploy with the new key first and the old ones after it; once this ran, "
        "the old keys can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        # First make sure every secret can be read: either all are rotated or none.
        rotated: dict[int, tuple[str, str]] = {}
        unreadable = []
        for pk, stored in Credential.objects.values_list("pk", "secret"):
            try:
                rotated[pk] = (stored, rotate(stored))
            except SecretDecryptionError:
                unreadable.append(pk)
        if unreadable:
            raise CommandError(
                f"Credentials {', '.join(map(str, unreadable))} cannot be decrypted with any key of "
                "DASHBOARD_ENCRYPTION_KEYS; nothing was changed. Add the key that encrypted them."
            )
        done = 0
        for pk, (stored, new) in rotated.items():
            # Conditional: a secret changed meanwhile is already under the new key.
            done += Credential.objects.filter(pk=pk, secret=stored).update(secret=new)
        self.stdout.write(f"Re-encrypted {done} secret(s) under the first key.")
