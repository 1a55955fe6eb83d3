"""The JSON API under ``/api/v1/`` (README: "JSON API"), for scripts and notebooks.

Plain function views. A request authenticates with ``Authorization: Bearer
<token>`` and never with the session cookie, so there is no CSRF to check.
Every answer is JSON, errors included: ``{"error", "fields"}`` with 400, 401,
403, 404, 405, 409 (413 for an oversized body), never an HTML page, and bad
input never a 500.

Validation is the web's own, so the API and the pages accept and refuse the
same things: credentials go through ``CredentialForm``; a job's fields through
``JobForm``'s field limits, then :func:`check_job_spec` (prompt limits and the
provider adapter's ``validate``). The API only adds what a form gets for free
from HTML: strict JSON types.

Objects belong to a team; a token acts for its user, who sees the objects of
every team they are in. Another team's object is a 404, as on the pages.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from dashboard.accounts import access
from dashboard.accounts.audit import audit
from dashboard.accounts.credentials import CredentialForm
from dashboard.core import keyset
from dashboard.instances.services import InstanceError, instance_request, instance_shutdown
from dashboard.jobs import results
from dashboard.jobs.forms import SPEC_FIELDS, JobForm, check_job_spec, spec_from_data
from dashboard.jobs.services import job_cancel, job_create, job_retry
from dashboard.models import ApiToken, Credential, Job, JobEvent, Membership, ModelInstance, Role
from dashboard.status import INSTANCE_LIVE, InstanceStatus, JobStatus
from providers import PROVIDERS, JobSpec, get_provider_class

logger = logging.getLogger(__name__)

#: last_used_at is a hint for the token page, not an access log: one write a minute.
TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)
PAGE_SIZE = 50
#: A job's ``outputs`` are given up to this many items; above, page the items.
OUTPUTS_MAX = 1000
MAX_PAGE_SIZE = 200
#: Bigger than any job id; keeps a huge id from overflowing the database integer.
MAX_ID = 2**63 - 1


# --- errors -------------------------------------------------------------------------


class ApiError(Exception):
    """An answer other than success: status, readable message, per-field messages."""

    def __init__(
        self,
        status: int,
        message: str,
        fields: Mapping[str, list[str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = dict(fields or {})
        self.headers = dict(headers or {})

    def response(self) -> SafeJsonResponse:
        response = error_response(self.status, self.message, self.fields)
        for name, value in self.headers.items():
            response[name] = value
        return response


class _MarkupSafeEncoder(DjangoJSONEncoder):
    """Model output is untrusted: "<", ">" and "&" go out as \\u escapes, so no
    answer holds markup even if something renders it as HTML."""

    def encode(self, o: Any) -> str:
        return (
            super()
            .encode(o)
            .replace("<", "\\u003c")
            .replace(">", "\\u003e")
            .replace("&", "\\u0026")
        )


class SafeJsonResponse(JsonResponse):
    def __init__(self, data: Any, **kwargs: Any) -> None:
        kwargs.setdefault("encoder", _MarkupSafeEncoder)
        super().__init__(data, **kwargs)


def error_response(
    status: int, message: str, fields: Mapping[str, list[str]] | None = None
) -> SafeJsonResponse:
    return SafeJsonResponse({"error": message, "fields": dict(fields or {})}, status=status)


class FieldErrors:
    """Collects every field's problems so one 400 names them all."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, *messages: str) -> None:
        self.errors.setdefault(field, []).extend(messages)

    def merge(self, errors: Mapping[str, Iterable[str]]) -> None:
        for field, messages in errors.items():
            self.add(field, *messages)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise invalid(self.errors)


def invalid(fields: Mapping[str, list[str]]) -> ApiError:
    """A 400 naming every problem; errors of no one field (``__all__``) lead the message."""
    fields = dict(fields)
    general = fields.pop("__all__", [])
    parts = [*general, *(f"{name}: {messages[0]}" for name, messages in fields.items())]
    return ApiError(400, "Invalid input: " + "; ".join(parts), fields)


# --- authentication and dispatch -------------------------------------------------------


