"""The datasets and comparisons pages through the test client: upload, paste,
preview, rename, delete; a job and a comparison over a dataset; the
comparison page, its live partial, ratings, notes, retry and exports."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.test import override_settings
from django.urls import reverse

from dashboard.models import Comparison, Dataset, Job, Membership, Rating, Role, RowNote
from tests.conftest import finish_items, make_credential, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_client(client: Any, bob: Any, team: Any) -> Any:
    client.force_login(bob)
    return client


def upload(client: Any, name: str, data: bytes, **fields: Any) -> Any:
    handle = io.BytesIO(data)
    handle.name = name
    return client.post(reverse("dataset_list"), {"kind": "upload", "file": handle, **fields})


def test_upload_shows_the_preview(bob_client: Any, team: Any) -> None:
    response = upload(bob_client, "q.csv", b'q,lang\nBonjour,fr\n"Hi, you",en\n')
    dataset = Dataset.objects.get()
    assert response.status_code == 302 and response["Location"] == dataset.get_absolute_url()
    page = bob_client.get(response["Location"]).content.decode()
    assert "Hi, you" in page and ">lang<" in page and "saved: 2 row(s), 2 column(s)" in page
    assert dataset.name == "q" and dataset.row_count == 2


def test_an_unreadable_file_says_where_and_saves_nothing(bob_client: Any, team: Any) -> None:
    response = upload(bob_client, "bad.jsonl", b'{"a": 1}\n[2]\n')
    assert response.status_code == 400
    assert "Line 2: each line must be one JSON object" in response.content.decode()
    assert not Dataset.objects.exists()


@override_settings(MAX_DATASET_BYTES=100)
def test_an_upload_over_the_limit_stops_before_it_is_stored(bob_client: Any, team: Any) -> None:
    response = upload(bob_client, "big.csv", b"a\n" + b"x\n" * 5000)
    assert response.status_code == 400 and "at most 100 bytes" in response.content.decode()
    assert not Dataset.objects.exists()


def test_paste_rename_and_delete(bob_client: Any, team: Any) -> None:
    response = bob_client.post(
        reverse("dataset_list"), {"kind": "paste", "name": "pasted", "text": "a\tb\n1\t2\n"}
    )
    dataset = Dataset.objects.get()
    assert response.status_code == 302 and dataset.columns == ["a", "b"]
    bad = bob_client.post(reverse("dataset_rename", args=[dataset.pk]), {"name": " "})
    assert bad.status_code == 400 and "This field is required" in bad.content.decode()
    bob_client.post(reverse("dataset_rename", args=[dataset.pk]), {"name": "renamed"})
    assert Dataset.objects.get().name == "renamed"
    credential = make_credential(team)
    bob_client.post(
        reverse("job_new"),
        {
            "credential": credential.pk,
            "model": "m",
            "split": "single",
            "dataset": dataset.pk,
            "prompt_template": "{a} and {b}",
        },
    )
    job = Job.objects.get()
    response = bob_client.post(reverse("dataset_delete", args=[dataset.pk]), follow=True)
    assert "keep their prompts" in response.content.decode()
    assert list(job.items.values_list("input", "input_fields")) == [
        ("1 and 2", {"a": "1", "b": "2"})
    ]


def test_template_preview_partial(bob_client: Any, team: Any) -> None:
    upload(bob_client, "q.csv", b"name\nAda\nAlan\nGrace\nLinus\n")
    dataset = Dataset.objects.get()
    url = reverse("dataset_template_preview")
    ok = bob_client.get(
        url, {"dataset": dataset.pk, "prompt_template": "Hi {name}"}
    ).content.decode()
    assert ok.count("<li>") == 3 and "Hi Grace" in ok and "Hi Linus" not in ok
    bad = bob_client.get(
        url, {"dataset": dataset.pk, "prompt_template": "Hi {nmae}"}
    ).content.decode()
    assert "{nmae} names no column" in bad and "the columns are: name" in bad


def test_new_job_form_errors_for_the_dataset(bob_client: Any, team: Any) -> None:
    upload(bob_client, "q.csv", b"name\nAda\n")
    dataset = Dataset.objects.get()
    credential = make_credential(team)
    base = {"credential": credential.pk, "model": "m", "split": "single"}
    both = bob_client.post(
        reverse("job_new"),
        {**base, "prompts": "x", "dataset": dataset.pk, "prompt_template": "{name}"},
    ).content.decode()
    assert "Either paste prompts or choose a dataset, not both." in both
    unknown = bob_client.post(
        reverse("job_new"), {**base, "dataset": dataset.pk, "prompt_template": "{age}"}
    ).content.decode()
    assert "{age} names no column" in unknown
    assert not Job.objects.exists()


def _comparison_post(credentials: list[Any], **extra: Any) -> dict[str, Any]:
    data = {
        "name": "cmp",
        "prompts": "one\ntwo\nthree",
        "split": "lines",
        "target-TOTAL_FORMS": str(len(credentials)),
        "target-INITIAL_FORMS": "0",
    }
    for i, credential in enumerate(credentials):
        data[f"target-{i}-credential"] = credential.pk
        data[f"target-{i}-model"] = f"model-{i}"
    data.update(extra)
    return data


def test_create_a_comparison_and_review_it(bob_client: Any, team: Any, nudges: Any) -> None:
    credentials = [make_credential(team), make_credential(team, "lamini")]
    added = bob_client.post(
        reverse("comparison_new"), {**_comparison_post(credentials), "add_target": "1"}
    )
    assert added.content.decode().count("<legend>Target ") == 3 and not Comparison.objects.exists()
    response = bob_client.post(
        reverse("comparison_new"),
        _comparison_post(credentials, **{"target-1-output_schema": '{"n": "int"}'}),
    )
    comparison = Comparison.objects.get()
    assert response.status_code == 302 and response["Location"] == comparison.get_absolute_url()
    first, second = comparison.jobs.order_by("id")
    assert first.progress_total == second.progress_total == 3
    assert second.spec["output_schema"] == {"n": "int"}

    page = bob_client.get(comparison.get_absolute_url()).content.decode()
    assert f'id="cell-{second.pk}-2"' in page and "no price set" in page
    live = bob_client.get(
        reverse("comparison_live", args=[comparison.pk]), {"since": "1", "first": "0", "last": "2"}
    )
    assert live.status_code == 200 and 'id="comparison-poller"' in live.content.decode()

    finish_items(first, ["A1", None, "A3"], {1: "failed here"})
    finish_items(second, [{"n": 1}, {"n": 2}, {"n": 3}])
    Job.objects.filter(pk__in=[first.pk, second.pk]).update(status="completed")
    done = bob_client.get(
        reverse("comparison_live", args=[comparison.pk]), {"since": "1", "first": "0", "last": "2"}
    )
    body = done.content.decode()
    assert done.status_code == 286 and "<template>" in body and "failed here" in body
    # The last poll sends the whole page whatever the cursor: a write stamped
    # before an earlier poll and committed after it is not lost.
    ahead = str(10**17)
    last = bob_client.get(
        reverse("comparison_live", args=[comparison.pk]),
        {"since": ahead, "first": "0", "last": "2"},
    )
    assert last.status_code == 286 and "failed here" in last.content.decode()

    rate = reverse("comparison_rate", args=[comparison.pk])
    row = bob_client.post(
        rate, {"index": 0, "job": second.pk, "best": "1"}, headers={"HX-Request": "true"}
    )
    assert row.status_code == 200 and 'id="row-0"' in row.content.decode()
    assert "★ best" in row.content.decode() and "bob" in row.content.decode()
    bob_client.post(rate, {"index": 0, "job": first.pk, "score": "-1"})
    assert Rating.objects.get(job=first).score == -1
    bob_client.post(rate, {"index": 0, "job": first.pk, "score": "0"})
    assert not Rating.objects.filter(job=first).exists()
    bob_client.post(
        reverse("comparison_note", args=[comparison.pk]), {"index": 1, "note": "T1 failed"}
    )
    assert RowNote.objects.get().text == "T1 failed"

    retried = bob_client.post(
        reverse("comparison_retry", args=[comparison.pk]), {"job": first.pk}, follow=True
    )
    assert "Retrying 1 cell(s)" in retried.content.decode()
    assert Job.objects.get(retry_of=first).progress_total == 1
    export = bob_client.get(reverse("comparison_export", args=[comparison.pk, "csv"]))
    lines = b"".join(export.streaming_content).decode().splitlines()
    assert len(lines) == 4 and lines[1].startswith("0,one,A1,")


def test_compare_from_a_finished_job(bob_client: Any, team: Any, nudges: Any) -> None:
    credentials = [make_credential(team), make_credential(team)]
    bob_client.post(
        reverse("job_new"),
        {"credential": credentials[0].pk, "model": "m", "prompts": "a\nb", "split": "lines"},
    )
    job = Job.objects.get()
    Job.objects.filter(pk=job.pk).update(status="completed")
    assert f"?from_job={job.pk}" in bob_client.get(job.get_absolute_url()).content.decode()
    form = bob_client.get(reverse("comparison_new"), {"from_job": job.pk}).content.decode()
    assert "The 2 prompts of" in form and 'value="m"' in form
    data = _comparison_post(credentials, from_job=job.pk, prompts="")
    response = bob_client.post(reverse("comparison_new"), data)
    assert response.status_code == 302
    comparison = Comparison.objects.get()
    for target in comparison.jobs.all():
        assert list(target.items.order_by("index").values_list("input", flat=True)) == ["a", "b"]


def test_viewers_read_but_cannot_rate(client: Any, team: Any, bob: Any, nudges: Any) -> None:
    client.force_login(bob)
    credentials = [make_credential(team), make_credential(team)]
    client.post(reverse("comparison_new"), _comparison_post(credentials))
    comparison = Comparison.objects.get()
    dave = make_user("dave")
    Membership.objects.create(team=team, user=dave, role=Role.VIEWER)
    client.force_login(dave)
    page = client.get(comparison.get_absolute_url())
    assert page.status_code == 200 and "Best of this row" not in page.content.decode()
    first = comparison.jobs.order_by("id").first()
    denied = client.post(
        reverse("comparison_rate", args=[comparison.pk]),
        {"index": 0, "job": first.pk, "score": "1"},
    )
    assert denied.status_code == 403 and "member role" in denied.content.decode()
    assert (
        client.post(reverse("job_rate", args=[first.pk]), {"index": 0, "score": "1"}).status_code
        == 403
    )
    assert not Rating.objects.exists()


def test_rate_a_single_jobs_row(bob_client: Any, team: Any, nudges: Any) -> None:
    bob_client.post(
        reverse("job_new"),
        {"credential": make_credential(team).pk, "model": "m", "prompts": "a", "split": "single"},
    )
    job = Job.objects.get()
    response = bob_client.post(
        reverse("job_rate", args=[job.pk]),
        {"index": 0, "score": "1"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200 and 'aria-pressed="true"' in response.content.decode()
    assert f'id="votes-{job.pk}-0" hx-swap-oob="true">' in response.content.decode()
    # The buttons and the ratings are in the row's detail panel; the row shows the votes.
    page = bob_client.get(job.get_absolute_url() + "?row=0").content.decode()
    assert f'id="rating-{job.pk}-0"' in page and "<strong>bob</strong>" in page
    assert f'id="votes-{job.pk}-0"' in page
