"""Webhooks (team admins, reading too: a receiver's URL is often a secret
itself): add one (its ``whsec_…`` secret is in that answer only), list,
delete, and each one's deliveries, newest first."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status

from dashboard.accounts import access
from dashboard.core import keyset
from dashboard.models import Membership, Role, Webhook
from dashboard.notify import webhooks

from .auth import ADMIN_WRITES
from .credentials import no_content
from .errors import FieldErrors, invalid
from .jobs import MAX_PAGE_SIZE, PAGE_SIZE
from .paging import list_position
from .schemas import MAX_ID, DeliveryPage, Error, WebhookCreated, WebhookIn, WebhookOut
from .scope import in_path, membership_for_create

router = Router()

AdminWebhook = in_path(Webhook.objects.select_related("team"), Role.ADMIN)
DELIVERY_PARAMS = ("limit", "cursor")


@router.post(
    "",
    response={201: WebhookCreated, (400, 401, 403, 413): Error},
    url_name="api_webhooks",
    auth=ADMIN_WRITES,
)
def create_webhook(request: HttpRequest, payload: WebhookIn) -> Any:
    """Add a webhook (team admins). Deliveries are signed per the Standard
    Webhooks spec with the returned `secret`, which no later call shows."""
    errors = FieldErrors()
    membership = membership_for_create(request.auth, payload.team, errors)
    errors.raise_if_any()
    assert membership is not None
    access.require_role(membership, Role.ADMIN)
    try:
        hook, secret = webhooks.webhook_create(
            team=membership.team,
            url=payload.url.strip(),
            events=payload.events,
            actor=request.auth,
            via="api",
        )
    except webhooks.WebhookError as exc:
        raise invalid({exc.field: [exc.message]}) from None
    return Status(201, {**webhooks.webhook_json(hook), "secret": secret})


@router.get("", response={200: list[WebhookOut], (400, 401): Error}, url_name="api_webhooks")
def list_webhooks(
    request: HttpRequest,
    team: int | None = Query(None, ge=1, le=MAX_ID, description="One of your teams' ids."),
) -> Any:
    """The webhooks of the teams where you are an admin (never their secrets)."""
    admin_of = Membership.objects.filter(user=request.auth, role=Role.ADMIN).values("team_id")
    hooks = Webhook.objects.filter(team_id__in=admin_of).order_by("-created_at", "-id")
    if team is not None:
        hooks = hooks.filter(team_id=team)
    return [webhooks.webhook_json(hook) for hook in hooks]


@router.delete(
    "/{objectid:pk}",
    response={204: None, (400, 401, 403, 404): Error},
    url_name="api_webhook",
)
def delete_webhook(request: HttpRequest, hook: AdminWebhook) -> Any:
    """Delete a webhook and its delivery log (team admins)."""
    webhooks.webhook_delete(hook, actor=request.auth, via="api")
    return no_content()


@router.get(
    "/{objectid:pk}/deliveries",
    response={200: DeliveryPage, (400, 401, 403, 404): Error},
    url_name="api_webhook_deliveries",
)
def list_deliveries(
    request: HttpRequest,
    hook: AdminWebhook,
    limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Deliveries per page."),
    cursor: str | None = Query(None, description="From a `next` URL; follow it as is."),
) -> Any:
    """The webhook's deliveries, newest first: attempts, status, the last
    answer's status code and the next attempt's time."""
    errors = FieldErrors()
    position = list_position(request, cursor, errors, known=DELIVERY_PARAMS)
    errors.raise_if_any()
    page = keyset.keyset_page(hook.deliveries.all(), position=position, size=limit)
    next_url = None
    if page.has_more:
        query = request.GET.copy()
        query["cursor"] = page.next_cursor
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"results": [webhooks.delivery_json(d) for d in page.items], "next": next_url}
