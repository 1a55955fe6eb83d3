"""Datasets: upload (a multipart file, or JSON rows), list, show with a preview.

The upload reads its body itself: a file goes through the byte-limited upload
handler (an oversized one is a 413 before it is all on disk) and the
streaming readers; JSON rows through the API's strict parser. Either way a
dataset is saved whole or not at all, and a 400 names the line and why."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Status
from ninja.errors import ValidationError
from pydantic import ValidationError as PydanticError

from dashboard.accounts import access
from dashboard.core import keyset
from dashboard.core.uploads import limit_uploads, too_large_message
from dashboard.datasets.parsing import DatasetError, Limits, read_file, read_records
from dashboard.datasets.services import (
    PREVIEW_ROWS,
    clean_name,
    dataset_create,
    dataset_preview,
)
from dashboard.models import Dataset, Role

from .errors import ApiError, FieldErrors
from .paging import list_position
from .schemas import (
    MAX_ID,
    DatasetDetail,
    DatasetOut,
    DatasetPage,
    DatasetRowsIn,
    Error,
)
from .scope import in_path, membership_for_create
from .wire import StrictJsonParser

router = Router()

ViewedDataset = in_path(Dataset.objects.select_related("created_by"))
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200

UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "CSV with a header row (UTF-8, with or without a BOM), "
                        "JSONL (one object a line) or XLSX (first sheet, header row).",
                    },
                    "name": {"type": "string", "description": "Default: the file's name."},
                    "team": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                },
            }
        },
        "application/json": {"schema": DatasetRowsIn.model_json_schema()},
    },
}


def dataset_json(dataset: Dataset, *, preview: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": dataset.pk,
        "name": dataset.name,
        "columns": dataset.columns,
        "rows": dataset.row_count,
        "source": dataset.source,
        "team": dataset.team_id,
        "created_by": dataset.created_by.get_username() if dataset.created_by else None,
        "created_at": dataset.created_at,
    }
    if preview:
        data["preview"] = dataset_preview(dataset, limit=PREVIEW_ROWS)
    return data


@router.post(
    "",
    response={201: DatasetOut, (400, 401, 403, 413): Error},
    url_name="api_datasets",
    openapi_extra={"requestBody": UPLOAD_BODY},
)
def create_dataset(request: HttpRequest) -> Any:
    """Upload a dataset (team members): a multipart `file` (and `name`), or JSON
    `{"name", "rows": [{column: value}, …]}`. A file that cannot be read is a
    400 naming the line and why; past the size or row limits, 413."""
    limit_uploads(request)  # before anything reads the body
    kind = request.content_type or ""
    errors = FieldErrors()
    if kind == "multipart/form-data":
        files = request.FILES  # reads the body, through the limited handler
        if getattr(request, "upload_too_large", False):
            raise ApiError(413, too_large_message(), {"file": [too_large_message()]})
        upload = files.get("file")
        if upload is None:
            raise ApiError(
                400, "Send the dataset as a file field named “file”.", {"file": ["Required."]}
            )
        team_id = _team_field(request.POST.get("team"), errors)
        name = request.POST.get("name") or upload.name.rsplit(".", 1)[0] or upload.name
        source: dict[str, Any] = {"file_name": upload.name, "size_bytes": upload.size}
        field = "file"
    elif kind == "application/json":
        payload = _rows_body(request)
        team_id, name, field = payload.team, payload.name, "rows"
        source = {"size_bytes": len(request.body)}
    else:
        raise ApiError(
            400, 'Send multipart/form-data with a file (and a name), or JSON {"name", "rows"}.'
        )
    try:
        name = clean_name(name)
    except DatasetError as exc:
        errors.add("name", str(exc))
    membership = membership_for_create(request.auth, team_id, errors)
    errors.raise_if_any()
    assert membership is not None
    access.require_role(membership, Role.MEMBER)
    limits = Limits.from_settings()
    try:
        rows = (
            read_file(upload, name=upload.name, size=upload.size, limits=limits)
            if field == "file"
            else read_records(payload.rows, limits)
        )
        dataset = dataset_create(
            team=membership.team, name=name, rows=rows, user=request.auth, via="api", **source
        )
    except DatasetError as exc:
        raise ApiError(413 if exc.too_large else 400, str(exc), {field: [str(exc)]}) from None
    dataset.created_by = request.auth
    return Status(201, dataset_json(dataset))


def _team_field(raw: str | None, errors: FieldErrors) -> int | None:
    if raw in (None, ""):
        return None
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= MAX_ID:
        errors.add("team", "Must be a team id (a whole number).")
        return None
    return int(raw)


def _rows_body(request: HttpRequest) -> DatasetRowsIn:
    data = StrictJsonParser().parse_body(request)
    if data is None:
        raise ApiError(400, "The body must be a JSON object with name and rows.")
    try:
        return DatasetRowsIn.model_validate(data)
    except PydanticError as exc:
        raise ValidationError(
            [{**error, "loc": ("body", "payload", *error["loc"])} for error in exc.errors()]
        ) from None


@router.get("", response={200: DatasetPage, (400, 401): Error}, url_name="api_datasets")
def list_datasets(
    request: HttpRequest,
    limit: int = Query(PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE, description="Datasets per page."),
    cursor: str | None = Query(None, description="From a `next` URL; follow it as is."),
) -> Any:
    """Your teams' datasets, newest first."""
    errors = FieldErrors()
    position = list_position(request, cursor, errors)
    errors.raise_if_any()
    page = keyset.keyset_page(
        access.visible(Dataset.objects.select_related("created_by"), request.auth),
        position=position,
        size=limit,
    )
    next_url = None
    if page.has_more:
        query = request.GET.copy()
        query["cursor"] = page.next_cursor
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"results": [dataset_json(d) for d in page.items], "next": next_url}


@router.get(
    "/{objectid:pk}", response={200: DatasetDetail, (400, 401, 404): Error}, url_name="api_dataset"
)
def get_dataset(request: HttpRequest, dataset: ViewedDataset) -> Any:
    """A dataset, with its first 20 rows."""
    return dataset_json(dataset, preview=True)