def authenticate(request: HttpRequest) -> Any:
    """The token's user, or 401. Only the key's SHA-256 is stored, so look it up by hash."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(
            401,
            "Send an API token as 'Authorization: Bearer <token>' "
            "(create one on the API tokens page or with manage.py create_api_token).",
            headers={"WWW-Authenticate": 'Bearer realm="api"'},
        )
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=ApiToken.hash(key), revoked_at__isnull=True)
        .first()
    )
    if token is None or not token.user.is_active:
        raise ApiError(
            401,
            "This API token is unknown or was revoked.",
            headers={"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'},
        )
    touch_token(token)
    return token.user


def touch_token(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= TOKEN_TOUCH_INTERVAL:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


Handler = Callable[..., HttpResponse]


def endpoint(**handlers: Handler) -> Handler:
    """One URL's view: authenticate, pick the handler by method, answer errors as JSON."""
    allowed = ", ".join(sorted(handlers))

    @csrf_exempt
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        try:
            request.user = authenticate(request)
            handler = handlers.get(request.method or "")
            if handler is None:
                raise ApiError(
                    405,
                    f"{request.method} is not allowed on {request.path}; use {allowed}.",
                    headers={"Allow": allowed},
                )
            return handler(request, **kwargs)
        except ApiError as exc:
            return exc.response()
        except Http404:
            return error_response(404, "No such object in your teams.")
        except PermissionDenied as exc:
            return error_response(403, str(exc) or "You may not do this.")
        except RequestDataTooBig:
            return error_response(413, "The request body is too large.")
        except Exception:
            # A bug, not bad input; still JSON, so scripts can parse every answer.
            logger.exception("API %s %s failed", request.method, request.path)
            return error_response(500, "Internal error; it has been logged.")

    return view


@csrf_exempt
def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> SafeJsonResponse:
    return error_response(404, f"There is no API endpoint at {request.path}.")


# --- reading the body -------------------------------------------------------------------


def read_body(request: HttpRequest, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object (an empty body is ``{}`` when not required)."""
    raw = request.body
    if not raw.strip():
        if required:
            raise ApiError(400, "The body must be a JSON object; it is empty.")
        return {}
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {_short(exc)}") from None
    if not isinstance(data, dict):
        raise ApiError(400, f"The body must be a JSON object, not {json_type(data)}.")
    nul = [key for key, value in data.items() if _has_nul(key) or _has_nul(value)]
    if nul:
        raise invalid(
            {str(key).replace("\x00", ""): ["Text may not contain NUL characters."] for key in nul}
        )
    return data


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _short(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 120 else text[:119] + "…"


def _has_nul(value: Any) -> bool:
    """True when a NUL character hides anywhere in a JSON value (PostgreSQL refuses them)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "string": (lambda v: isinstance(v, str), "a string"),
    "integer": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "number": (lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
    "boolean": (lambda v: isinstance(v, bool), "true or false"),
    "object": (lambda v: isinstance(v, dict), "a JSON object"),
}


def take(
    body: Mapping[str, Any], name: str, kind: str, errors: FieldErrors, *, required: bool = False
) -> Any:
    """``body[name]`` if it has the JSON type ``kind``; None (and an error) otherwise."""
    value = body.get(name)
    if value is None:
        if required:
            errors.add(name, "This field is required.")
        return None
    check, label = _TYPES[kind]
    if not check(value):
        errors.add(name, f"Must be {label}, not {json_type(value)}.")
        return None
    return value


def take_id(
    body: Mapping[str, Any], name: str, errors: FieldErrors, *, required: bool = False
) -> int | None:
    value = take(body, name, "integer", errors, required=required)
    if value is not None and not 1 <= value <= MAX_ID:
        errors.add(name, "Must be a positive id.")
        return None
    return value


def reject_unknown(body: Mapping[str, Any], known: Iterable[str], errors: FieldErrors) -> None:
    """A misspelt field is refused rather than silently ignored."""
    known = set(known)
    expected = f"expected one of {', '.join(sorted(known))}" if known else "this call takes none"
    for name in body:
        if name not in known:
            errors.add(str(name), f"Unknown field; {expected}.")


# --- teams and roles ----------------------------------------------------------------------


def visible_or_404(
    queryset: QuerySet[Any], user: Any, pk: str | int, role: str = Role.VIEWER
) -> Any:
    obj, _ = access.object_for(user, queryset, role=role, pk=int(pk))
    return obj


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
    user: Any, credential_id: int | None, team_id: int | None, errors: FieldErrors
) -> Credential | None:
    """The credential a body refers to. One the user cannot see reads the same as
    one that does not exist, so ids of other teams are not revealed."""
    if credential_id is None:
        return None
    credential = (
        access.visible(Credential.objects.select_related("team"), user)
        .filter(pk=credential_id)
        .first()
    )
    if credential is None:
        errors.add("credential", f"No credential with id {credential_id} in your teams.")
        return None
    if team_id is not None and credential.team_id != team_id:
        errors.add("credential", f"Credential {credential_id} is not in team {team_id}.")
        return None
    return credential


