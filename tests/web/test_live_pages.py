"""The job page's buttons and the home page's panels, live from the partials
the pages use; one label per state; the progress bar's segments."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from django.template import Context, Template
from django.urls import reverse

from dashboard.jobs.services import job_cancel, job_transition
from dashboard.models import Credential, Job, ModelInstance
from tests.conftest import finish_items, make_credential, make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_client(client: Any, bob: Any, team: Any) -> Any:
    client.force_login(bob)
    return client


def actions_of(page: str) -> str:
    """The text of the job page's action bar (#job-actions)."""
    start = page.index('id="job-actions"')
    return page[start : page.index("</div>", start)]


def poll_url(page: str) -> str:
    return html.unescape(re.search(r'id="job-poller" hx-get="([^"]+)"', page).group(1))


# --- the job page's buttons ---------------------------------------------------------------------


def test_an_active_job_offers_cancel_with_a_question_and_no_retry(
    bob_client: Any, team: Any
) -> None:
    job = make_job(make_credential(team), ["a", "b"])
    actions = actions_of(bob_client.get(job.get_absolute_url()).content.decode())
    assert ">Cancel</button>" in actions and "data-confirm=" in actions
    assert "Retry" not in actions and "Clone" in actions


def test_the_live_answer_sends_the_buttons_only_once_the_job_ended(
    bob_client: Any, team: Any
) -> None:
    job = make_job(make_credential(team), ["a", "b", "c"])
    url = poll_url(bob_client.get(job.get_absolute_url()).content.decode())
    running = bob_client.get(url, headers={"HX-Request": "true"})
    assert running.status_code == 200 and 'id="job-actions"' not in running.content.decode()

    finish_items(job, ["ok"], {1: "boom"})
    job_cancel(job)
    ended = bob_client.get(url, headers={"HX-Request": "true"})
    assert ended.status_code == 286
    actions = actions_of(ended.content.decode())
    assert ">Cancel</button>" not in actions
    assert "Retry unfinished (2)" in actions and "Retry all" in actions


def test_a_cancelled_job_offers_retry_unfinished_which_redoes_exactly_those(
    bob_client: Any, team: Any
) -> None:
    job = make_job(make_credential(team), ["a", "b", "c"])
    finish_items(job, ["ok"])
    job_cancel(job)
    actions = actions_of(bob_client.get(job.get_absolute_url()).content.decode())
    assert "Retry unfinished (2)" in actions and "did not complete" not in actions
    bob_client.post(reverse("job_retry", args=[job.pk]), {"failed_only": "1"})
    new = Job.objects.exclude(pk=job.pk).get()
    assert list(new.items.values_list("source_index", flat=True)) == [1, 2]


def test_a_job_that_failed_whole_offers_one_retry_not_two_of_the_same(
    bob_client: Any, team: Any
) -> None:
    job = make_job(make_credential(team), ["a", "b"])
    job_transition(job.pk, "failed", error="nope", item_error="nope")
    actions = actions_of(bob_client.get(job.get_absolute_url()).content.decode())
    assert "Retry rows that did not complete (2)" in actions and "Retry all" not in actions


def test_no_retry_when_the_credential_is_gone_only_clone(bob_client: Any, team: Any) -> None:
    credential = make_credential(team)
    job = make_job(credential, ["a", "b"])
    finish_items(job, ["ok"], {1: "boom"})
    job_transition(job.pk, "completed")
    Credential.objects.filter(pk=credential.pk).delete()
    actions = actions_of(bob_client.get(job.get_absolute_url()).content.decode())
    assert "Retry" not in actions and "Clone" in actions and "credential was deleted" in actions


def test_prompts_of_an_ended_job_that_never_ran_say_so(bob_client: Any, team: Any) -> None:
    job = make_job(make_credential(team), ["a", "b"])
    page = bob_client.get(job.get_absolute_url()).content.decode()
    assert "waiting" in page and "never ran" not in page
    job_cancel(job)
    page = bob_client.get(job.get_absolute_url()).content.decode()
    assert "never ran" in page and ">waiting<" not in page


def test_the_timeline_is_newest_first(bob_client: Any, team: Any) -> None:
    job = make_job(make_credential(team), ["a"])
    job_cancel(job)
    page = bob_client.get(job.get_absolute_url()).content.decode()
    timeline = page[page.index('id="job-timeline"') :]
    assert timeline.index("Cancelled") < timeline.index("Saved")


