"""Credential health: what the last call with a credential saw, and when.

Every path that calls a provider reports here (job runs, polls and submits,
the model catalog, instance checks, connection tests): a 401 or 403 turns the
credential to "authentication failed" at once, whatever call saw it, and a
later success turns it back. It lives in ``core`` so every feature package
(jobs included) can call it.

Successes are frequent (a poll loop checks every second), so an unchanged OK
is written at most once a minute; failures are always written. What is stored
is redacted again (``connect.credential_redact``).
"""

from __future__ import annotations

from datetime import timedelta

from dashboard.core import clock
from dashboard.core.connect import credential_redact
from dashboard.models import Credential
from providers import ErrorKind, ProviderError, SpecError
from providers.base import shorten

#: An unchanged OK is written again only after this long.
OK_REFRESH_SECONDS = 60
#: The detail kept on the row.
DETAIL_CHARS = 500
#: Failures that say something about the credential or the way to its
#: provider; the others (404, a refused request, a spec the provider cannot
#: express) are about the request and leave health as it was.
_CREDENTIAL_KINDS = frozenset(
    {
        ErrorKind.AUTH,
        ErrorKind.CONNECTION,
        ErrorKind.TIMEOUT,
        ErrorKind.SERVER,
        ErrorKind.PROTOCOL,
        ErrorKind.RATE_LIMIT,
        ErrorKind.INVALID_SPEC,  # from build_provider: a base URL that may not be called
    }
)


def credential_record_health(
    credential_id: int, *, ok: bool, detail: str = "", auth_failed: bool = False
) -> None:
    """Record what a call with the credential saw: ``ok`` (it worked), else
    ``auth_failed`` (the provider refused the credential: 401/403, or a secret
    that cannot be decrypted) or another failure. ``detail`` says what, in
    words (redacted again here). Never raises for a deleted credential."""
    at = clock.now()
    Health = Credential.Health
    health = Health.OK if ok else Health.AUTH_FAILED if auth_failed else Health.ERROR
    rows = Credential.objects.filter(pk=credential_id)
    if health == Health.OK and not detail:
        rows = rows.exclude(
            health=Health.OK, health_checked_at__gte=at - timedelta(seconds=OK_REFRESH_SECONDS)
        )
    elif detail:
        credential = Credential.objects.filter(pk=credential_id).only("pk", "secret").first()
        if credential is None:
            return
        detail = shorten(credential_redact(credential, detail), DETAIL_CHARS)
    rows.update(health=health, health_detail=detail, health_checked_at=at)


def credential_record_call(credential_id: int, error: ProviderError | None) -> None:
    """:func:`credential_record_health` from a call's outcome: None (it
    worked), or the ProviderError it raised. Errors about the request rather
    than the credential (404, a refused request, a SpecError) are not recorded."""
    if error is None:
        credential_record_health(credential_id, ok=True)
        return
    if isinstance(error, SpecError) or error.kind not in _CREDENTIAL_KINDS:
        return
    credential_record_health(
        credential_id, ok=False, detail=error.message, auth_failed=error.kind is ErrorKind.AUTH
    )