# --- answer shapes ---------------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def credential_json(credential: Credential) -> dict[str, Any]:
    # Never the secret, not even encrypted.
    return {
        "id": credential.pk,
        "provider": credential.provider,
        "name": credential.name,
        "base_url": credential.base_url,
        "options": credential.options or {},
        "max_concurrency": credential.max_concurrency,
    }


def job_json(job: Job, *, with_log: bool = True) -> dict[str, Any]:
    rows = results.job_rows(job) if job.progress_total <= OUTPUTS_MAX else None
    data: dict[str, Any] = {
        "id": job.pk,
        "provider": job.provider,
        "model": job.model,
        "status": job.status,
        "provider_status": job.provider_status,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "outputs": [row["output"] for row in rows] if rows is not None else None,
        "counts": job.counts,
        "log": job_log(job) if with_log else None,
        "error": job.error,
        "created_by": job.created_by.get_username() if job.created_by else None,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "output_errors": {str(r["index"]): r["error"] for r in rows or [] if r["error"]},
        "credential": job.credential_id,
        "credential_name": job.credential_name,
        "team": job.team_id,
        "retry_of": job.retry_of_id,
        "spec": job.spec,
    }
    if not with_log:
        del data["log"]
    return data


def job_log(job: Job) -> str:
    """The provider's log or streamed output where there is one, else the timeline."""
    output_kinds = (JobEvent.Kind.LOG, JobEvent.Kind.STREAM)
    chunks = job.events.filter(kind__in=output_kinds).order_by("unit", "id")
    by_unit: dict[int | None, list[str]] = {}
    for unit, message in chunks.values_list("unit", "message"):
        by_unit.setdefault(unit, []).append(message)
    if by_unit:
        # Prompts run side by side: each prompt's text stays in one piece.
        return "\n".join("".join(parts) for parts in by_unit.values())
    # Reviewers' notes are comments on the job, not part of its own timeline.
    timeline = job.events.exclude(kind__in=(*output_kinds, JobEvent.Kind.NOTE)).order_by("id")
    return "\n".join(
        f"{timezone.localtime(event.created_at):%H:%M:%S} {event.message}"
        for event in timeline.only("message", "created_at")
    )


def instance_json(instance: ModelInstance) -> dict[str, Any]:
    return {
        "id": instance.pk,
        "model": instance.model,
        "status": instance.status,
        "provider_status": instance.provider_status,
        "concurrency": instance.concurrency,
        "inferences": instance.inferences,
        "expires_at": iso(instance.expires_at),
        "error": instance.error,
        "credential": instance.credential_id,
        "team": instance.team_id,
        "created_at": iso(instance.created_at),
    }


# --- credentials ------------------------------------------------------------------------------

CREDENTIAL_FIELDS = ("provider", "name", "secret", "base_url", "options", "max_concurrency", "team")


def credential_list(request: HttpRequest) -> SafeJsonResponse:
    credentials = access.visible(Credential.objects.all(), request.user).order_by(
        "team__name", "name"
    )
    team = _query_id(request.GET, "team")
    if team is not None:
        credentials = credentials.filter(team_id=team)
    return SafeJsonResponse([credential_json(c) for c in credentials], safe=False)


def credential_get(request: HttpRequest, pk: str) -> SafeJsonResponse:
    return SafeJsonResponse(
        credential_json(visible_or_404(Credential.objects.all(), request.user, pk))
    )


