"""The one NinjaAPI: bearer tokens on every operation, DESIGN's error shape for
every failure, markup-safe JSON out, strict JSON in, and its OpenAPI schema
and docs page (served from local static files) beside the operations."""

from __future__ import annotations

import types
import typing
from typing import Any

from django.urls import reverse
from ninja import NinjaAPI, Swagger
from ninja.errors import ValidationError, ValidationErrorContext
from pydantic import BaseModel

from . import comparisons, cost, credentials, datasets, errors, instances, jobs, webhooks
from .auth import BearerToken
from .wire import Renderer, StrictJsonParser

DESCRIPTION = """\
The LLM Jobs Dashboard for scripts and notebooks: credentials, jobs, Bytez
model instances, datasets and comparisons of your teams, with their usage,
prices, budget and webhooks.

Every call sends `Authorization: Bearer <token>` (create a token on your API
tokens page, or with `manage.py create_api_token USERNAME`); here, paste it
under **Authorize**. Errors are `{"error": "...", "fields": {"field": ["..."]}}`
with 400, 401, 403, 404, 405, 409 or 413; another team's object is a 404.
Lists are newest first; follow `next` until it is null.
"""


class Docs(Swagger):
    def get_openapi_url(self, api: NinjaAPI, path_params: dict[str, Any]) -> str:
        return reverse("api_openapi", kwargs=path_params)


class DashboardApi(NinjaAPI):
    """The patterns are mounted without a namespace (``api_jobs``, as before),
    so the few places ninja reverses its own names look up ours."""

    def get_root_path(self, path_params: dict[str, Any]) -> str:
        return reverse("api_root", kwargs=path_params)

    def get_content_type(self) -> str:
        # JSON is UTF-8 by definition (RFC 8259); scripts compare this header.
        return "application/json"

    def get_openapi_operation_id(self, operation: Any) -> str:
        # Short names, so a generated client reads jobs.list_jobs(), not a module path.
        return operation.view_func.__name__

    def validation_error_from_error_contexts(
        self, error_contexts: list[ValidationErrorContext]
    ) -> ValidationError:
        """ninja's errors, plus the fields a body takes beside each unknown
        one, so the message can say what was meant."""
        error = super().validation_error_from_error_contexts(error_contexts)
        models = {context.model.__ninja_param_source__: context.model for context in error_contexts}
        for item in error.errors:
            if item.get("type") == "extra_forbidden":
                source, *path = item["loc"]
                item["expected"] = sorted(_fields_at(models.get(source), path[:-1]))
        return error


def _fields_at(model: Any, path: list[Any]) -> list[str]:
    """The field names of the schema found at ``path`` inside ``model``."""
    for name in path:
        field = getattr(model, "model_fields", {}).get(name)
        model = _schema_of(field.annotation) if field else None
    return list(getattr(model, "model_fields", {}))


def _schema_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return next(filter(None, map(_schema_of, typing.get_args(annotation))), None)
    return None


api = DashboardApi(
    title="LLM Jobs Dashboard API",
    version="1",
    description=DESCRIPTION,
    auth=BearerToken(),
    renderer=Renderer(),
    parser=StrictJsonParser(),
    # No online validator badge: the docs page makes no request off this host.
    docs=Docs(settings={"validatorUrl": None}),
)
errors.install(api)
api.add_router("/credentials", credentials.router, tags=["credentials"])
api.add_router("/jobs", jobs.router, tags=["jobs"])
api.add_router("/instances", instances.router, tags=["instances"])
api.add_router("/datasets", datasets.router, tags=["datasets"])
api.add_router("/comparisons", comparisons.router, tags=["comparisons"])
api.add_router("", cost.router, tags=["cost"])
api.add_router("/webhooks", webhooks.router, tags=["webhooks"])
