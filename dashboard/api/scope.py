"""Which team a call acts in. Objects in the path go through
``access.object_for`` (another team's object is a 404); ids in a body are
looked up among the caller's teams, so another team's id reads the same as
one that does not exist."""

from __future__ import annotations

from typing import Annotated, Any

from django.db.models import QuerySet
from ninja import Path
from pydantic import PlainValidator, ValidationInfo, WithJsonSchema

from dashboard.accounts import access
from dashboard.models import Credential, Membership, Role

from .errors import ApiError, FieldErrors


def membership_for_create(user: Any, team_id: int | None, errors: FieldErrors) -> Membership | None:
    """The team a new object goes to: the one asked for, else the user's first by name."""
    memberships = Membership.objects.filter(user=user).select_related("team")
    if team_id is not None:
        membership = memberships.filter(team_id=team_id).first()
        if membership is None:
            errors.add("team", f"You are not a member of a team with id {team_id}.")
        return membership
    membership = memberships.order_by("team__name").first()
    if membership is None:
        raise ApiError(403, "You are not a member of any team yet; ask a team admin to add you.")
    return membership


def credential_for(
    user: Any, credential_id: int, team_id: int | None, *, role: str = Role.MEMBER
) -> Credential:
    """The credential a body names, with at least ``role`` in its team; a 400
    on ``credential`` when it is not one of the caller's."""
    credential = (
        access.visible(Credential.objects.select_related("team"), user)
        .filter(pk=credential_id)
        .first()
    )
    errors = FieldErrors()
    if credential is None:
        errors.add("credential", f"No credential with id {credential_id} in your teams.")
    elif team_id is not None and credential.team_id != team_id:
        errors.add("credential", f"Credential {credential_id} is not in team {team_id}.")
    errors.raise_if_any()
    assert credential is not None
    access.require_role(access.membership_in(user, credential.team_id), role)
    return credential


def in_path(queryset: QuerySet[Any], role: str = Role.VIEWER) -> Any:
    """A path parameter that is an object of the caller's teams: the URL's id,
    looked up through ``access.object_for`` while ninja reads the parameters.
    So another team's object is a 404 before a body is even read, as it is
    before anything else on the pages (and a role too low, a 403)."""

    def load(pk: int, info: ValidationInfo) -> Any:
        request = info.context["request"]
        obj, _ = access.object_for(request.auth, queryset, role=role, pk=pk)
        return obj

    return Annotated[
        queryset.model,
        PlainValidator(load),
        WithJsonSchema({"type": "integer", "minimum": 1}),
        # The URL's parameter stays ``pk``; the handler's argument is the object.
        Path(alias="pk", description="The object's id."),
    ]