def credential_create(request: HttpRequest) -> SafeJsonResponse:
    body = read_body(request)
    errors = FieldErrors()
    reject_unknown(body, CREDENTIAL_FIELDS, errors)
    for name in ("provider", "name", "secret", "base_url"):
        take(body, name, "string", errors)
    take(body, "options", "object", errors)
    take(body, "max_concurrency", "integer", errors)
    team_id = take_id(body, "team", errors)
    errors.raise_if_any()
    membership = membership_for_create(request.user, team_id, errors)
    errors.raise_if_any()
    assert membership is not None
    access.require_role(membership, Role.ADMIN)
    form = CredentialForm(credential_form_data(body), team=membership.team)
    if not form.is_valid():
        raise form_invalid(form)
    try:
        with transaction.atomic():
            credential = form.save_for(request.user, via="api")
    except IntegrityError:
        raise ApiError(409, "Your team already has a credential with this name.") from None
    return SafeJsonResponse(credential_json(credential), status=201)


def credential_form_data(body: Mapping[str, Any]) -> dict[str, Any]:
    """CredentialForm's POST data from a JSON body (already type-checked)."""
    data = {name: body[name] for name in ("provider", "name", "secret") if name in body}
    data["base_url"] = body.get("base_url") or ""
    options = body.get("options")
    data["options"] = json.dumps(options) if options is not None else ""
    data["max_concurrency"] = body.get(
        "max_concurrency", Credential._meta.get_field("max_concurrency").default
    )
    return data


def form_invalid(form: Any) -> ApiError:
    return invalid({name: [str(m) for m in messages] for name, messages in form.errors.items()})


def credential_delete(request: HttpRequest, pk: str) -> HttpResponse:
    credential = visible_or_404(
        Credential.objects.select_related("team"), request.user, pk, Role.ADMIN
    )
    blocker = credential.delete_blocker()
    if blocker:
        return error_response(409, blocker)
    with transaction.atomic():
        audit(request.user, credential.team, "credential.deleted", credential, via="api")
        credential.delete()
    return HttpResponse(status=204)


# --- jobs ---------------------------------------------------------------------------------------

JOB_FIELDS = ("credential", "model", "prompts", *SPEC_FIELDS, "options", "stream", "team")
#: JSON type of each optional spec field; the limits come from JobForm's fields.
SPEC_TYPES = {
    "question": "string",
    "system_prompt": "string",
    "max_tokens": "integer",
    "temperature": "number",
    "top_p": "number",
    "top_k": "integer",
    "repetition_penalty": "number",
    "output_schema": "object",
}


def job_spec_from_json(
    body: Mapping[str, Any], credential: Credential | None, errors: FieldErrors
) -> JobSpec | None:
    """A JobSpec from a request body, or None with the problems added to ``errors``."""
    values: dict[str, Any] = {
        "model": form_field_clean(
            "model", take(body, "model", "string", errors, required=True), errors
        ),
        "prompt_list": take_prompts(body, errors),
        "options": take(body, "options", "object", errors) or {},
        "stream": take(body, "stream", "boolean", errors) or False,
    }
    for name, kind in SPEC_TYPES.items():
        value = take(body, name, kind, errors)
        values[name] = value if kind == "object" else form_field_clean(name, value, errors)
    if credential is None or errors:
        return None
    cls = get_provider_class(credential.provider)
    unused = [
        n
        for n in SPEC_FIELDS
        if values.get(n) not in (None, "", {}) and n not in cls.supported_fields
    ]
    for name in unused:
        errors.add(name, f"{cls.label} does not use {name}; leave it out.")
    if values["stream"] and not cls.supports_stream:
        errors.add("stream", f"{cls.label} cannot stream output.")
    if errors:
        return None
    allowed = cls.supported_fields | ({"stream"} if cls.supports_stream else set())
    spec = spec_from_data(values, allowed)
    errors.merge(check_job_spec(credential, spec))
    return None if errors else spec


def form_field_clean(name: str, value: Any, errors: FieldErrors) -> Any:
    """JobForm's own field for ``name`` checks the value's limits (range, length)."""
    if value is None:
        return None
    try:
        return JobForm.base_fields[name].clean(value)
    except ValidationError as exc:
        errors.add(name, *exc.messages)
        return None


def take_prompts(body: Mapping[str, Any], errors: FieldErrors) -> list[str] | None:
    prompts = body.get("prompts")
    if prompts is None:
        errors.add("prompts", "This field is required.")
        return None
    if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
        errors.add("prompts", "Must be a list of strings.")
        return None
    blank = [i for i, p in enumerate(prompts) if not p.strip()]
    if blank:
        errors.add("prompts", f"Prompt {blank[0] + 1} is empty.")
        return None
    return prompts


