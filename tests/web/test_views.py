"""Pages, through the Django test client: what a user sees and what a click does."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.urls import reverse

from dashboard.jobs import worker
from dashboard.models import Credential, Job, JobEvent
from providers.simulators import completion_text
from tests.conftest import SECRET, finish_items, make_credential, make_job, make_user, prompts_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice_client(client: Any, alice: Any, team: Any) -> Any:
    client.force_login(alice)
    return client


@pytest.fixture
def bob_client(client: Any, bob: Any, team: Any) -> Any:
    client.force_login(bob)
    return client


def test_login_page_and_redirect(client: Any, alice: Any, team: Any) -> None:
    response = client.get(reverse("home"))
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    response = client.post(reverse("login"), {"username": "alice", "password": "pw-for-tests-123"})
    assert response.status_code == 302 and response["Location"] == "/"
    page = client.get("/").content.decode()
    assert "Alpha" in page and "Active jobs" in page


def test_wrong_password_says_so(client: Any, alice: Any) -> None:
    response = client.post(reverse("login"), {"username": "alice", "password": "nope"})
    assert "Please enter a correct username and password" in response.content.decode()


def test_add_credential_never_shows_the_secret(alice_client: Any, team: Any) -> None:
    response = alice_client.post(
        reverse("credential_list"),
        {
            "provider": "together",
            "name": "Main",
            "secret": "tok-very-secret-123",
            "base_url": "",
            "options": "",
            "max_concurrency": 4,
        },
        follow=True,
    )
    page = response.content.decode()
    assert "Credential “Main” saved" in page
    assert "tok-very-secret-123" not in page
    credential = Credential.objects.get(name="Main")
    assert credential.base_url == "https://api.together.xyz"
    assert "tok-very-secret-123" not in credential.secret  # encrypted at rest
    assert credential.reveal_secret() == "tok-very-secret-123"


def test_credential_form_errors_are_shown_and_input_kept(alice_client: Any, team: Any) -> None:
    response = alice_client.post(
        reverse("credential_list"),
        {
            "provider": "together",
            "name": "X",
            "secret": "",
            "base_url": "http://169.254.169.254/",
            "options": "[1,2]",
            "max_concurrency": 0,
        },
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "This field is required." in page
    assert "metadata address" in page
    assert "Must be a JSON object" in page
    assert 'value="X"' in page
    assert not Credential.objects.exists()


def test_member_cannot_add_credentials(bob_client: Any, team: Any) -> None:
    response = bob_client.post(
        reverse("credential_list"),
        {"provider": "together", "name": "B", "secret": "s", "max_concurrency": 1},
    )
    assert response.status_code == 403
    assert not Credential.objects.exists()


def test_delete_credential_keeps_jobs(alice_client: Any, team: Any) -> None:
    credential = make_credential(team)
    job = make_job(credential)
    response = alice_client.post(reverse("credential_delete", args=[credential.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.credential is None and job.credential_name == credential.name


def test_submit_job_saves_and_redirects(
    bob_client: Any, team: Any, django_capture_on_commit_callbacks: Any
) -> None:
    credential = make_credential(team)
    with django_capture_on_commit_callbacks() as callbacks:
        response = bob_client.post(
            reverse("job_new"),
            {
                "credential": credential.pk,
                "model": "m1",
                "prompts": "one\ntwo\n\nthree",
                "split": "lines",
                "max_tokens": "16",
                "temperature": "0.5",
                "options": "",
            },
        )
    job = Job.objects.get()
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    assert prompts_of(job) == ["one", "two", "three"]
    assert job.spec["max_tokens"] == 16 and job.spec["temperature"] == 0.5
    assert job.status == "pending" and job.created_by.username == "bob"
    assert len(callbacks) == 1  # a worker is nudged after commit, not waited on


def test_submit_job_form_errors(bob_client: Any, team: Any) -> None:
    credential = make_credential(team)
    response = bob_client.post(
        reverse("job_new"),
        {
            "credential": credential.pk,
            "model": "",
            "prompts": "  ",
            "split": "single",
            "temperature": "9",
        },
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "Enter at least one prompt." in page
    assert "Ensure this value is less than or equal to 5" in page
    assert not Job.objects.exists()


def test_provider_fields_follow_the_credential(bob_client: Any, team: Any) -> None:
    together = make_credential(team, "together")
    mymagic = make_credential(team, "mymagic")
    page = bob_client.get(
        reverse("job_new"),
        {"credential": mymagic.pk},
        headers={"HX-Request": "true", "HX-Target": "provider-fields"},
    ).content.decode()
    assert 'name="question"' in page and 'name="temperature"' not in page
    assert "llama3_70b" in page  # documented models are suggested
    page = bob_client.get(
        reverse("job_new"),
        {"credential": together.pk},
        headers={"HX-Request": "true", "HX-Target": "provider-fields"},
    ).content.decode()
    assert 'name="temperature"' in page and 'name="question"' not in page


def test_job_detail_shows_outputs_escaped(bob_client: Any, team: Any, sims: Any) -> None:
    together = sims.get("together")
    credential = make_credential(team, base_url=together.base_url)
    job = make_job(credential, ["<script>alert(1)</script>"])
    worker.advance_job(job.pk)
    page = bob_client.get(job.get_absolute_url()).content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    text = completion_text("test-model", "<script>alert(1)</script>")
    assert text.replace("<", "&lt;").replace(">", "&gt;").strip() in page
    assert 'id="job-poller"' not in page  # terminal: nothing polls


def test_live_partial_sends_only_new_events_and_stops_at_terminal(
    bob_client: Any, team: Any, sims: Any
) -> None:
    together = sims.get("together")
    credential = make_credential(team, base_url=together.base_url)
    job = make_job(credential)
    page = bob_client.get(job.get_absolute_url()).content.decode()
    assert 'id="job-poller"' in page and "every 1s" in page
    poll_url = html.unescape(re.search(r'id="job-poller" hx-get="([^"]+)"', page).group(1))
    response = bob_client.get(poll_url, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "Saved" not in response.content.decode()  # already on the page
    worker.advance_job(job.pk)
    response = bob_client.get(poll_url, headers={"HX-Request": "true"})
    body = response.content.decode()
    assert response.status_code == 286  # stop polling
    assert "Completed: 1 of 1 prompt(s) completed." in body and "Running on Together." in body
    # Newest first: the new events go on top of the timeline, the terminal one first.
    assert 'hx-swap-oob="afterbegin:#job-timeline"' in body
    assert body.index("Completed: 1 of 1") < body.index("Running on Together.")
    assert completion_text("test-model", "Hello").strip() in body
    # The buttons come with the last answer, from the page's own partial.
    actions = body[body.index('id="job-actions"') :]
    assert 'hx-swap-oob="true"' in actions[:80]
    assert ">Cancel<" not in actions and "Retry all" in actions and "Clone" in actions


def test_cancel_and_retry(bob_client: Any, team: Any) -> None:
    credential = make_credential(team)
    job = make_job(credential)
    bob_client.post(reverse("job_cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == "cancelled"
    response = bob_client.post(reverse("job_retry", args=[job.pk]))
    new = Job.objects.exclude(pk=job.pk).get()
    assert response["Location"] == new.get_absolute_url()
    assert new.retry_of == job and new.spec == job.spec
    assert job.events.filter(message__contains=f"Retried as job {new.pk}").exists()


def test_note_on_timeline(bob_client: Any, team: Any) -> None:
    job = make_job(make_credential(team))
    bob_client.post(reverse("job_note", args=[job.pk]), {"note": "Looks <b>fine</b>"})
    event = job.events.get(kind=JobEvent.Kind.NOTE)
    assert event.author.username == "bob"
    page = bob_client.get(job.get_absolute_url()).content.decode()
    assert "Looks &lt;b&gt;fine&lt;/b&gt;" in page


def test_other_team_gets_404(client: Any, charlie: Any, other_team: Any, team: Any) -> None:
    job = make_job(make_credential(team))
    client.force_login(charlie)
    for name in ("job_detail", "job_live"):
        assert client.get(reverse(name, args=[job.pk])).status_code == 404
    for name in ("job_cancel", "job_retry", "job_note"):
        assert client.post(reverse(name, args=[job.pk])).status_code == 404
    job.refresh_from_db()
    assert job.status == "pending"


def test_clone_prefills_the_form(bob_client: Any, team: Any) -> None:
    job = make_job(make_credential(team), ["a", "b"], max_tokens=7)
    page = bob_client.get(reverse("job_new"), {"clone": job.pk}).content.decode()
    assert "a\n---\nb" in page and 'value="7"' in page


def test_job_list_polls_while_active(bob_client: Any, team: Any) -> None:
    job = make_job(make_credential(team))
    page = bob_client.get(reverse("job_list")).content.decode()
    assert f"#{job.pk}" in page and "every 2s" in page
    Job.objects.filter(pk=job.pk).update(status="completed")
    response = bob_client.get(reverse("job_list"), headers={"HX-Request": "true"})
    assert response.status_code == 286


def test_secret_in_no_page(alice_client: Any, team: Any, sims: Any) -> None:
    """Every page a user can reach, and the admin, never contains the secret."""
    together = sims.get("together")
    credential = make_credential(team, base_url=together.base_url)
    assert credential.reveal_secret() == SECRET
    job = make_job(credential)
    worker.advance_job(job.pk)
    from django.contrib.auth.models import User

    User.objects.filter(username="alice").update(is_staff=True, is_superuser=True)
    urls = [
        "/",
        reverse("credential_list"),
        reverse("job_list"),
        reverse("job_new"),
        job.get_absolute_url(),
        reverse("job_live", args=[job.pk]),
        "/admin/",
        "/admin/dashboard/credential/",
        f"/admin/dashboard/credential/{credential.pk}/change/",
        "/admin/dashboard/job/",
        f"/admin/dashboard/job/{job.pk}/change/",
        "/admin/dashboard/jobevent/",
    ]
    for url in urls:
        response = alice_client.get(url)
        assert response.status_code in (200, 286), url
        assert SECRET not in response.content.decode(), url
        assert credential.secret not in response.content.decode(), url


def test_viewer_sees_no_submit_links_and_gets_a_clear_403(client: Any, team: Any) -> None:
    from dashboard.models import Membership

    viewer = Membership.objects.create(team=team, user=make_user("vera"), role="viewer").user
    client.force_login(viewer)
    page = client.get("/").content.decode()
    assert 'href="/jobs/new"' not in page
    response = client.get(reverse("job_new"))
    assert response.status_code == 403 and "needs the member role" in response.content.decode()


def test_retry_failed_prompts_only(bob_client: Any, team: Any) -> None:
    job = make_job(make_credential(team), ["ok", "bad", "worse"])
    finish_items(job, ["fine"], {1: "boom", 2: "boom"})
    Job.objects.filter(pk=job.pk).update(status="completed")
    page = bob_client.get(job.get_absolute_url()).content.decode()
    assert "Retry rows that did not complete (2)" in page
    bob_client.post(reverse("job_retry", args=[job.pk]), {"failed_only": "1"})
    new = Job.objects.exclude(pk=job.pk).get()
    assert prompts_of(new) == ["bad", "worse"] and new.retry_of_id == job.pk
    assert list(new.items.values_list("source_index", flat=True)) == [1, 2]


def test_credential_with_a_live_instance_cannot_be_deleted(alice_client: Any, team: Any) -> None:
    from dashboard.models import ModelInstance

    credential = make_credential(team, "bytez")
    ModelInstance.objects.create(team=team, credential=credential, model="m", status="running")
    response = alice_client.post(reverse("credential_delete", args=[credential.pk]), follow=True)
    assert "still has 1 live model instance; shut it down" in response.content.decode()
    assert Credential.objects.filter(pk=credential.pk).exists()
