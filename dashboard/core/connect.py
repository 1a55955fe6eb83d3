"""Build a provider adapter from a credential: the one place a secret is
decrypted for use, and where the outbound guard and the timeouts are applied."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import httpx
from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from dashboard.core import logs, netguard
from dashboard.core.crypto import SecretDecryptionError
from providers import ErrorKind, Provider, ProviderError, get_provider_class
from providers.base import THREAD_LIMITS
from providers.redaction import redact, secret_forms

if TYPE_CHECKING:
    from dashboard.models import Credential


@sensitive_variables("secret")
def build_provider(credential: Credential, *, transport: Any = None) -> Provider:
    """The adapter for a credential. Raises ProviderError for a secret that
    cannot be decrypted or a base_url that may not be called. ``transport``
    replaces the network (tests pass an ``httpx.MockTransport``); without one
    every connection goes through the outbound guard, which checks the address
    it actually connects to."""
    try:
        secret = credential.reveal_secret()
    except SecretDecryptionError as exc:
        raise ProviderError(str(exc), kind=ErrorKind.AUTH) from None
    try:
        # Scheme and literal addresses only: a name is checked where the
        # connection is made, against the address connected to (rebinding).
        netguard.check_url(credential.base_url, resolve=False)
    except netguard.BlockedHostError as exc:
        raise ProviderError(str(exc), kind=ErrorKind.INVALID_SPEC) from None
    cls = get_provider_class(credential.provider)
    provider = cls(
        secret=secret,
        base_url=credential.base_url,
        options=credential.options,
        transport=transport,
        # A transport per thread's client, each a pool of its own (see Provider.client).
        transport_factory=None
        if transport is not None
        else functools.partial(netguard.guarded_transport, limits=THREAD_LIMITS),
        timeout=httpx.Timeout(
            settings.DASHBOARD_HTTP_TIMEOUT, connect=min(5.0, settings.DASHBOARD_HTTP_TIMEOUT)
        ),
        max_response_bytes=settings.DASHBOARD_MAX_RESPONSE_MB * 1024 * 1024,
    )
    # A self-hosted gateway (or a simulator) may be polled faster or slower.
    interval = credential.options.get("poll_interval_seconds")
    if isinstance(interval, int | float) and interval > 0:
        provider.poll_interval = float(interval)
    return provider


@sensitive_variables("secret")
def credential_redact(credential: Credential, text: str) -> str:
    """Provider text about ``credential`` scrubbed once more before the dashboard
    stores or shows it: the providers' redaction with every form of this
    credential's secret (as sent, escaped, URL- or base64-encoded, cut short),
    then the log redaction (every secret this process has decrypted). The
    adapter redacted it already; this catches what an adapter never looked at
    (a status word) or an adapter that forgot."""
    if not text:
        return text
    cached = credential.__dict__.get("_redaction_forms")
    if cached is None or cached[0] != credential.secret:
        try:
            secret = credential.reveal_secret()
        except SecretDecryptionError:
            secret = ""
        cached = (credential.secret, secret_forms(secret))
        credential.__dict__["_redaction_forms"] = cached
    return logs.redact(redact(text, cached[1]))