def job_list(request: HttpRequest) -> SafeJsonResponse:
    params = request.GET
    errors = FieldErrors()
    reject_unknown(params, JOB_FILTERS + ("limit", "cursor", "team"), errors)
    limit = _page_size(params.get("limit"), errors)
    jobs = filter_jobs(access.visible(Job.objects.all(), request.user), params, errors)
    position = None
    if params.get("cursor"):
        position = keyset.cursor_decode(params["cursor"])
        if position is None:
            errors.add("cursor", "Not a cursor from this API; follow the 'next' URL as it is.")
    errors.raise_if_any()
    page = keyset.keyset_page(
        jobs.select_related("created_by").defer("raw_result"), position=position, size=limit
    )
    next_url = None
    if page.has_more:
        query = params.copy()
        query["cursor"] = page.next_cursor
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return SafeJsonResponse(
        {"results": [job_json(job, with_log=False) for job in page.items], "next": next_url}
    )


JOB_FILTERS = ("status", "provider", "model", "created_by")


def filter_jobs(jobs: QuerySet[Job], params: QueryDict, errors: FieldErrors) -> QuerySet[Job]:
    """The list's filters; ``status`` and ``provider`` take comma-separated values."""
    status = _choices(params.get("status"), JobStatus.values, "status", errors)
    if status:
        jobs = jobs.filter(status__in=status)
    provider = _choices(params.get("provider"), list(PROVIDERS), "provider", errors)
    if provider:
        jobs = jobs.filter(provider__in=provider)
    if params.get("model"):
        jobs = jobs.filter(model=params["model"])
    if params.get("created_by"):
        jobs = jobs.filter(created_by__username=params["created_by"])
    team = _query_id(params, "team", errors)
    if team is not None:
        jobs = jobs.filter(team_id=team)
    return jobs


def _choices(raw: str | None, allowed: list[str], name: str, errors: FieldErrors) -> list[str]:
    values = [v.strip() for v in (raw or "").split(",") if v.strip()]
    unknown = [v for v in values if v not in allowed]
    if unknown:
        errors.add(name, f"Unknown {name} {unknown[0]!r}; one of {', '.join(allowed)}.")
    return values


def _page_size(raw: str | None, errors: FieldErrors) -> int:
    if raw in (None, ""):
        return PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        errors.add("limit", f"Must be a whole number from 1 to {MAX_PAGE_SIZE}.")
        return PAGE_SIZE
    return int(raw)


def _query_id(params: QueryDict, name: str, errors: FieldErrors | None = None) -> int | None:
    raw = params.get(name)
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_ID:
        if errors is None:
            raise ApiError(400, f"{name} must be an id.", {name: ["Must be a positive id."]})
        errors.add(name, "Must be a positive id.")
        return None
    return int(raw)


def job_submit(request: HttpRequest) -> SafeJsonResponse:
    body = read_body(request)
    errors = FieldErrors()
    reject_unknown(body, JOB_FIELDS, errors)
    team_id = take_id(body, "team", errors)
    credential_id = take_id(body, "credential", errors, required=True)
    credential = credential_for(request.user, credential_id, team_id, errors)
    if credential is not None:
        access.require_role(access.membership_in(request.user, credential.team_id), Role.MEMBER)
    spec = job_spec_from_json(body, credential, errors)
    errors.raise_if_any()
    assert credential is not None and spec is not None
    with transaction.atomic():
        job = job_create(team=credential.team, credential=credential, spec=spec, user=request.user)
        audit(
            request.user,
            credential.team,
            "job.submitted",
            job,
            provider=job.provider,
            model=job.model,
            via="api",
        )
    return SafeJsonResponse({"id": job.pk, "status": job.status}, status=201)


def job_get(request: HttpRequest, pk: str) -> SafeJsonResponse:
    job = visible_or_404(Job.objects.select_related("created_by"), request.user, pk)
    return SafeJsonResponse(job_json(job))


def job_cancel_api(request: HttpRequest, pk: str) -> SafeJsonResponse:
    job = visible_or_404(Job.objects.select_related("team"), request.user, pk, Role.MEMBER)
    errors = FieldErrors()
    reject_unknown(read_body(request, required=False), (), errors)
    errors.raise_if_any()
    if not job_cancel(job, user=request.user):
        job.refresh_from_db(fields=["status"])
        raise ApiError(409, f"Job {job.pk} is already {job.status}; nothing to cancel.")
    audit(request.user, job.team, "job.cancelled", job, via="api")
    return SafeJsonResponse(job_json(Job.objects.select_related("created_by").get(pk=job.pk)))


