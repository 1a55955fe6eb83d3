"""Datasets: save the rows a reader gives (all or nothing), rename, delete,
read back a page or every row, and render a prompt template over them.

A job made from a dataset keeps the rendered prompt and the row's fields on
each of its items, so deleting the dataset later changes no job."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from dashboard.core.audit import audit, via_details
from dashboard.models import Dataset, DatasetRow, Team

from .parsing import DatasetError, Rows
from .template import PromptTemplate, TemplateError

#: Rows per INSERT when a dataset is saved, and per SELECT when it is read whole.
BATCH = 1000
PREVIEW_ROWS = 20
TEMPLATE_PREVIEW_ROWS = 3
MAX_NAME = 200


def clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise DatasetError("Give the dataset a name.")
    if "\x00" in name:
        raise DatasetError("The name may not contain NUL characters.")
    if len(name) > MAX_NAME:
        raise DatasetError(f"The name has {len(name)} characters; at most {MAX_NAME}.")
    return name


def dataset_create(
    *,
    team: Team,
    name: str,
    rows: Rows,
    user: Any = None,
    file_name: str = "",
    size_bytes: int = 0,
    via: str = "",
) -> Dataset:
    """Save a dataset and its rows as the reader gives them, ``BATCH`` rows per
    INSERT, and audit it (``via``: the surface that asked). Any problem in the
    rows (raised while reading) rolls everything back: a dataset is saved
    whole or not at all."""
    with transaction.atomic():
        dataset = Dataset.objects.create(
            team=team,
            name=clean_name(name),
            source=rows.source,
            created_by=user,
            file_name=file_name[:255],
            size_bytes=size_bytes,
        )
        batch: list[DatasetRow] = []
        for index, data in enumerate(rows):
            batch.append(DatasetRow(dataset=dataset, index=index, data=data))
            if len(batch) == BATCH:
                DatasetRow.objects.bulk_create(batch)
                batch = []
        if batch:
            DatasetRow.objects.bulk_create(batch)
        Dataset.objects.filter(pk=dataset.pk).update(columns=rows.columns, row_count=rows.count)
        dataset.columns, dataset.row_count = rows.columns, rows.count
        audit(user, team, "dataset.created", dataset, rows=rows.count, **via_details(via))
    return dataset


def dataset_rename(dataset: Dataset, *, name: str) -> Dataset:
    dataset.name = clean_name(name)
    Dataset.objects.filter(pk=dataset.pk).update(name=dataset.name)
    return dataset


def dataset_delete(dataset: Dataset) -> int:
    """Delete the dataset and its rows; its jobs and comparisons stay as they
    are (their items hold the prompts and fields). Returns how many jobs used it."""
    jobs = dataset.jobs.count()
    dataset.delete()
    return jobs


def dataset_preview(dataset: Dataset, *, limit: int = PREVIEW_ROWS) -> list[dict[str, Any]]:
    """The first rows, as ``{column: value}``."""
    return list(
        DatasetRow.objects.filter(dataset_id=dataset.pk)
        .order_by("index")
        .values_list("data", flat=True)[:limit]
    )


def iter_rows(dataset: Dataset, *, chunk: int = BATCH) -> Iterator[dict[str, Any]]:
    """Every row in order, ``chunk`` rows per query."""
    after = -1
    while True:
        rows = list(
            DatasetRow.objects.filter(dataset_id=dataset.pk, index__gt=after)
            .order_by("index")
            .values_list("index", "data")[:chunk]
        )
        for _, data in rows:
            yield data
        if len(rows) < chunk:
            return
        after = rows[-1][0]


# --- prompts from rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """What a job's items are made of: the prompts, and for a dataset the
    row's fields beside each (and where they came from)."""

    prompts: list[str]
    input_fields: list[dict[str, Any]] | None = None
    dataset: Dataset | None = None
    template: str = ""
    #: The names of ``input_fields``, in the dataset's order.
    columns: list[str] = field(default_factory=list)


def checked_template(dataset: Dataset, text: str) -> PromptTemplate:
    """The template, parsed and checked against the dataset's columns (TemplateError)."""
    if not (text or "").strip():
        raise TemplateError("Write a prompt template, with {column} where each row's value goes.")
    if "\x00" in text:
        raise TemplateError("The template may not contain NUL characters.")
    template = PromptTemplate.parse(text)
    template.check(list(dataset.columns))
    return template


def inputs_from_dataset(dataset: Dataset, text: str) -> Inputs:
    """One prompt per row, rendered from the template, with the row's fields."""
    template = checked_template(dataset, text)
    prompts: list[str] = []
    fields: list[dict[str, Any]] = []
    for number, row in enumerate(iter_rows(dataset), start=1):
        prompt = template.render(row)
        if not prompt.strip():
            raise TemplateError(
                f"Row {number} gives an empty prompt (its {', '.join(template.names)} "
                "empty); fill it in or change the template."
            )
        prompts.append(prompt)
        fields.append(row)
    return Inputs(
        prompts=prompts,
        input_fields=fields,
        dataset=dataset,
        template=text,
        columns=list(dataset.columns),
    )


def template_preview(
    dataset: Dataset, text: str, *, limit: int = TEMPLATE_PREVIEW_ROWS
) -> list[str]:
    """The first rendered prompts (TemplateError when the template is wrong)."""
    template = checked_template(dataset, text)
    return [template.render(row) for row in dataset_preview(dataset, limit=limit)]