def test_errors_that_name_a_page_link_to_it(bob_client: Any, team: Any) -> None:
    job = make_job(make_credential(team), ["a"])
    job_transition(
        job.pk, "failed", error="No instance of m is loaded. Load it on the Instances page <now>."
    )
    page = bob_client.get(job.get_absolute_url()).content.decode()
    assert f'<a href="{reverse("instance_list")}">Instances page</a> &lt;now&gt;' in page


# --- the home page ---------------------------------------------------------------------------------


def test_home_polls_counters_and_panels_together_until_nothing_is_active(
    bob_client: Any, team: Any
) -> None:
    job = make_job(make_credential(team), ["a"])
    page = bob_client.get(reverse("home")).content.decode()
    assert 'id="active-jobs" hx-get="/"' in page and "every 2s" in page
    live = bob_client.get(reverse("home"), headers={"HX-Request": "true"})
    body = live.content.decode()
    assert live.status_code == 200
    assert 'id="home-stats"' in body and 'id="recent-jobs"' in body
    assert f'id="job-row-{job.pk}"' in body and "No finished jobs yet." in body

    finish_items(job, ["ok"])
    job_transition(job.pk, "completed")
    live = bob_client.get(reverse("home"), headers={"HX-Request": "true"})
    body = live.content.decode()
    assert live.status_code == 286  # the last answer: stop polling
    assert "Nothing running." in body
    stats = body[body.index('id="home-stats"') :]
    assert 'hx-swap-oob="true"' in stats[:120]
    assert re.search(r'data-stat="running"><span class="num">0<', stats)
    assert re.search(r'data-stat="completed"><span class="num">1<', stats)
    recent = body[body.index('id="recent-jobs"') :]
    assert 'hx-swap-oob="true"' in recent[:60] and f'id="job-row-{job.pk}"' in recent


# --- one label per state ------------------------------------------------------------------------


def render(text: str, **context: Any) -> str:
    return Template(text).render(Context(context))


@pytest.mark.parametrize(
    ("status", "said", "shown"),
    [
        ("queued", "Queued", ""),
        ("running", "RUNNING", ""),
        ("running", "Processing", ""),
        ("queued", "Waiting for instance", "Waiting for instance"),
        ("completed", "Completed", ""),
        ("failed", "Error", ""),
        ("stopped", "RUNNING", ""),  # an instance after a shutdown
        ("stopping", "RUNNING", ""),
        ("requested", "model is being made available", "model is being made available"),
    ],
)
def test_the_provider_word_only_where_it_adds_something(status: str, said: str, shown: str) -> None:
    obj = SimpleNamespace(status=status, provider_status=said)
    assert render("{{ obj|provider_word }}", obj=obj) == shown


def test_a_stopped_instance_shows_one_word(client: Any, bob: Any, team: Any) -> None:
    client.force_login(bob)
    credential = make_credential(team, "bytez")
    ModelInstance.objects.create(
        team=team, credential=credential, model="m", status="stopped", provider_status="RUNNING"
    )
    page = client.get(reverse("instance_list")).content.decode()
    assert "Stopped" in page and "RUNNING" not in page


def test_a_job_row_does_not_repeat_its_status(bob_client: Any, team: Any) -> None:
    job = make_job(make_credential(team, "mymagic"), ["a"], model="llama3_70b")
    finish_items(job, ["ok"])
    job_transition(job.pk, "completed", provider_status="Completed")
    page = bob_client.get(reverse("job_list")).content.decode()
    row = page[page.index(f'id="job-row-{job.pk}"') :]
    row = row[: row.index("</tr>")]
    assert "completed" in row and "Completed" not in row


# --- the progress bar -------------------------------------------------------------------------------


def progress(job: Job) -> str:
    return render('{% include "partials/progress.html" %}', job=job)


def test_a_job_not_started_has_no_segment_and_says_so(team: Any) -> None:
    bar = progress(make_job(make_credential(team), ["a", "b", "c", "d"]))
    assert 'data-state="not-started"' in bar and "seg-" not in bar
    assert "Not started: 4 waiting" in bar


