"""Secrets at rest: a thin model field over cryptography's MultiFernet.

The keys come from ``DASHBOARD_ENCRYPTION_KEYS`` (comma-separated Fernet keys;
the first encrypts, all decrypt), never from SECRET_KEY. Without keys a
development key is kept in a file under the data directory, with a warning;
with DEBUG off and no keys, nothing starts.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from dashboard.core.logs import register_secret

logger = logging.getLogger(__name__)

PREFIX = "fernet:"


class SecretDecryptionError(Exception):
    """A stored secret cannot be decrypted with the configured keys."""


class Ciphertext(str):
    """A secret as stored: what :func:`encrypt` made or the database held.

    Only a value of this type is saved as it is. Any other string is what a
    user typed, and is encrypted, whatever it looks like: a plain string that
    starts with ``fernet:`` is somebody's ciphertext offered as a key, and
    storing it as is would have the server decrypt it and send the plaintext
    to a host of the offerer's choosing."""

    __slots__ = ()


@cache
def multifernet() -> MultiFernet:
    keys = list(settings.DASHBOARD_ENCRYPTION_KEYS) or [_development_key()]
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            "DASHBOARD_ENCRYPTION_KEYS must be comma-separated Fernet keys "
            "(make one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())')"
        ) from None


def _development_key() -> str:
    if not (settings.DEBUG or settings.TESTING):
        raise ImproperlyConfigured(
            "Set DASHBOARD_ENCRYPTION_KEYS: it encrypts provider secrets at rest (DEBUG is off)."
        )
    path = Path(settings.DATA_DIR) / "dev-encryption.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(Fernet.generate_key().decode())
    logger.warning(
        "DASHBOARD_ENCRYPTION_KEYS is not set: using the development key in %s. "
        "Set real keys before storing real credentials.",
        path,
    )
    return path.read_text().strip()


def encrypt(plaintext: str) -> Ciphertext:
    return Ciphertext(PREFIX + multifernet().encrypt(plaintext.encode()).decode())


def decrypt(stored: str) -> str:
    """The plaintext. It is registered with the log redaction at once, so no
    later log line can carry it, whatever code logs it."""
    if not stored.startswith(PREFIX):
        raise SecretDecryptionError("The stored secret is not in the encrypted format.")
    try:
        plaintext = multifernet().decrypt(stored[len(PREFIX) :].encode()).decode()
    except InvalidToken:
        raise SecretDecryptionError(
            "The stored secret cannot be decrypted with DASHBOARD_ENCRYPTION_KEYS "
            "(was the key that encrypted it removed?)."
        ) from None
    register_secret(plaintext)
    return plaintext


def rotate(stored: str) -> Ciphertext:
    """Re-encrypt under the first key (MultiFernet.rotate keeps the timestamp)."""
    if not stored.startswith(PREFIX):
        raise SecretDecryptionError("The stored secret is not in the encrypted format.")
    try:
        return Ciphertext(PREFIX + multifernet().rotate(stored[len(PREFIX) :].encode()).decode())
    except InvalidToken:
        raise SecretDecryptionError(
            "A stored secret cannot be decrypted with any key of DASHBOARD_ENCRYPTION_KEYS."
        ) from None


class EncryptedSecretField(models.TextField):
    """Stores ``encrypt(value)``; the Python value is the ciphertext string
    (a :class:`Ciphertext`, once saved or loaded).

    Decryption is explicit (``decrypt(credential.secret)``) so a secret is
    never decrypted by accident when a row is loaded or rendered. A value
    assigned in Python is encrypted on save whatever it is; only what came
    from the database or from :func:`encrypt` is stored as it is.
    """

    def from_db_value(self, value: object, expression: object, connection: object) -> object:
        return Ciphertext(value) if isinstance(value, str) and value else value

    def pre_save(self, model_instance: models.Model, add: bool) -> object:
        # Encrypt on the instance too, so the plaintext does not linger in memory.
        value = self.get_prep_value(getattr(model_instance, self.attname))
        setattr(model_instance, self.attname, value)
        return value

    def get_prep_value(self, value: object) -> object:
        value = super().get_prep_value(value)
        if value in (None, ""):
            return value
        if isinstance(value, str) and not isinstance(value, Ciphertext):
            return encrypt(value)
        return value
