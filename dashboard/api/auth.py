"""Bearer tokens: ``Authorization: Bearer <token>``, never the session cookie,
so no call needs a CSRF token.

A write (any method but GET, HEAD and OPTIONS) also needs its route's role
(member by default, admin where the route says ``auth=ADMIN_WRITES``) in at
least one of the caller's teams, checked here, before the body is read: a
viewer cannot make the server parse a 64 MB body it would refuse anyway.
The team a write acts in is often named in the body, so the handler still
checks the role there; this check only refuses who can write nowhere."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from dashboard.models import ROLE_RANK, ApiToken, Membership, Role

from .errors import UNAUTHORIZED, ApiError

#: last_used_at is a hint for the token page, not an access log: one write a minute.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BearerToken(HttpBearer):
    """The token's user, or a 401 that says what to send (and, for a write,
    a 403 when the caller has ``write_role`` in none of their teams)."""

    def __init__(self, *, write_role: str = Role.MEMBER) -> None:
        super().__init__()
        self.write_role = write_role

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
        user = self.authenticate(request, key)
        if request.method not in SAFE_METHODS:
            require_role_somewhere(user, self.write_role)
        return user

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


def require_role_somewhere(user: Any, role: str) -> None:
    """A 403 unless ``user`` has at least ``role`` in one of their teams."""
    roles = [r for r, rank in ROLE_RANK.items() if rank >= ROLE_RANK[Role(role)]]
    memberships = Membership.objects.filter(user=user)
    if memberships.filter(role__in=roles).exists():
        return
    if not memberships.exists():
        raise ApiError(403, "You are not a member of any team yet; ask a team admin to add you.")
    raise ApiError(403, f"This needs the {role} role, which you have in none of your teams.")


def touch_token(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= TOKEN_TOUCH_INTERVAL:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


#: The auth of the routes only a team admin may call (``auth=ADMIN_WRITES``).
ADMIN_WRITES = BearerToken(write_role=Role.ADMIN)