def test_segments_for_completed_failed_and_never_run(team: Any) -> None:
    job = make_job(make_credential(team), ["a", "b", "c", "d"])
    finish_items(job, ["ok", "ok"], {2: "boom"})
    bar = progress(job)
    assert 'data-state="running"' in bar
    assert 'class="seg seg-completed" data-progress="50"' in bar
    assert 'class="seg seg-failed" data-progress="25"' in bar
    assert "1 waiting" in bar
    job_cancel(job)
    job.refresh_from_db()
    bar = progress(job)
    assert 'data-state="cancelled"' in bar and 'seg-cancelled" data-progress="25"' in bar
    assert "2 completed, 1 failed, 1 never ran" in bar


def test_a_clean_success_is_done_and_a_partial_one_is_not(team: Any) -> None:
    job = make_job(make_credential(team), ["a"])
    finish_items(job, ["ok"])
    job_transition(job.pk, "completed")
    job.refresh_from_db()
    assert 'data-state="done"' in progress(job)
    other = make_job(make_credential(team), ["a", "b"])
    finish_items(other, ["ok"], {1: "boom"})
    job_transition(other.pk, "completed")
    other.refresh_from_db()
    assert 'data-state="partial"' in progress(other)


# --- times ----------------------------------------------------------------------------------------


def test_times_name_their_zone_and_keep_the_iso_moment(settings: Any) -> None:
    at = datetime(2025, 5, 1, 14, 3, 7, tzinfo=UTC)
    out = render('{% when at %} {% when at "time" %} {% when none %}', at=at, none=None)
    assert (
        '<time datetime="2025-05-01T14:03:07+00:00" data-local="datetime" '
        'title="2025-05-01 14:03:07 UTC">2025-05-01 14:03:07 UTC</time>'
    ) in out
    assert ">14:03:07 UTC</time>" in out and out.endswith("—")


def test_times_are_named_in_the_pages(bob_client: Any, team: Any) -> None:
    job = make_job(make_credential(team))
    page = bob_client.get(job.get_absolute_url()).content.decode()
    assert re.search(r'<time datetime="[^"]+" data-local="datetime" [^>]*>[^<]+ UTC</time>', page)


def test_the_provider_word_links_the_page_it_names(bob_client: Any, team: Any) -> None:
    job = make_job(make_credential(team, "bytez"), ["a"], model="m")
    job_transition(
        job.pk,
        "queued",
        provider_status="Waiting for instance (requested: available; load it on the Instances page)",
    )
    page = bob_client.get(job.get_absolute_url()).content.decode()
    status = page[page.index('id="job-status"') :]
    assert f'load it on the <a href="{reverse("instance_list")}">Instances page</a>)' in status


# --- the items of a live page never miss a write ----------------------------------------------


def test_a_write_stamped_before_a_poll_and_committed_after_it_still_arrives(
    bob_client: Any, team: Any
) -> None:
    """A worker stamps its items, then commits; a poll that answers between
    the two must not hand out a cursor past that stamp, or the row stays
    'pending' on the page for good (seen on PostgreSQL in the browser test)."""
    from datetime import timedelta

    from django.utils import timezone

    from dashboard.models import Item

    job = make_job(make_credential(team), ["a", "b"])
    Job.objects.filter(pk=job.pk).update(status="running")
    Item.objects.filter(job=job).update(updated_at=timezone.now() - timedelta(minutes=1))
    page = bob_client.get(job.get_absolute_url()).content.decode()
    stamped = timezone.now()  # the worker's stamp, taken before its commit
    first_poll = bob_client.get(poll_url(page))
    assert 'id="item-0"' not in first_poll.content.decode()  # not committed yet
    finish_items(job, ["late answer"])
    Item.objects.filter(job=job, index=0).update(updated_at=stamped)  # the commit lands now
    second_poll = bob_client.get(poll_url(first_poll.content.decode()))
    body = second_poll.content.decode()
    assert 'id="item-0"' in body and "late answer" in body


def test_the_last_poll_sends_the_whole_page(bob_client: Any, team: Any) -> None:
    """Once the job has ended, its last poll re-sends the page's rows whatever
    the cursor says: every item write committed before the job ended."""
    job = make_job(make_credential(team), ["a", "b"])
    finish_items(job, ["one", "two"])
    Job.objects.filter(pk=job.pk).update(status="completed")
    future = int((datetime.now(UTC).timestamp() + 3600) * 1_000_000)
    response = bob_client.get(
        reverse("job_live", args=[job.pk]), {"since": future, "first": 0, "last": 1}
    )
    body = response.content.decode()
    assert response.status_code == 286
    assert 'id="item-0"' in body and "one" in body and 'id="item-1"' in body and "two" in body
