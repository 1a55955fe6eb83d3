"""A comparison as its pages, API and exports read it: a summary per target
(status, counts, latency p50/p95, ratings) and the grid of rows × targets,
paged by index (keyset), each cell the target's item merged with its
retries. A page costs a fixed number of queries per target, whatever the
comparison's size."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Q

from dashboard.jobs import results
from dashboard.jobs.cost import job_cost
from dashboard.jobs.export import text_of
from dashboard.models import Comparison, Item, Job, Rating, RowNote
from dashboard.status import ItemStatus

from .services import retried_targets

PAGE_SIZE = 20
MAX_PAGE_SIZE = 200


@dataclass
class TargetSummary:
    job: Job
    number: int  # 1-based, the order the targets were given in
    latency_p50: int | None = None
    latency_p95: int | None = None
    wins: int = 0
    up: int = 0
    down: int = 0
    #: USD so far at the target's price; None when its model has no price.
    cost: float | None = None
    has_retries: bool = False

    @property
    def label(self) -> str:
        return f"T{self.number} {self.job.get_provider_display()} · {self.job.model}"

    @property
    def unfinished(self) -> int:
        return self.job.items_unfinished


@dataclass
class Cell:
    job_id: int  # the target
    index: int
    item: Item | None
    ratings: list[Rating] = field(default_factory=list)
    #: The viewer's own verdict (see_as), for the buttons' pressed state.
    my_score: int | None = None
    my_best: bool = False

    def see_as(self, user: Any) -> Cell:
        mine = self.mine(user)
        self.my_score = mine.score if mine else None
        self.my_best = bool(mine and mine.best)
        return self

    @property
    def output_text(self) -> str:
        return text_of(self.item.output) if self.item is not None else ""

    @property
    def up(self) -> int:
        return sum(1 for r in self.ratings if r.score == 1)

    @property
    def down(self) -> int:
        return sum(1 for r in self.ratings if r.score == -1)

    @property
    def best(self) -> int:
        return sum(1 for r in self.ratings if r.best)

    def mine(self, user: Any) -> Rating | None:
        return next((r for r in self.ratings if r.user_id == getattr(user, "pk", None)), None)


@dataclass
class GridRow:
    index: int
    input: str
    input_fields: dict[str, Any] | None
    cells: list[Cell]
    notes: list[RowNote] = field(default_factory=list)


@dataclass
class GridPage:
    rows: list[GridRow]
    next_after: int | None
    previous_before: int | None

    @property
    def first_index(self) -> int | None:
        return self.rows[0].index if self.rows else None

    @property
    def last_index(self) -> int | None:
        return self.rows[-1].index if self.rows else None


# --- the summary -----------------------------------------------------------------------------


def summaries(targets: list[Job]) -> list[TargetSummary]:
    """Per target: latency percentiles from its completed items (three bounded
    queries each), and its ratings (one query for all targets)."""
    retried = retried_targets(targets)
    votes = {
        row["job_id"]: row
        for row in Rating.objects.filter(job_id__in=[t.pk for t in targets])
        .values("job_id")
        .annotate(
            wins=Count("id", filter=Q(best=True)),
            up=Count("id", filter=Q(score=1)),
            down=Count("id", filter=Q(score=-1)),
        )
    }
    out = []
    for number, job in enumerate(targets, start=1):
        p50, p95 = latency_percentiles(job)
        counted = votes.get(job.pk, {})
        out.append(
            TargetSummary(
                job=job,
                number=number,
                latency_p50=p50,
                latency_p95=p95,
                wins=counted.get("wins", 0),
                up=counted.get("up", 0),
                down=counted.get("down", 0),
                has_retries=job.pk in retried,
                cost=job_cost(job)["actual"],
            )
        )
    return out


def latency_percentiles(job: Job) -> tuple[int | None, int | None]:
    """p50 and p95 of the job's completed items' latency, nearest rank: a count,
    then one ORDER BY … OFFSET per percentile (never every item read)."""
    timed = Item.objects.filter(
        job_id=job.pk, status=ItemStatus.COMPLETED, latency_ms__isnull=False
    )
    count = timed.count()
    if not count:
        return None, None
    ordered = timed.order_by("latency_ms").values_list("latency_ms", flat=True)

    def at(percent: int) -> int:
        rank = max(1, math.ceil(percent / 100 * count))
        return ordered[rank - 1]

    return at(50), at(95)


# --- the grid ---------------------------------------------------------------------------------


def grid_page(
    comparison: Comparison,
    targets: list[Job],
    *,
    after: int | None = None,
    before: int | None = None,
    size: int = PAGE_SIZE,
) -> GridPage:
    """One page of rows: the first target's items say which indexes (keyset,
    as the job page), then one query per other target, one per retried target,
    one for the ratings and one for the notes."""
    if not targets:
        return GridPage([], None, None)
    page = results.items_page(targets[0], after=after, before=before, size=size)
    if not page.items:
        return GridPage([], None, None)
    first, last = page.items[0].index, page.items[-1].index
    rows = build_rows(comparison, targets, page.items, first, last)
    return GridPage(rows, page.next_after, page.previous_before)


def build_rows(
    comparison: Comparison,
    targets: list[Job],
    first_items: list[Item],
    first: int,
    last: int,
    *,
    with_notes: bool = True,
) -> list[GridRow]:
    retried = retried_targets(targets)
    by_target: dict[int, dict[int, Item]] = {}
    for number, target in enumerate(targets):
        items = (
            list(first_items)
            if number == 0
            else list(
                Item.objects.filter(job_id=target.pk, index__gte=first, index__lte=last)
                .order_by("index")
                .only(*results.ITEM_COLUMNS)
            )
        )
        if target.pk in retried:
            items = results.merge_retries(target, items)
        by_target[target.pk] = {item.index: item for item in items}
    ratings = ratings_for([t.pk for t in targets], first, last)
    notes = notes_for(comparison, first, last) if with_notes else {}
    rows = []
    for item in first_items:
        cells = [
            Cell(
                job_id=target.pk,
                index=item.index,
                item=by_target[target.pk].get(item.index),
                ratings=ratings.get((target.pk, item.index), []),
            )
            for target in targets
        ]
        rows.append(
            GridRow(
                index=item.index,
                input=item.input,
                input_fields=item.input_fields,
                cells=cells,
                notes=notes.get(item.index, []),
            )
        )
    return rows


def ratings_for(job_ids: list[int], first: int, last: int) -> dict[tuple[int, int], list[Rating]]:
    found: dict[tuple[int, int], list[Rating]] = {}
    for rating in (
        Rating.objects.filter(job_id__in=job_ids, index__gte=first, index__lte=last)
        .select_related("user")
        .order_by("updated_at", "id")
    ):
        found.setdefault((rating.job_id, rating.index), []).append(rating)
    return found


def notes_for(comparison: Comparison, first: int, last: int) -> dict[int, list[RowNote]]:
    found: dict[int, list[RowNote]] = {}
    for note in (
        RowNote.objects.filter(comparison_id=comparison.pk, index__gte=first, index__lte=last)
        .select_related("author")
        .order_by("id")
    ):
        found.setdefault(note.index, []).append(note)
    return found


def cell_of(job: Job, index: int, user: Any) -> Cell:
    """One row of a job as a cell with its ratings (a single job's review)."""
    ratings = ratings_for([job.pk], index, index)
    cell = Cell(job_id=job.pk, index=index, item=None, ratings=ratings.get((job.pk, index), []))
    return cell.see_as(user)


def see_as(rows: list[GridRow], user: Any) -> list[GridRow]:
    for row in rows:
        for cell in row.cells:
            cell.see_as(user)
    return rows


def attach_reviews(job: Job, items: list[Item], user: Any) -> None:
    """``item.review`` for each of a page of the job's rows, as ``user`` sees
    it: one query."""
    if not items:
        return
    indexes = [item.index for item in items]
    ratings = ratings_for([job.pk], min(indexes), max(indexes))
    for item in items:
        item.review = Cell(  # type: ignore[attr-defined]
            job_id=job.pk,
            index=item.index,
            item=item,
            ratings=ratings.get((job.pk, item.index), []),
        )


def row_at(comparison: Comparison, targets: list[Job], index: int) -> GridRow | None:
    items = list(Item.objects.filter(job_id=targets[0].pk, index=index).only(*results.ITEM_COLUMNS))
    if not items:
        return None
    return build_rows(comparison, targets, items, index, index)[0]


def changed_cells(targets: list[Job], first: int, last: int, since: datetime | None) -> list[Cell]:
    """The cells of a page (rows ``first``..``last``) written since ``since``
    (all of them for None), a retry's writes included: what a live page needs,
    never more than a page."""
    written = {} if since is None else {"updated_at__gte": since}
    retried = retried_targets(targets)
    cells: list[Cell] = []
    for target in targets:
        in_page = Item.objects.filter(job_id=target.pk, index__gte=first, index__lte=last)
        indexes = set(in_page.filter(**written).values_list("index", flat=True))
        if target.pk in retried:
            indexes |= set(
                Item.objects.filter(
                    job__retry_of_id=target.pk,
                    source_index__gte=first,
                    source_index__lte=last,
                    **written,
                ).values_list("source_index", flat=True)
            )
        if not indexes:
            continue
        items = list(
            in_page.filter(index__in=sorted(indexes))
            .order_by("index")
            .only(*results.ITEM_COLUMNS)[:MAX_PAGE_SIZE]
        )
        if target.pk in retried:
            items = results.merge_retries(target, items)
        cells += [Cell(job_id=target.pk, index=item.index, item=item) for item in items]
    if cells:
        ratings = ratings_for([t.pk for t in targets], first, last)
        for cell in cells:
            cell.ratings = ratings.get((cell.job_id, cell.index), [])
    return cells


def iter_grid(comparison: Comparison, targets: list[Job], *, chunk: int = 500) -> Iterator[GridRow]:
    """Every row in index order, ``chunk`` rows at a time (exports)."""
    after: int | None = None
    while targets:
        page = results.items_page(targets[0], after=after, size=chunk)
        if not page.items:
            return
        first, last = page.items[0].index, page.items[-1].index
        yield from build_rows(comparison, targets, page.items, first, last)
        if page.next_after is None:
            return
        after = page.next_after
