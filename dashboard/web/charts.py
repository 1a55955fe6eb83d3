"""The usage charts: each one aggregate query (``dashboard.jobs.usage``), drawn
as SVG on the server with pygal, with its numbers as a table for screen
readers.

Why an ``<img src=…svg>`` and not SVG in the page: pygal puts its CSS in an
inline ``<style>``, which the page's Content-Security-Policy refuses; an SVG
loaded as an image keeps its own styles (its scripts would be inert, and
pygal is told to add none), follows the page's colour scheme through its own
``prefers-color-scheme`` rule, and needs nothing from a CDN.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pygal
from pygal.etree import etree
from pygal.style import Style

from dashboard.jobs import usage
from dashboard.jobs.cost import money
from dashboard.models import Team
from providers import PROVIDERS, get_provider_class

#: One colour per provider, the same in every chart (readable on light and dark).
PROVIDER_COLOURS = {
    slug: colour
    for slug, colour in zip(
        PROVIDERS,
        ("#2f6fde", "#d9822b", "#1a9e77", "#c2417a", "#7a5cd6", "#8c6d1f", "#3f8fa8", "#6b7486"),
        strict=False,
    )
}
DARK_CSS = Path(__file__).with_name("chart_dark.css")
WIDTH, HEIGHT = 760, 300


@dataclass
class Chart:
    name: str
    title: str
    #: The image's text alternative (the table holds the numbers).
    summary: str
    headers: list[str]
    rows: list[list[str]]
    empty: str = ""
    #: Builds the pygal chart from the same numbers as the table.
    draw: Any = field(default=None, repr=False)

    @property
    def url_name(self) -> str:
        return f"usage_chart_{self.name}"

    def svg(self) -> str:
        """The chart as SVG text, without the script element pygal always adds
        (its config for tooltips: inert in an image, and not wanted anyway)."""
        root = self.draw().render_tree()
        for parent in list(root.iter()):
            for child in list(parent):
                if child.tag == "script":
                    parent.remove(child)
        return etree.tostring(root, encoding="unicode")


def label(slug: str) -> str:
    try:
        return get_provider_class(slug).label
    except KeyError:
        return slug


def _style(colours: list[str]) -> Style:
    return Style(
        background="transparent",
        plot_background="transparent",
        foreground="#1d2330",
        foreground_strong="#1d2330",
        foreground_subtle="#c9ced6",
        opacity="0.9",
        opacity_hover="1",
        colors=tuple(colours) or ("#2f6fde",),
        font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
        label_font_size=13,
        major_label_font_size=13,
        legend_font_size=14,
        value_font_size=12,
        tooltip_font_size=12,
    )


def _new(kind: Any, colours: list[str], **config: Any) -> Any:
    return kind(
        js=[],  # no script, and nothing loaded from a CDN
        css=["file://style.css", "file://graph.css", f"file://{DARK_CSS}"],
        disable_xml_declaration=True,
        explicit_size=True,  # width and height on the <svg>: an image's natural size
        width=WIDTH,
        height=HEIGHT,
        style=_style(colours),
        legend_at_bottom=True,
        legend_at_bottom_columns=4,
        truncate_legend=-1,
        print_values=False,
        show_y_guides=True,
        margin=12,
        # pygal's room for a legend at the bottom clips its last row's text.
        margin_bottom=30,
        **config,
    )


def _days_axis(days: list[date]) -> dict[str, Any]:
    return {
        "x_labels": [f"{day:%m-%d}" for day in days],
        "x_labels_major_every": 7,
        "show_minor_x_labels": False,
        "truncate_label": -1,
    }


def jobs_chart(team: Team, period: usage.Period) -> Chart:
    counts = usage.jobs_per_day(team, period)
    providers = list(counts)

    def draw() -> Any:
        chart = _new(
            pygal.StackedBar, [PROVIDER_COLOURS[p] for p in providers], **_days_axis(period.days)
        )
        for slug in providers:
            chart.add(label(slug), [counts[slug].get(day) or None for day in period.days])
        return chart

    total = sum(sum(by_day.values()) for by_day in counts.values())
    return Chart(
        name="jobs",
        title="Jobs per day, by provider",
        summary=f"Stacked bar chart: {total} jobs over {len(period.days)} days"
        + (f" on {', '.join(label(p) for p in providers)}" if providers else ""),
        headers=["Day", *[label(p) for p in providers], "All"],
        rows=[
            [
                f"{day:%Y-%m-%d}",
                *[str(counts[p].get(day, 0)) for p in providers],
                str(sum(counts[p].get(day, 0) for p in providers)),
            ]
            for day in period.days
        ],
        empty="" if total else "No jobs in these days.",
        draw=draw,
    )


def failures_chart(team: Team, period: usage.Period) -> Chart:
    rows = usage.by_provider(team, period)

    def draw() -> Any:
        chart = _new(
            pygal.Bar,
            ["#b42318", "#2f6fde"],
            x_labels=[label(r["provider"]) for r in rows],
            truncate_label=-1,
        )
        chart.add("Items failed", [r["failed"] for r in rows])
        chart.add("Items completed", [r["completed"] for r in rows])
        return chart

    failed = sum(r["failed"] for r in rows)
    return Chart(
        name="failures",
        title="Items failed, by provider",
        summary=f"Bar chart: {failed} items failed of {sum(r['items'] for r in rows)}, by provider",
        headers=["Provider", "Items", "Completed", "Failed", "Failed share"],
        rows=[
            [
                label(r["provider"]),
                str(r["items"]),
                str(r["completed"]),
                str(r["failed"]),
                f"{100 * r['failed'] / r['items']:.1f} %" if r["items"] else "—",
            ]
            for r in rows
        ],
        empty="" if rows else "No jobs in these days.",
        draw=draw,
    )


def latency_chart(team: Team, period: usage.Period) -> Chart:
    rows = usage.latency_percentiles(team, period)
    names = [f"{label(r['provider'])} · {r['model']}" for r in rows]

    def draw() -> Any:
        height = max(HEIGHT, 90 + 46 * len(rows))
        chart = _new(
            pygal.HorizontalBar,
            ["#2f6fde", "#d9822b"],
            x_labels=[name if len(name) <= 48 else name[:47] + "…" for name in names],
            truncate_label=-1,
        )
        chart.height = height
        chart.add("p50", [r.get("p50") for r in rows])
        chart.add("p95", [r.get("p95") for r in rows])
        return chart

    return Chart(
        name="latency",
        title="Latency p50 and p95 (ms), by provider and model",
        summary=f"Horizontal bar chart of the median and 95th percentile latency of {len(rows)} "
        "provider and model pairs",
        headers=["Provider · model", "Items", "p50 (ms)", "p95 (ms)"],
        rows=[
            [name, str(r["n"]), str(r.get("p50", "—")), str(r.get("p95", "—"))]
            for name, r in zip(names, rows, strict=True)
        ],
        empty="" if rows else "No completed items with a latency in these days.",
        draw=draw,
    )


#: The spend chart's series: one per mode, stacked, online below.
MODE_SERIES = (("online", "Online", "#1a9e77"), ("batch", "Batch", "#7a5cd6"))


def spend_chart(team: Team, period: usage.Period) -> Chart:
    spent = usage.spend_per_day(team, period)
    by_day = {
        day: sum(
            (spent.get(mode, {}).get(day, Decimal(0)) for mode, _, _ in MODE_SERIES), Decimal(0)
        )
        for day in period.days
        if any(day in spent.get(mode, {}) for mode, _, _ in MODE_SERIES)
    }
    total = sum(by_day.values(), Decimal(0))
    batch_total = sum(spent.get("batch", {}).values(), Decimal(0))

    def draw() -> Any:
        chart = _new(
            pygal.StackedBar,
            [colour for _, _, colour in MODE_SERIES],
            value_formatter=money,
            **_days_axis(period.days),
        )
        for mode, name, _ in MODE_SERIES:
            days = spent.get(mode, {})
            chart.add(name, [float(days[day]) if day in days else None for day in period.days])
        return chart

    def cell(mode: str, day: Any) -> str:
        days = spent.get(mode, {})
        return money(days[day]) if day in days else "—"

    return Chart(
        name="spend",
        title="Spend per day (USD), online and batch",
        summary=f"Stacked bar chart: {money(total)} spent over {len(period.days)} days, "
        f"{money(batch_total)} of it in batch mode, the actual cost of priced jobs that ended",
        headers=["Day", *[name for _, name, _ in MODE_SERIES], "All"],
        rows=[
            [
                f"{day:%Y-%m-%d}",
                *[cell(mode, day) for mode, _, _ in MODE_SERIES],
                money(by_day[day]) if day in by_day else "—",
            ]
            for day in period.days
        ],
        empty="" if by_day else "No priced job ended in these days: set prices below to see spend.",
        draw=draw,
    )


CHARTS = {
    "jobs": jobs_chart,
    "failures": failures_chart,
    "latency": latency_chart,
    "spend": spend_chart,
}


def all_charts(team: Team, period: usage.Period) -> list[Chart]:
    return [build(team, period) for build in CHARTS.values()]
