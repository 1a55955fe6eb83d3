"""Datasets pages: the team's datasets with upload and paste, a dataset's
page (its columns and first rows, rename, delete), and the template preview
partial the new-job and comparison forms ask for as the template is typed."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST

from dashboard.accounts import access
from dashboard.accounts.access import require_membership
from dashboard.accounts.audit import audit
from dashboard.core import keyset
from dashboard.core.params import int_param
from dashboard.core.uploads import limit_uploads, too_large_message
from dashboard.datasets.forms import DatasetPasteForm, DatasetRenameForm, DatasetUploadForm
from dashboard.datasets.parsing import DatasetError, Limits, read_file, read_pasted
from dashboard.datasets.services import (
    PREVIEW_ROWS,
    dataset_create,
    dataset_delete,
    dataset_preview,
    dataset_rename,
    template_preview,
)
from dashboard.datasets.template import TemplateError
from dashboard.models import Dataset, Role

from .scope import posted_for_other_team

PAGE_SIZE = 50


@csrf_exempt
@login_required
def dataset_list(request: HttpRequest) -> HttpResponse:
    limit_uploads(request)  # before the body is read (CSRF is checked inside)
    return _dataset_list(request)


@csrf_protect
def _dataset_list(request: HttpRequest) -> HttpResponse:
    membership = require_membership(request)
    team = membership.team
    upload, paste = DatasetUploadForm(), DatasetPasteForm()
    if request.method == "POST":
        require_membership(request, Role.MEMBER)
        if posted_for_other_team(request, membership):
            return redirect("dataset_list")
        if request.POST.get("kind") == "paste":
            paste = DatasetPasteForm(request.POST)
            dataset = _save_pasted(request, paste)
        else:
            upload = DatasetUploadForm(request.POST, request.FILES)
            dataset = _save_upload(request, upload)
        if dataset is not None:
            messages.success(
                request,
                f"Dataset “{dataset.name}” saved: {dataset.row_count:,} row(s), "
                f"{len(dataset.columns)} column(s).",
            )
            return redirect(dataset)
    cursor = keyset.cursor_decode(request.GET.get("cursor") or "")
    page = keyset.keyset_page(
        Dataset.objects.filter(team=team).select_related("created_by"),
        position=cursor,
        size=PAGE_SIZE,
    )
    return render(
        request,
        "dashboard/dataset_list.html",
        {
            "page": page,
            "upload": upload,
            "paste": paste,
            "can_edit": membership.allows(Role.MEMBER),
            "limits": Limits.from_settings(),
        },
        status=200 if request.method == "GET" or not (upload.errors or paste.errors) else 400,
    )


def _save_upload(request: HttpRequest, form: DatasetUploadForm) -> Dataset | None:
    if getattr(request, "upload_too_large", False):
        form.is_valid()
        form.errors.pop("file", None)
        form.add_error("file", too_large_message())
        return None
    if not form.is_valid():
        return None
    upload = form.cleaned_data["file"]
    try:
        rows = read_file(upload, name=upload.name, size=upload.size, limits=Limits.from_settings())
        return dataset_create(
            team=require_membership(request).team,
            name=form.cleaned_data["name"],
            rows=rows,
            user=request.user,
            file_name=upload.name,
            size_bytes=upload.size,
            via="web",
        )
    except DatasetError as exc:
        form.add_error("file", str(exc))
        return None


def _save_pasted(request: HttpRequest, form: DatasetPasteForm) -> Dataset | None:
    if not form.is_valid():
        return None
    text = form.cleaned_data["text"]
    try:
        return dataset_create(
            team=require_membership(request).team,
            name=form.cleaned_data["name"],
            rows=read_pasted(text, Limits.from_settings()),
            user=request.user,
            size_bytes=len(text.encode()),
            via="web",
        )
    except DatasetError as exc:
        form.add_error("text", str(exc))
        return None


@login_required
@require_GET
def dataset_detail(request: HttpRequest, pk: int) -> HttpResponse:
    dataset, membership = access.object_for(
        request.user, Dataset.objects.select_related("created_by"), pk=pk
    )
    return render(request, "dashboard/dataset_detail.html", _detail_context(dataset, membership))


def _detail_context(dataset: Dataset, membership: Any, **extra: Any) -> dict[str, Any]:
    preview = dataset_preview(dataset, limit=PREVIEW_ROWS)
    return {
        "dataset": dataset,
        "rows": [[row.get(name) for name in dataset.columns] for row in preview],
        "preview_size": len(preview),
        "jobs": list(dataset.jobs.order_by("-created_at", "-id")[:10]),
        "job_count": dataset.jobs.count(),
        "comparisons": list(dataset.comparisons.order_by("-created_at", "-id")[:10]),
        "can_edit": membership.allows(Role.MEMBER),
        "rename": extra.get("rename") or DatasetRenameForm(initial={"name": dataset.name}),
    }


@login_required
@require_POST
def dataset_rename_view(request: HttpRequest, pk: int) -> HttpResponse:
    dataset, membership = access.object_for(
        request.user, Dataset.objects.all(), role=Role.MEMBER, pk=pk
    )
    form = DatasetRenameForm(request.POST)
    if not form.is_valid():
        context = _detail_context(dataset, membership, rename=form)
        return render(request, "dashboard/dataset_detail.html", context, status=400)
    old = dataset.name
    dataset_rename(dataset, name=form.cleaned_data["name"])
    audit(request.user, dataset.team, "dataset.renamed", dataset, old=old)
    messages.success(request, f"Dataset renamed to “{dataset.name}”.")
    return redirect(dataset)


@login_required
@require_POST
def dataset_delete_view(request: HttpRequest, pk: int) -> HttpResponse:
    dataset, _ = access.object_for(request.user, Dataset.objects.all(), role=Role.MEMBER, pk=pk)
    name, team = dataset.name, dataset.team
    audit(request.user, team, "dataset.deleted", dataset, rows=dataset.row_count)
    jobs = dataset_delete(dataset)
    kept = f" The {jobs} job(s) made from it keep their prompts and fields." if jobs else ""
    messages.success(request, f"Dataset “{name}” deleted.{kept}")
    return redirect("dataset_list")


@login_required
@require_GET
def dataset_template_preview(request: HttpRequest) -> HttpResponse:
    """The first rendered prompts of a template over a dataset of the user's
    teams (an htmx fragment for the forms), or what is wrong with it."""
    context: dict[str, Any] = {"preview": [], "error": ""}
    pk = int_param(request.GET.get("dataset"), minimum=1)
    text = request.GET.get("prompt_template") or ""
    if pk is not None:
        dataset, _ = access.object_for(request.user, Dataset.objects.all(), pk=pk)
        context["dataset"] = dataset
        if text.strip():
            try:
                context["preview"] = template_preview(dataset, text)
            except TemplateError as exc:
                context["error"] = str(exc)
    return render(request, "dashboard/_template_preview.html", context)
