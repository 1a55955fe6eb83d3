"""The job page's results as a table to scan: clipped rows, a detail panel
per row (htmx partial, or the page with ``?row=N``), and a search over
prompts and outputs, paged like every filter."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from dashboard.compare.reviews import rating_set
from dashboard.models import ItemScore, Job
from tests.conftest import finish_items, make_credential, make_job

pytestmark = pytest.mark.django_db

LONG = "word " * 999 + "THE-END"  # 5,000 characters


@pytest.fixture
def bob_client(bob: Any, team: Any) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def finished_job(team: Any, prompts: list[str], outputs: list[Any], **spec: Any) -> Job:
    job = make_job(make_credential(team), prompts, **spec)
    finish_items(job, outputs)
    Job.objects.filter(pk=job.pk).update(status="completed")
    job.refresh_from_db()
    return job


def row_html(page: str, index: int) -> str:
    found = re.search(rf'<tr role="row" id="item-{index}".*?</tr>', page, re.S)
    assert found, f"row {index} not on the page"
    return found.group(0)


def panel_of(client: Client, job: Job, index: int, query: str = "") -> Any:
    url = reverse("job_item_detail", args=[job.pk, index]) + (f"?{query}" if query else "")
    return client.get(url, headers={"HX-Request": "true"})


def test_a_row_is_clipped_and_its_panel_holds_the_whole_output(
    bob_client: Client, team: Any
) -> None:
    job = finished_job(team, ["short prompt", "P" * 3000], [LONG, "ok"])
    page = bob_client.get(job.get_absolute_url()).content.decode()
    row = row_html(page, 0)
    assert "THE-END" not in row and "word word" in row  # clipped, with an ellipsis
    assert "…" in row
    assert "P" * 300 not in row_html(page, 1)
    assert 'id="item-detail"' not in page  # no panel until a row is opened

    panel = panel_of(bob_client, job, 0)
    assert panel.status_code == 200
    body = panel.content.decode()
    assert "<html" not in body and 'id="item-detail"' in body
    assert LONG in body and "short prompt" in body
    assert "Row 1 of 2 opened" in body  # what the live region announces
    assert 'id="rating-' in body  # the buttons to rate


def test_the_panel_escapes_model_output(bob_client: Client, team: Any) -> None:
    evil = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    job = finished_job(team, [evil], [evil])
    body = panel_of(bob_client, job, 0).content.decode()
    assert "<script>alert" not in body and "<img src=x" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


def test_a_structured_output_is_pretty_printed(bob_client: Client, team: Any) -> None:
    # Keys in an order PostgreSQL's jsonb keeps too (shorter first).
    job = finished_job(team, ["q"], [{"n": 2, "answer": "yes"}])
    body = panel_of(bob_client, job, 0).content.decode()
    assert "{\n  &quot;n&quot;: 2,\n  &quot;answer&quot;: &quot;yes&quot;\n}" in body


def test_row_in_the_address_renders_the_page_with_the_panel_open(
    bob_client: Client, team: Any
) -> None:
    job = finished_job(team, ["a", "b", "c"], ["one", LONG, "three"])
    page = bob_client.get(job.get_absolute_url() + "?row=1").content.decode()
    assert "<html" in page and 'id="item-detail"' in page and LONG in page
    assert 'data-index="1"' in page and "Row 2 " in page
    # The item address without htmx is the same page, shareable.
    page = bob_client.get(reverse("job_item_detail", args=[job.pk, 1])).content.decode()
    assert "<html" in page and LONG in page
    # A row the job does not have: the page, no panel; its own address: a 404.
    page = bob_client.get(job.get_absolute_url() + "?row=99").content.decode()
    assert 'id="item-detail"' not in page
    assert bob_client.get(reverse("job_item_detail", args=[job.pk, 99])).status_code == 404
    assert panel_of(bob_client, job, 99).status_code == 404


def test_the_panel_shows_scores_with_reasons_ratings_and_errors(
    bob_client: Client, alice: Any, team: Any
) -> None:
    job = finished_job(team, ["a", "b"], [])
    Job.objects.filter(pk=job.pk).update(scorers=[{"type": "contains", "name": "contains"}])
    job = finish_items(job, ["one"], errors={1: "HTTP 500: the provider fell over"})
    item = job.items.get(index=0)
    ItemScore.objects.create(
        item=item, job=job, index=0, scorer="contains", passed=False, reason="no 'x' in output"
    )
    rating_set(job=job, index=0, user=alice, score=1)
    body = panel_of(bob_client, job, 0).content.decode()
    assert "contains: fail" in body and "no &#x27;x&#x27; in output" in body
    assert "alice" in body and "👍 1" in body
    failed = panel_of(bob_client, job, 1).content.decode()
    assert "HTTP 500: the provider fell over" in failed and "the row failed" in failed


def test_a_row_with_no_output_yet_says_so(bob_client: Client, team: Any) -> None:
    job = make_job(make_credential(team), ["waiting"])
    body = panel_of(bob_client, job, 0).content.decode()
    assert "No output yet" in body and "waiting its turn" in body


def test_search_finds_rows_by_prompt_and_by_output(bob_client: Client, team: Any) -> None:
    prompts = [f"prompt {i}" for i in range(6)]
    outputs: list[Any] = [f"answer {i}" for i in range(6)]
    prompts[1] = "Tell me about the Zebra"
    outputs[4] = "A zebra has stripes"
    outputs[5] = {"animal": "ZEBRA"}
    job = finished_job(team, prompts, outputs)
    page = bob_client.get(job.get_absolute_url() + "?q=zebra").content.decode()
    shown = re.findall(r'<tr role="row" id="item-(\d+)"', page)
    assert shown == ["1", "4", "5"]
    assert 'value="zebra"' in page  # the box keeps the query


def test_search_is_paged_with_the_keyset(bob_client: Client, team: Any) -> None:
    prompts = [f"{'needle' if i % 2 else 'hay'} {i}" for i in range(120)]
    job = finished_job(team, prompts, [f"out {i}" for i in range(120)])
    page = bob_client.get(job.get_absolute_url() + "?q=needle").content.decode()
    odd = [str(i) for i in range(1, 120, 2)]
    assert re.findall(r'id="item-(\d+)"', page) == odd[:50]
    link = re.search(r'href="\?([^"]*after=99)" rel="next"', page)
    assert link and "q=needle" in link.group(1)
    page = bob_client.get(job.get_absolute_url() + "?" + link.group(1).replace("&amp;", "&"))
    assert re.findall(r'id="item-(\d+)"', page.content.decode()) == odd[50:]


def test_a_search_with_no_match_says_so(bob_client: Client, team: Any) -> None:
    job = finished_job(team, ["a"], ["b"])
    page = bob_client.get(job.get_absolute_url() + "?q=nothing-like-it").content.decode()
    assert "No row has “nothing-like-it” in its prompt or output" in page


@pytest.mark.parametrize("query", ["a\x00b", "\x00", "x" * 10_000, "%", "_", "<script>", "'"])
def test_hostile_searches_are_never_a_500(bob_client: Client, team: Any, query: str) -> None:
    job = finished_job(team, ["a_b 100%"], ["x"])
    response = bob_client.get(job.get_absolute_url(), {"q": query})
    assert response.status_code == 200
    body = response.content.decode()
    assert "<script>" not in body.split("<main>")[1]
    if len(query) > 200:
        assert "first 200 characters" in body


def test_search_treats_like_wildcards_as_text(bob_client: Client, team: Any) -> None:
    job = finished_job(team, ["100% sure", "plain"], ["x", "y"])
    page = bob_client.get(job.get_absolute_url(), {"q": "%"}).content.decode()
    assert re.findall(r'id="item-(\d+)"', page) == ["0"]


def test_another_teams_row_is_a_404(
    client: Client, charlie: Any, other_team: Any, team: Any
) -> None:
    job = finished_job(team, ["secret prompt"], ["secret output"])
    client.force_login(charlie)
    assert panel_of(client, job, 0).status_code == 404
    assert client.get(reverse("job_item_detail", args=[job.pk, 0])).status_code == 404
    assert client.get(job.get_absolute_url() + "?row=0").status_code == 404


# --- a comparison's cells ---------------------------------------------------------------------


def comparison_with_outputs(team: Any, alice: Any, output: Any) -> Any:
    from tests.test_isolation import make_comparison

    _, comparison = make_comparison(team, alice)
    second = comparison.jobs.order_by("id").last()
    finish_items(second, [output])
    return comparison, second


def cell_panel(client: Client, comparison: Any, index: int, target: int) -> Any:
    url = reverse("comparison_cell", args=[comparison.pk, index, target])
    return client.get(url, headers={"HX-Request": "true"})


def test_a_grid_cell_is_clipped_and_its_panel_holds_it_whole(
    bob_client: Client, alice: Any, team: Any
) -> None:
    evil = LONG + "<script>alert(1)</script>"
    comparison, second = comparison_with_outputs(team, alice, evil)
    page = bob_client.get(comparison.get_absolute_url()).content.decode()
    cell = re.search(rf'<td id="cell-{second.pk}-0".*?</td>', page, re.S).group(0)
    assert "THE-END" not in cell and "<script>alert" not in page

    body = cell_panel(bob_client, comparison, 0, 2).content.decode()
    assert "<html" not in body and 'id="cell-detail"' in body
    assert "THE-END&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert" not in body
    first = cell_panel(bob_client, comparison, 0, 1).content.decode()
    assert "error zqx7marker" in first and "the cell failed" in first
    assert "note zqx7marker" in first and "alice" in first  # the row's note, the rating
    # Deep links: the page with the panel open, and the cell's own address.
    page = bob_client.get(comparison.get_absolute_url() + "?row=0&target=2").content.decode()
    assert "<html" in page and "THE-END" in page and 'id="cell-detail"' in page
    assert cell_panel(bob_client, comparison, 0, 3).status_code == 404
    assert cell_panel(bob_client, comparison, 5, 1).status_code == 404


def test_rating_from_the_cell_panel_answers_the_panel_and_the_cell(
    bob_client: Client, alice: Any, team: Any
) -> None:
    comparison, second = comparison_with_outputs(team, alice, "fine")
    response = bob_client.post(
        reverse("comparison_rate", args=[comparison.pk]),
        {"index": 0, "job": second.pk, "score": 1, "panel": 2},
        headers={"HX-Request": "true"},
    )
    body = response.content.decode()
    assert response.status_code == 200 and 'id="cell-detail"' in body
    assert 'aria-pressed="true" title="Thumbs up">👍 1' in body
    assert f'id="cell-{second.pk}-0"' in body and 'hx-swap-oob="true"' in body


def test_another_teams_cell_is_a_404(
    client: Client, alice: Any, charlie: Any, other_team: Any, team: Any
) -> None:
    comparison, _ = comparison_with_outputs(team, alice, "x")
    client.force_login(charlie)
    assert cell_panel(client, comparison, 0, 1).status_code == 404
    assert client.get(reverse("comparison_cell", args=[comparison.pk, 0, 1])).status_code == 404


def test_rating_from_the_cell_panel_without_htmx_comes_back_to_it(
    bob_client: Client, alice: Any, team: Any
) -> None:
    comparison, second = comparison_with_outputs(team, alice, "fine")
    response = bob_client.post(
        reverse("comparison_rate", args=[comparison.pk]),
        {"index": 0, "job": second.pk, "score": 1, "panel": 2},
    )
    assert response.status_code == 302
    assert response["Location"] == comparison.get_absolute_url() + "?row=0&target=2"
