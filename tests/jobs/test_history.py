"""The job history: filters, keyset pages, live rows, and the exports."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.http import StreamingHttpResponse
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dashboard.core import keyset
from dashboard.core.keyset import Position, cursor_decode, cursor_encode, iter_keyset
from dashboard.jobs.export import CSV_HEADER, csv_safe
from dashboard.jobs.history import COUNT_LIMIT, JobFilters, jobs_filtered
from dashboard.models import AuditEvent, Credential, Job, Team
from tests.conftest import SECRET, job_row, make_credential

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
#: Queries a history page may make: session, user, membership, the context
#: processor's memberships, the page of jobs. The same for any page size or depth.
PAGE_QUERY_BUDGET = 6
_seq = itertools.count()


def add_job(
    team: Team,
    credential: Credential | None = None,
    *,
    prompts: list[str] | None = None,
    outputs: list[Any] | None = None,
    **fields: Any,
) -> Job:
    """A job row as the engine would leave it, without the engine."""
    prompts = prompts or [f"prompt {next(_seq)}"]
    fields.setdefault("created_at", T0)
    fields.setdefault("status", "completed")
    if outputs is None and fields["status"] == "completed":
        outputs = [f"output of {prompt}" for prompt in prompts]
    return job_row(team, credential, prompts=prompts, outputs=outputs, **fields)


def shown_ids(response: Any) -> list[int]:
    return [int(pk) for pk in re.findall(r'data-job="(\d+)"', response.content.decode())]


def follow_pages(client: Any, url: str) -> list[list[int]]:
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200
        pages.append(shown_ids(response))
        match = re.search(r'href="([^"]+)" rel="next"', response.content.decode())
        url = match.group(1).replace("&amp;", "&") if match else ""
    return pages


def streamed(response: Any) -> str:
    assert isinstance(response, StreamingHttpResponse)
    return b"".join(response.streaming_content).decode()


@pytest.fixture
def alice_client(client: Any, alice: User, team: Team) -> Any:
    client.force_login(alice)
    return client


# --- filters ------------------------------------------------------------------------------


@pytest.fixture
def varied(team: Team, alice: User, bob: User) -> dict[str, Job]:
    together = make_credential(team, "together", name="tg")
    mymagic = make_credential(team, "mymagic", name="mm")
    return _varied(team, together, mymagic, alice, bob)


def _varied(
    team: Team, together: Credential, mymagic: Credential, alice: User, bob: User
) -> dict[str, Job]:
    def at(days: int) -> datetime:
        return T0 - timedelta(days=days)

    return {
        "base": add_job(team, together, created_by=alice, created_at=at(0)),
        "mymagic": add_job(team, mymagic, created_by=alice, created_at=at(1)),
        "model": add_job(team, together, model="m2", created_by=alice, created_at=at(2)),
        "failed": add_job(team, together, status="failed", created_by=alice, created_at=at(3)),
        "bob": add_job(team, together, created_by=bob, created_at=at(4)),
        "old": add_job(team, together, created_by=alice, created_at=at(40)),
        "prompt": add_job(
            team, together, created_by=alice, created_at=at(5), prompts=["Tell me about Zebras"]
        ),
        "output": add_job(
            team, together, created_by=alice, created_at=at(6), outputs=["They are ZEBRA-striped"]
        ),
        "object": add_job(
            team, together, created_by=alice, created_at=at(7), outputs=[{"animal": "zebra"}]
        ),
        "question": add_job(
            team, mymagic, created_by=alice, created_at=at(8), question="Is it a zebra?"
        ),
        "unicode": add_job(
            team, together, created_by=alice, created_at=at(9), prompts=['Café "zèbre" \\ 100%']
        ),
    }


FILTER_CASES = [
    ({"provider": "mymagic"}, {"mymagic", "question"}),
    ({"model": "m2"}, {"model"}),
    ({"status": "failed"}, {"failed"}),
    ({"created_by": "bob"}, {"bob"}),
    ({"created_by": "nobody"}, set()),
    ({"date_from": "2025-03-06", "date_to": "2025-03-08"}, {"model", "failed", "bob"}),
    ({"date_to": "2025-01-30"}, {"old"}),
    ({"date_from": "2025-03-10"}, {"base"}),
    ({"q": "zebra"}, {"prompt", "output", "object", "question"}),
    ({"q": 'café "zèbre" \\ 100%'}, {"unicode"}),
    ({"q": "100%"}, {"unicode"}),  # % is a literal, not a LIKE wildcard
    ({"q": "prompts"}, set()),  # the JSON's keys are not text
    ({"q": "zebra", "provider": "mymagic"}, {"question"}),
]


@pytest.mark.parametrize(
    ("params", "expected"), FILTER_CASES, ids=[str(p) for p, _ in FILTER_CASES]
)
def test_each_filter_narrows(
    alice_client: Any, varied: dict[str, Job], params: dict[str, str], expected: set[str]
) -> None:
    response = alice_client.get(reverse("job_list"), params)
    assert response.status_code == 200
    names = {name for name, job in varied.items() if job.pk in shown_ids(response)}
    assert names == expected


def test_no_filter_shows_everything_newest_first(alice_client: Any, varied: dict[str, Job]) -> None:
    ids = shown_ids(alice_client.get(reverse("job_list")))
    jobs = sorted(varied.values(), key=lambda j: (j.created_at, j.pk), reverse=True)
    assert ids == [job.pk for job in jobs]


def test_filters_apply_to_the_team_only(
    alice_client: Any, varied: dict[str, Job], other_team: Team
) -> None:
    theirs = add_job(other_team, prompts=["zebra"], created_at=T0 + timedelta(days=1))
    for params in ({}, {"q": "zebra"}, {"provider": "together"}):
        assert theirs.pk not in shown_ids(alice_client.get(reverse("job_list"), params))


def test_filter_form_is_a_plain_get_form_that_keeps_its_values(
    alice_client: Any, varied: dict[str, Job]
) -> None:
    page = alice_client.get(
        reverse("job_list"), {"q": "zebra", "status": "completed"}
    ).content.decode()
    assert re.search(r'<form method="get" action="/jobs/"', page)
    assert 'value="zebra"' in page
    assert '<option value="completed" selected>' in page
    assert "Clear filters" in page


def test_invalid_filters_are_explained_not_ignored(
    alice_client: Any, varied: dict[str, Job]
) -> None:
    response = alice_client.get(
        reverse("job_list"), {"date_from": "2025-03-09", "date_to": "2025-03-01"}
    )
    page = response.content.decode()
    assert response.status_code == 200 and shown_ids(response) == []
    assert "The end date is before the start date." in page
    assert "Export CSV" not in page and "← Newest" not in page
    response = alice_client.get(reverse("job_export_csv"), {"date_from": "not a date"})
    assert response.status_code == 400 and "date_from" in response.content.decode()


# --- keyset pagination --------------------------------------------------------------------


def test_cursor_round_trip_and_garbage() -> None:
    position = Position(created_at=T0 + timedelta(microseconds=123457), id=42)
    assert cursor_decode(cursor_encode(position)) == position
    for junk in ("", "abc", "!!!", "x" * 100, cursor_encode(position)[:-3] + "@@@", "MTIz"):
        assert cursor_decode(junk) is None


def test_pages_follow_in_order_without_duplicates(alice_client: Any, team: Team) -> None:
    # Ties on created_at are the hard case: the id breaks them.
    times = [T0 - timedelta(minutes=i // 3) for i in range(23)]
    jobs = [add_job(team, created_at=t) for t in times]
    expected = [j.pk for j in sorted(jobs, key=lambda j: (j.created_at, j.pk), reverse=True)]
    pages = follow_pages(alice_client, reverse("job_list") + "?per_page=10")
    assert [len(p) for p in pages] == [10, 10, 3]
    assert list(itertools.chain(*pages)) == expected


def test_pages_keep_the_filters_and_offer_the_way_back(alice_client: Any, team: Team) -> None:
    for i in range(15):
        add_job(
            team, status="failed" if i % 2 else "completed", created_at=T0 - timedelta(minutes=i)
        )
    pages = follow_pages(alice_client, reverse("job_list") + "?status=failed&per_page=5")
    assert [len(p) for p in pages] == [5, 2]
    assert all(Job.objects.get(pk=pk).status == "failed" for pk in itertools.chain(*pages))
    first = alice_client.get(
        reverse("job_list"), {"status": "failed", "per_page": 5}
    ).content.decode()
    assert "← Newest" not in first
    older = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    assert "status=failed" in older and "per_page=5" in older and "cursor=" in older
    second = alice_client.get(older).content.decode()
    assert re.search(r'href="/jobs/\?status=failed&amp;per_page=5">← Newest', second)


def test_a_bad_cursor_shows_the_first_page(alice_client: Any, team: Team) -> None:
    job = add_job(team)
    assert shown_ids(alice_client.get(reverse("job_list"), {"cursor": "garbage"})) == [job.pk]


def test_iter_keyset_walks_everything_in_chunks(team: Team, django_assert_num_queries: Any) -> None:
    jobs = [add_job(team, created_at=T0 - timedelta(minutes=i // 4)) for i in range(10)]
    expected = [j.pk for j in sorted(jobs, key=lambda j: (j.created_at, j.pk), reverse=True)]
    queryset = Job.objects.filter(team=team).values("id", "created_at")
    with django_assert_num_queries(4):  # 3 + 3 + 3 + 1
        assert [row["id"] for row in iter_keyset(queryset, chunk=3)] == expected
    with django_assert_num_queries(3):  # 5, 5, and an empty one to be sure
        assert len(list(iter_keyset(queryset, chunk=5))) == 10


def _queries_for(client: Any, url: str) -> tuple[int, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured), [q["sql"] for q in captured]


def _assert_fixed_queries(client: Any, team: Team, *, deep_index: int) -> None:
    ordered = Job.objects.filter(team=team).order_by("-created_at", "-id")
    deep = ordered.values("created_at", "id")[deep_index]
    cursor = cursor_encode(Position(created_at=deep["created_at"], id=deep["id"]))
    counts = set()
    for size in (10, 50):
        for url in (f"/jobs/?per_page={size}", f"/jobs/?per_page={size}&cursor={cursor}"):
            count, sqls = _queries_for(client, url)
            counts.add(count)
            job_sql = [s for s in sqls if "dashboard_job" in s]
            # The page, and the result count bounded by a LIMIT: both cost the
            # same on page 1 and deep in 100,000 jobs.
            counted = [s for s in job_sql if "COUNT(" in s.upper()]
            pages = [s for s in job_sql if s not in counted]
            assert len(pages) == 1 and len(counted) == 1, job_sql
            assert f"LIMIT {COUNT_LIMIT + 1}" in counted[0]
            assert "OFFSET" not in pages[0] and "COUNT(" not in pages[0].upper()
            assert '"spec"' not in pages[0] and '"outputs"' not in pages[0]  # deferred
    assert len(counts) == 1 and counts.pop() <= PAGE_QUERY_BUDGET


def test_pages_make_a_fixed_number_of_queries(alice_client: Any, team: Team, bob: User) -> None:
    for i in range(120):
        add_job(team, created_by=bob if i % 2 else None, created_at=T0 - timedelta(seconds=i))
    _assert_fixed_queries(alice_client, team, deep_index=80)


def bulk_jobs(team: Team, count: int, users: list[User]) -> None:
    """``count`` finished jobs in one executemany: bulk_create's small SQLite
    batches take 15 s for 100,000 rows, this takes about two. Every column
    comes from a model instance, so new fields with defaults need no change here."""
    credential = make_credential(team)
    template = Job(
        team=team,
        credential=credential,
        credential_name=credential.name,
        provider="together",
        model="m1",
        spec={"prompts": ["p"]},
        status="completed",
        created_at=T0,
    )
    fields = [f for f in Job._meta.local_concrete_fields if not f.primary_key]
    base = [f.get_db_prep_save(f.pre_save(template, True), connection) for f in fields]
    at = [f.attname for f in fields].index
    created_at, created_by = at("created_at"), at("created_by_id")
    date_field = Job._meta.get_field("created_at")

    def row(i: int) -> list[Any]:
        values = list(base)
        moment = T0 - timedelta(seconds=i // 2)  # pairs share a time: the id breaks ties
        values[created_at] = date_field.get_db_prep_save(moment, connection)
        values[created_by] = users[i % len(users)].pk
        return values

    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = (
        f"INSERT INTO {connection.ops.quote_name(Job._meta.db_table)} ({columns}) VALUES ({marks})"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, (row(i) for i in range(count)))


def test_100k_jobs_first_and_deep_page_queries_are_fixed(
    alice_client: Any, team: Team, alice: User, bob: User, django_assert_max_num_queries: Any
) -> None:
    bulk_jobs(team, 100_000, [alice, bob])
    _assert_fixed_queries(alice_client, team, deep_index=70_000)
    deep = (
        Job.objects.filter(team=team)
        .order_by("-created_at", "-id")
        .values("created_at", "id")[70_000]
    )
    cursor = cursor_encode(Position(created_at=deep["created_at"], id=deep["id"]))
    with django_assert_max_num_queries(PAGE_QUERY_BUDGET):
        response = alice_client.get(
            reverse("job_list"), {"cursor": cursor, "created_by": "bob", "per_page": 50}
        )
    position = Position(created_at=deep["created_at"], id=deep["id"])
    expected = (
        Job.objects.filter(team=team, created_by=bob)
        .filter(keyset.after(position))
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)[:50]
    )
    assert shown_ids(response) == list(expected) and len(expected) == 50


# --- live status -----------------------------------------------------------------------------


def test_rows_poll_while_active_with_filters_and_cursor_in_the_poll_url(
    alice_client: Any, team: Team
) -> None:
    for i in range(4):
        add_job(team, status="running", model="m9", created_at=T0 - timedelta(minutes=i))
    first = alice_client.get(reverse("job_list"), {"model": "m9", "per_page": 10}).content.decode()
    assert 'hx-trigger="every 2s"' in first and "data-poll" in first
    assert 'hx-get="/jobs/?model=m9&amp;per_page=10"' in first
    pages = follow_pages(alice_client, reverse("job_list") + "?model=m9&per_page=2")
    assert len(pages) == 2
    second_url = re.search(
        r'href="([^"]+)" rel="next"',
        alice_client.get(reverse("job_list") + "?model=m9&per_page=2").content.decode(),
    ).group(1)
    second = alice_client.get(second_url.replace("&amp;", "&")).content.decode()
    poll = re.search(r'hx-get="([^"]+)"', second).group(1)
    assert "cursor=" in poll and "model=m9" in poll and "per_page=2" in poll


def test_poll_returns_rows_and_stops_once_nothing_is_active(alice_client: Any, team: Team) -> None:
    job = add_job(team, status="running")
    response = alice_client.get(reverse("job_list"), headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<tbody id="job-rows"') and "<html" not in body
    Job.objects.filter(pk=job.pk).update(status="completed", progress_done=1)
    response = alice_client.get(reverse("job_list"), headers={"HX-Request": "true"})
    assert response.status_code == 286
    assert (
        "data-poll" not in response.content.decode()
        and 'data-status="completed"' in response.content.decode()
    )


def test_page_of_finished_jobs_does_not_poll(alice_client: Any, team: Team) -> None:
    add_job(team, status="completed")
    page = alice_client.get(reverse("job_list")).content.decode()
    assert "data-poll" not in page


def test_the_home_page_rows_still_render(alice_client: Any, team: Team) -> None:
    job = add_job(team, status="running")
    page = alice_client.get(reverse("home")).content.decode()
    assert f'data-job="{job.pk}"' in page
    assert page.count("<td", page.index(f'id="job-row-{job.pk}"')) >= 7


# --- exports -------------------------------------------------------------------------------


@pytest.fixture
def export_jobs(team: Team, alice: User) -> dict[str, Job]:
    credential = make_credential(team, name="prod key")
    start = T0 - timedelta(hours=1)
    return {
        "formula": add_job(
            team,
            credential,
            created_by=alice,
            created_at=T0,
            prompts=["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(A1)", "\tx", "\rz"],
            outputs=[
                '=HYPERLINK("http://x")',
                {"answer": 42, "note": "ok"},
                None,
                "plain",
                "ok",
                "ok",
            ],
            started_at=start,
            finished_at=start + timedelta(seconds=12.5),
        ),
        "failed": add_job(
            team,
            credential,
            status="failed",
            error="-boom",
            created_by=None,
            created_at=T0 - timedelta(minutes=1),
            prompts=["plain"],
        ),
        "other_model": add_job(team, credential, model="m2", created_at=T0 - timedelta(minutes=2)),
    }


def test_csv_export_has_the_header_the_filtered_rows_and_defused_formulas(
    alice_client: Any, export_jobs: dict[str, Job]
) -> None:
    response = alice_client.get(reverse("job_export_csv"), {"model": "m1"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert re.match(
        r'attachment; filename="jobs-alpha-\d{8}-\d{6}\.csv"', response["Content-Disposition"]
    )
    rows = list(csv.reader(io.StringIO(streamed(response))))
    assert rows[0] == CSV_HEADER
    by_id = {int(row[0]): dict(zip(CSV_HEADER, row, strict=True)) for row in rows[1:]}
    assert set(by_id) == {export_jobs["formula"].pk, export_jobs["failed"].pk}
    formula = by_id[export_jobs["formula"].pk]
    # The rows themselves are in the job's own export (tests/jobs/test_items.py).
    assert formula["outcome"] == "completed · 1 failed"
    assert (formula["items"], formula["completed"], formula["failed"]) == ("6", "5", "1")
    assert formula["credential"] == "prod key" and formula["created_by"] == "alice"
    assert formula["duration_seconds"] == "12.5"
    assert formula["created_at"] == "2025-03-10T12:00:00+00:00"
    failed = by_id[export_jobs["failed"].pk]
    assert (
        failed["error"] == "'-boom"
        and failed["created_by"] == ""
        and failed["duration_seconds"] == ""
    )
    for row in rows[1:]:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("=1+1", "'=1+1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("a=1", "a=1"),
        ("", ""),
        ("'=x", "'=x"),
    ],
)
def test_csv_safe(value: str, safe: str) -> None:
    assert csv_safe(value) == safe


def test_jsonl_export_lines_parse_with_the_documented_fields(
    alice_client: Any, export_jobs: dict[str, Job]
) -> None:
    response = alice_client.get(reverse("job_export_jsonl"))
    assert response["Content-Type"].startswith("application/x-ndjson")
    lines = streamed(response).splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == [
        export_jobs["formula"].pk,
        export_jobs["failed"].pk,
        export_jobs["other_model"].pk,
    ]
    assert set(records[0]) == {
        "id",
        "provider",
        "model",
        "credential",
        "status",
        "provider_status",
        "spec",
        "outcome",
        "counts",
        "error",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
        "duration_seconds",
        "tokens",
        "cost",
        "demo",
    }
    first = records[0]
    assert first["counts"] == {
        "items": 6,
        "completed": 5,
        "failed": 1,
        "cancelled": 0,
        "valid": 0,
        "invalid": 0,
    }
    assert first["duration_seconds"] == 12.5 and first["credential"] == "prod key"
    assert first["cost"] == {"estimated": None, "actual": None}  # unpriced: unknown, not 0
    assert records[1]["created_by"] is None and records[1]["started_at"] is None


def test_exports_never_contain_the_secret(alice_client: Any, export_jobs: dict[str, Job]) -> None:
    credential = Credential.objects.get(name="prod key")
    for name in ("job_export_csv", "job_export_jsonl"):
        body = streamed(alice_client.get(reverse(name)))
        assert SECRET not in body and credential.secret not in body


def test_export_matches_the_page_for_the_same_filters(
    alice_client: Any, varied: dict[str, Job]
) -> None:
    for params, _ in FILTER_CASES:
        page_ids = shown_ids(alice_client.get(reverse("job_list"), params))
        lines = streamed(alice_client.get(reverse("job_export_jsonl"), params)).splitlines()
        assert [json.loads(line)["id"] for line in lines] == page_ids, params


def test_export_streams_in_keyset_chunks(
    alice_client: Any, team: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyset, "CHUNK", 4)
    jobs = [add_job(team, created_at=T0 - timedelta(minutes=i // 3)) for i in range(10)]
    response = alice_client.get(reverse("job_export_csv"))
    with CaptureQueriesContext(connection) as captured:
        rows = list(csv.reader(io.StringIO(streamed(response))))[1:]
    job_queries = [q["sql"] for q in captured if "dashboard_job" in q["sql"]]
    assert len(job_queries) == 3  # 4 + 4 + 2 rows
    assert all("LIMIT 4" in sql and "OFFSET" not in sql for sql in job_queries)
    assert sorted(int(row[0]) for row in rows) == sorted(j.pk for j in jobs)


def test_export_is_audited_with_its_filters(alice_client: Any, team: Team, alice: User) -> None:
    streamed(alice_client.get(reverse("job_export_csv"), {"status": "failed"}))
    event = AuditEvent.objects.get(action="jobs.exported")
    assert event.team == team and event.actor == alice
    assert event.details == {"format": "csv", "filters": {"status": "failed"}}


def test_export_links_carry_the_filters_not_the_cursor(alice_client: Any, team: Team) -> None:
    for i in range(3):
        add_job(team, created_at=T0 - timedelta(minutes=i))
    page = alice_client.get(
        reverse("job_list"), {"status": "completed", "per_page": 10, "cursor": "x"}
    ).content.decode()
    assert 'href="/jobs/export.csv?status=completed"' in page
    assert 'href="/jobs/export.jsonl?status=completed"' in page


def test_jobs_filtered_is_usable_alone(team: Team) -> None:
    job = add_job(team, provider="lamini")
    add_job(team)
    assert list(jobs_filtered(team=team, filters=JobFilters(provider="lamini"))) == [job]
    assert JobFilters(status="failed").as_params() == {"status": "failed"}
    assert not JobFilters().active