def job_retry_api(request: HttpRequest, pk: str) -> SafeJsonResponse:
    job = visible_or_404(
        Job.objects.select_related("team", "credential"), request.user, pk, Role.MEMBER
    )
    body = read_body(request, required=False)
    errors = FieldErrors()
    reject_unknown(body, ("failed_only",), errors)
    failed_only = take(body, "failed_only", "boolean", errors) or False
    errors.raise_if_any()
    try:
        with transaction.atomic():
            new = job_retry(job, user=request.user, failed_only=failed_only)
            audit(request.user, job.team, "job.retried", job, new_job=new.pk, via="api")
    except ValueError as exc:
        raise ApiError(409, str(exc)) from None
    return SafeJsonResponse(job_json(new), status=201)


# --- model instances ------------------------------------------------------------------------------

INSTANCE_FIELDS = ("credential", "model", "concurrency", "expiration_seconds", "team")


def instance_list(request: HttpRequest) -> SafeJsonResponse:
    instances = access.visible(ModelInstance.objects.all(), request.user).order_by(
        "-created_at", "-id"
    )
    team = _query_id(request.GET, "team")
    if team is not None:
        instances = instances.filter(team_id=team)
    return SafeJsonResponse([instance_json(i) for i in instances[:MAX_PAGE_SIZE]], safe=False)


def instance_get(request: HttpRequest, pk: str) -> SafeJsonResponse:
    return SafeJsonResponse(
        instance_json(visible_or_404(ModelInstance.objects.all(), request.user, pk))
    )


def instance_create(request: HttpRequest) -> SafeJsonResponse:
    body = read_body(request)
    errors = FieldErrors()
    reject_unknown(body, INSTANCE_FIELDS, errors)
    team_id = take_id(body, "team", errors)
    credential = credential_for(
        request.user, take_id(body, "credential", errors, required=True), team_id, errors
    )
    if credential is not None:
        access.require_role(access.membership_in(request.user, credential.team_id), Role.MEMBER)
    model = take(body, "model", "string", errors, required=True)
    # Ranges, the provider's support and "one live instance per model" are the
    # lifecycle service's rules; only JSON types are checked here.
    settings_given = {
        name: value
        for name in ("concurrency", "expiration_seconds")
        if (value := take(body, name, "integer", errors)) is not None
    }
    errors.raise_if_any()
    assert credential is not None
    try:
        instance = instance_request(
            team=credential.team,
            credential=credential,
            model=model,
            user=request.user,
            **settings_given,
        )
    except InstanceError as exc:
        raise refused(exc) from None
    audit(
        request.user,
        credential.team,
        "instance.requested",
        instance,
        model=instance.model,
        via="api",
    )
    return SafeJsonResponse({"id": instance.pk, "status": instance.status}, status=201)


def refused(exc: InstanceError) -> ApiError:
    """The lifecycle service's refusal: 409 when a live instance is in the way,
    else 400 on the field it names."""
    if exc.existing is not None:
        return ApiError(409, exc.message)
    return invalid({exc.field: [exc.message]}) if exc.field else ApiError(400, exc.message)


def instance_delete(request: HttpRequest, pk: str) -> SafeJsonResponse:
    instance = visible_or_404(
        ModelInstance.objects.select_related("credential", "team"), request.user, pk, Role.MEMBER
    )
    if instance.status == InstanceStatus.STOPPED:
        return SafeJsonResponse(instance_json(instance))  # DELETE is idempotent
    if instance.status not in INSTANCE_LIVE:
        raise ApiError(409, f"Instance {instance.pk} already ended ({instance.status}).")
    instance_shutdown(instance=instance, user=request.user)
    instance = ModelInstance.objects.get(pk=instance.pk)
    if instance.status != InstanceStatus.STOPPED:
        # The service keeps the provider's refusal on the row rather than raising.
        reason = instance.error or f"the instance is {instance.status}"
        raise ApiError(502, f"The provider did not shut the instance down: {reason}")
    audit(
        request.user, instance.team, "instance.shutdown", instance, model=instance.model, via="api"
    )
    return SafeJsonResponse(instance_json(instance))
