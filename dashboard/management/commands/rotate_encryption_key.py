from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Model

from dashboard.core.crypto import EncryptedSecretField, SecretDecryptionError, rotate

#: (model, field name, pk, stored ciphertext, the same under the first key)
Rotation = tuple[type[Model], str, int, str, str]


def encrypted_fields() -> list[tuple[type[Model], str]]:
    """Every encrypted field of every model: a new one is rotated without
    anyone remembering to add it here."""
    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.get_fields()
        if isinstance(field, EncryptedSecretField)
    ]


class Command(BaseCommand):
    help = (
        "Re-encrypt every secret (credentials, webhook secrets, any encrypted field) under "
        "the first key of DASHBOARD_ENCRYPTION_KEYS. Deploy with the new key first and the "
        "old ones after it; once this ran, the old keys can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        # First make sure every secret can be read: either all are rotated or none.
        rotations: list[Rotation] = []
        unreadable: dict[str, list[int]] = {}
        for model, name in encrypted_fields():
            for pk, stored in model._default_manager.exclude(**{name: ""}).values_list("pk", name):
                try:
                    rotations.append((model, name, pk, stored, rotate(stored)))
                except SecretDecryptionError:
                    unreadable.setdefault(str(model._meta.verbose_name_plural), []).append(pk)
        if unreadable:
            which = "; ".join(
                f"{label} {', '.join(map(str, pks))}" for label, pks in unreadable.items()
            )
            raise CommandError(
                f"{which[:1].upper()}{which[1:]} cannot be decrypted with any key of "
                "DASHBOARD_ENCRYPTION_KEYS; nothing was changed. Add the key that encrypted them."
            )
        done = 0
        with transaction.atomic():
            for model, name, pk, stored, new in rotations:
                # Conditional: a secret changed meanwhile is already under the new key.
                done += model._default_manager.filter(pk=pk, **{name: stored}).update(**{name: new})
        self.stdout.write(f"Re-encrypted {done} secret(s) under the first key.")
