"""Bytez model instances: request (load), list, show, shut down."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status

from dashboard.accounts import access
from dashboard.instances.serialize import instance_json
from dashboard.instances.services import InstanceError, instance_request, instance_shutdown
from dashboard.models import ModelInstance, Role
from dashboard.status import INSTANCE_LIVE, InstanceStatus

from .errors import ApiError, invalid
from .schemas import MAX_ID, Error, InstanceCreated, InstanceIn, InstanceOut
from .scope import credential_for, in_path

router = Router()

ViewedInstance = in_path(ModelInstance.objects.all())
MemberInstance = in_path(ModelInstance.objects.select_related("credential", "team"), Role.MEMBER)

#: The list is not paged: a team has a handful of instances, not thousands.
MAX_LISTED = 200


@router.get("", response={200: list[InstanceOut], (400, 401): Error}, url_name="api_instances")
def list_instances(
    request: HttpRequest,
    team: int | None = Query(None, ge=1, le=MAX_ID, description="One of your teams' ids."),
) -> Any:
    """Your teams' model instances, newest first (the latest 200)."""
    instances = access.visible(ModelInstance.objects.all(), request.auth).order_by(
        "-created_at", "-id"
    )
    if team is not None:
        instances = instances.filter(team_id=team)
    return [instance_json(i) for i in instances[:MAX_LISTED]]


@router.post(
    "",
    response={201: InstanceCreated, (400, 401, 403, 409, 413): Error},
    url_name="api_instances",
)
def create_instance(request: HttpRequest, payload: InstanceIn) -> Any:
    """Ask the provider to prepare a model and load it (team members); 409 while
    the model already has a live instance on this credential."""
    credential = credential_for(request.auth, payload.credential, payload.team)
    # Ranges, the provider's support and "one live instance per model" are the
    # lifecycle service's rules.
    settings_given = payload.model_dump(
        include={"concurrency", "expiration_seconds"}, exclude_none=True
    )
    try:
        instance = instance_request(
            team=credential.team,
            credential=credential,
            model=payload.model,
            user=request.auth,
            via="api",
            **settings_given,
        )
    except InstanceError as exc:
        raise refused(exc) from None
    return Status(201, {"id": instance.pk, "status": instance.status})


def refused(exc: InstanceError) -> ApiError:
    """The lifecycle service's refusal: 409 when a live instance is in the way,
    else 400 on the field it names."""
    if exc.existing is not None:
        return ApiError(409, exc.message)
    return invalid({exc.field: [exc.message]}) if exc.field else ApiError(400, exc.message)


@router.get(
    "/{objectid:pk}", response={200: InstanceOut, (400, 401, 404): Error}, url_name="api_instance"
)
def get_instance(request: HttpRequest, instance: ViewedInstance) -> Any:
    return instance_json(instance)


@router.delete(
    "/{objectid:pk}",
    response={200: InstanceOut, (400, 401, 403, 404, 409, 502): Error},
    url_name="api_instance",
)
def delete_instance(request: HttpRequest, instance: MemberInstance) -> Any:
    """Shut the instance down (team members): 200 with status `stopped`, also when it
    already was; 409 when it ended otherwise; 502 when the provider refused."""
    if instance.status == InstanceStatus.STOPPED:
        return instance_json(instance)  # DELETE is idempotent
    if instance.status not in INSTANCE_LIVE:
        raise ApiError(409, f"Instance {instance.pk} already ended ({instance.status}).")
    # Synchronous, so the answer can say "stopped" (DESIGN); the service never holds a lock.
    instance_shutdown(instance=instance, user=request.auth, via="api")
    instance = ModelInstance.objects.get(pk=instance.pk)
    if instance.status != InstanceStatus.STOPPED:
        # The service keeps the provider's refusal on the row rather than raising.
        reason = instance.error or f"the instance is {instance.status}"
        raise ApiError(502, f"The provider did not shut the instance down: {reason}")
    return instance_json(instance)
