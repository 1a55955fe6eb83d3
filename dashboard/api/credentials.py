"""Credentials: list, add (team admins), show, delete. The secret goes in
once and never comes out."""

from __future__ import annotations

import json
from typing import Any

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Status

from dashboard.accounts import access
from dashboard.accounts.credentials import (
    BilledCheckNotConfirmed,
    CredentialForm,
    CredentialInUse,
    credential_delete,
    credential_test,
)
from dashboard.models import Credential, Role

from .auth import ADMIN_WRITES
from .errors import ApiError, FieldErrors, invalid
from .schemas import (
    MAX_ID,
    ConnectionTestIn,
    ConnectionTestOut,
    CredentialIn,
    CredentialOut,
    Error,
)
from .scope import in_path, membership_for_create

router = Router()

ViewedCredential = in_path(Credential.objects.all())
AdminCredential = in_path(Credential.objects.select_related("team"), Role.ADMIN)
MemberCredential = in_path(Credential.objects.select_related("team"), Role.MEMBER)


def credential_json(credential: Credential) -> dict[str, Any]:
    # Never the secret, not even encrypted.
    return {
        "id": credential.pk,
        "provider": credential.provider,
        "name": credential.name,
        "base_url": credential.base_url,
        "options": credential.options or {},
        "max_concurrency": credential.max_concurrency,
        "rpm": credential.requests_per_minute,
        "tpm": credential.tokens_per_minute,
    }


#: The form's field names as the API calls them.
API_FIELD_NAMES = {"requests_per_minute": "rpm", "tokens_per_minute": "tpm"}


@router.get("", response={200: list[CredentialOut], (400, 401): Error}, url_name="api_credentials")
def list_credentials(
    request: HttpRequest,
    team: int | None = Query(None, ge=1, le=MAX_ID, description="One of your teams' ids."),
) -> Any:
    """Your teams' credentials, by team and name; `team` keeps one team's."""
    credentials = access.visible(Credential.objects.all(), request.auth).order_by(
        "team__name", "name"
    )
    if team is not None:
        credentials = credentials.filter(team_id=team)
    return [credential_json(c) for c in credentials]


@router.post(
    "",
    response={201: CredentialOut, (400, 401, 403, 409, 413): Error},
    url_name="api_credentials",
    auth=ADMIN_WRITES,
)
def create_credential(request: HttpRequest, payload: CredentialIn) -> Any:
    """Add a credential (team admins). The secret is stored encrypted and never returned."""
    errors = FieldErrors()
    membership = membership_for_create(request.auth, payload.team, errors)
    errors.raise_if_any()
    assert membership is not None
    access.require_role(membership, Role.ADMIN)
    # The page's form validates, so the API and the page refuse the same things.
    form = CredentialForm(form_data(payload), team=membership.team)
    if not form.is_valid():
        raise invalid(
            {
                API_FIELD_NAMES.get(name, name): [str(m) for m in msgs]
                for name, msgs in form.errors.items()
            }
        )
    try:
        with transaction.atomic():
            credential = form.save_for(request.auth, via="api")
    except IntegrityError:
        raise ApiError(409, "Your team already has a credential with this name.") from None
    return Status(201, credential_json(credential))


def form_data(payload: CredentialIn) -> dict[str, Any]:
    """CredentialForm's POST data from a validated body."""
    default_concurrency = Credential._meta.get_field("max_concurrency").default
    return {
        "provider": payload.provider,
        "name": payload.name,
        "secret": payload.secret,
        "base_url": payload.base_url or "",
        "options": json.dumps(payload.options) if payload.options is not None else "",
        "max_concurrency": payload.max_concurrency
        if payload.max_concurrency is not None
        else default_concurrency,
        "requests_per_minute": payload.rpm if payload.rpm is not None else "",
        "tokens_per_minute": payload.tpm if payload.tpm is not None else "",
    }


@router.get(
    "/{objectid:pk}",
    response={200: CredentialOut, (400, 401, 404): Error},
    url_name="api_credential",
)
def get_credential(request: HttpRequest, credential: ViewedCredential) -> Any:
    return credential_json(credential)


@router.delete(
    "/{objectid:pk}",
    response={204: None, (400, 401, 403, 404, 409): Error},
    url_name="api_credential",
)
def delete_credential(request: HttpRequest, credential: AdminCredential) -> Any:
    """Delete a credential (team admins); its jobs stay in the history. 409 while
    it has live model instances."""
    try:
        credential_delete(credential, user=request.auth, via="api")
    except CredentialInUse as exc:
        raise ApiError(409, str(exc)) from None
    return no_content()


def no_content() -> HttpResponse:
    response = HttpResponse(status=204)
    del response["Content-Type"]  # there is no body to describe
    return response


@router.post(
    "/{objectid:pk}/test",
    response={200: ConnectionTestOut, (400, 401, 403, 404, 413): Error},
    url_name="api_credential_test",
)
def test_credential(
    request: HttpRequest, credential: MemberCredential, payload: ConnectionTestIn | None = None
) -> Any:
    """Test the credential with the provider's cheapest documented call (team
    members) and update its health. Providers with no free call need
    `confirm_billed`: the check sends a one-token request."""
    try:
        return credential_test(
            credential,
            actor=request.auth,
            model=payload.model if payload else None,
            confirm_billed=bool(payload and payload.confirm_billed),
            via="api",
        )
    except BilledCheckNotConfirmed as exc:
        raise invalid({"confirm_billed": [str(exc)]}) from None
    except ValueError as exc:
        raise invalid({"model": [str(exc)]}) from None
