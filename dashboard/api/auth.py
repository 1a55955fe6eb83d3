"""Bearer tokens: ``Authorization: Bearer <token>``, never the session cookie,
so no call needs a CSRF token."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from dashboard.models import ApiToken

from .errors import UNAUTHORIZED, ApiError

#: last_used_at is a hint for the token page, not an access log: one write a minute.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


class BearerToken(HttpBearer):
    """The token's user, or a 401 that says what to send."""

    def __call__(self, request: HttpRequest) -> Any:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                401,
                "Send an API token as 'Authorization: Bearer <token>' "
                "(create one on the API tokens page or with manage.py create_api_token).",
                headers=UNAUTHORIZED,
            )
        return self.authenticate(request, key)

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        # Only the key's SHA-256 is stored, so look it up by hash.
        found = (
            ApiToken.objects.select_related("user")
            .filter(key_hash=ApiToken.hash(token), revoked_at__isnull=True)
            .first()
        )
        if found is None or not found.user.is_active:
            raise ApiError(
                401,
                "This API token is unknown or was revoked.",
                headers={"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'},
            )
        touch_token(found)
        return found.user


def touch_token(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= TOKEN_TOUCH_INTERVAL:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
