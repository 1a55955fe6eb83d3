"""Batch mode on the pages: the new-job form's mode (offered only where the
provider has a batch API, refused with the field's error elsewhere) and both
estimates; comparison targets that mix modes; the job page's Batches panel
(chunks with their states, counts, next check, an unknown one to resubmit,
members only) polling slowly; the history's mode badge and filter; a batch
job's retry as a batch or online; the credential check saying whether the
batch API answers; the usage page's split and batch prices."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from dashboard.core import clock
from dashboard.jobs.services import job_create, job_transition
from dashboard.models import BatchChunk, Comparison, Job, Membership, Price, Role, Team
from providers import JobSpec
from tests.conftest import finish_items, make_credential, make_job

pytestmark = pytest.mark.django_db

NO_BATCH = "Batch mode needs an OpenAI or Anthropic credential; Together has no batch API."


@pytest.fixture
def bob_client(client: Client, bob: User, team: Team) -> Client:
    client.force_login(bob)
    return client


@pytest.fixture
def viewer_client(team: Team) -> Client:
    viewer = User.objects.create_user("vera", password="pw-for-tests-123")
    Membership.objects.create(team=team, user=viewer, role=Role.VIEWER)
    client = Client()
    client.force_login(viewer)
    return client


def text(response: Any) -> str:
    return response.content.decode()


def flash(response: Any) -> str:
    return " ".join(str(m) for m in response.wsgi_request._messages)


def batch_job(team: Team, prompts: list[str] | None = None, **spec: Any) -> Job:
    credential = make_credential(team, "openai", name="OpenAI main")
    return job_create(
        team=team,
        credential=credential,
        spec=JobSpec(prompts=prompts or ["a", "b", "c", "d"], model="gpt-4o-mini", **spec),
        mode="batch",
    )


# --- the new-job form -------------------------------------------------------------------------


def test_the_mode_is_offered_only_for_a_credential_with_a_batch_api(
    bob_client: Client, team: Team
) -> None:
    openai = make_credential(team, "openai", name="A OpenAI")
    together = make_credential(team, "together", name="B Together")
    anthropic = make_credential(team, "anthropic", name="C Anthropic")

    offered = text(bob_client.get(reverse("job_new"), {"credential": openai.pk}))
    plain = text(bob_client.get(reverse("job_new"), {"credential": together.pk}))
    claude = text(bob_client.get(reverse("job_new"), {"credential": anthropic.pk}))
    assert 'name="mode" value="batch"' in claude

    assert 'name="mode" value="batch"' in offered and 'name="mode" value="online"' in offered
    assert "Batch: about half the price, results within 24 hours" in offered
    assert 'name="mode"' not in plain
    # Picking the credential swaps the provider's fields: the mode comes and goes with them.
    headers = {"HX-Request": "true", "HX-Target": "provider-fields"}
    swapped = text(bob_client.get(reverse("job_new"), {"credential": openai.pk}, headers=headers))
    assert 'id="job-mode"' in swapped and 'name="mode" value="batch"' in swapped
    back = text(bob_client.get(reverse("job_new"), {"credential": together.pk}, headers=headers))
    assert 'id="job-mode"' not in back


def test_batch_on_a_provider_without_one_is_refused_on_the_mode_field(
    bob_client: Client, team: Team
) -> None:
    together = make_credential(team, "together")
    body = {"credential": together.pk, "model": "m", "prompts": "one", "split": "lines"}

    response = bob_client.post(reverse("job_new"), {**body, "mode": "batch"})

    page = text(response)
    assert response.status_code == 200 and not Job.objects.exists()
    mode = page[page.index('id="job-mode"') :]
    assert html.escape(NO_BATCH) in mode[: mode.index("</fieldset>")]
    bogus = bob_client.post(reverse("job_new"), {**body, "mode": "turbo"})
    assert "Select a valid choice" in text(bogus) and not Job.objects.exists()


def test_a_batch_job_is_created_in_batch_mode_from_the_form(bob_client: Client, team: Team) -> None:
    openai = make_credential(team, "openai")
    body = {"credential": openai.pk, "model": "gpt-4o-mini", "prompts": "a\nb", "split": "lines"}

    response = bob_client.post(reverse("job_new"), {**body, "mode": "batch"})
    online = bob_client.post(reverse("job_new"), body)  # no mode: online

    batch, plain = Job.objects.order_by("id")
    assert response.status_code == 302 and response["Location"] == batch.get_absolute_url()
    assert online.status_code == 302
    assert (batch.mode, plain.mode) == ("batch", "online")


def test_the_live_estimate_shows_both_modes_side_by_side(bob_client: Client, team: Team) -> None:
    openai = make_credential(team, "openai")
    together = make_credential(team, "together")
    for provider in ("openai", "together"):
        Price.objects.create(
            team=team,
            provider=provider,
            model="m",
            input_per_mtok=Decimal(2),
            output_per_mtok=Decimal(10),
        )
    body = {"model": "m", "prompts": "a" * 40, "split": "single", "max_tokens": "100"}
    online_usd, batch_usd = "$0.0010", "$0.0005"  # 10 in, 100 out at 2/10, and half

    asked_batch = text(
        bob_client.post(reverse("job_estimate"), {**body, "credential": openai.pk, "mode": "batch"})
    )
    asked_online = text(bob_client.post(reverse("job_estimate"), {**body, "credential": openai.pk}))
    no_batch = text(
        bob_client.post(
            reverse("job_estimate"), {**body, "credential": together.pk, "mode": "batch"}
        )
    )

    assert f'<strong class="chosen">batch {batch_usd}</strong>' in asked_batch
    assert f"<strong>online {online_usd}</strong> · " in asked_batch
    assert f'<strong class="chosen">online {online_usd}</strong>' in asked_online
    assert "results within 24 hours" in asked_batch and "half of online" in asked_batch
    assert "batch $" not in no_batch and f"<strong>{online_usd}</strong>" in no_batch


# --- comparisons ------------------------------------------------------------------------------


def comparison_post(targets: list[tuple[Any, str]]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "cmp",
        "prompts": "one\ntwo",
        "split": "lines",
        "target-TOTAL_FORMS": str(len(targets)),
        "target-INITIAL_FORMS": "0",
    }
    for i, (credential, mode) in enumerate(targets):
        data.update({f"target-{i}-credential": credential.pk, f"target-{i}-model": f"m{i}"})
        data[f"target-{i}-mode"] = mode
    return data


def test_a_comparison_mixes_online_and_batch_targets(bob_client: Client, team: Team) -> None:
    openai, together = make_credential(team, "openai"), make_credential(team, "together")
    form = text(bob_client.get(reverse("comparison_new")))
    assert 'name="target-0-mode"' in form

    refused = bob_client.post(
        reverse("comparison_new"), comparison_post([(openai, "batch"), (together, "batch")])
    )
    assert html.escape(NO_BATCH) in text(refused) and not Comparison.objects.exists()

    created = bob_client.post(
        reverse("comparison_new"), comparison_post([(openai, "batch"), (together, "online")])
    )
    assert created.status_code == 302
    jobs = Comparison.objects.get().jobs.order_by("id")
    assert [(job.provider, job.mode) for job in jobs] == [
        ("openai", "batch"),
        ("together", "online"),
    ]
    detail = text(bob_client.get(Comparison.objects.get().get_absolute_url()))
    assert detail.count('<span class="badge mode-batch">batch</span>') == 1


# --- the job page's batches -------------------------------------------------------------------


def chunk(job: Job, number: int, start: int, end: int, **fields: Any) -> BatchChunk:
    return BatchChunk.objects.create(
        job=job, number=number, start_index=start, end_index=end, requests=end - start, **fields
    )


def test_the_job_page_lists_the_chunks_with_states_counts_and_next_check(
    bob_client: Client, team: Team
) -> None:
    job = batch_job(team, ["p"] * 10)
    due = clock.now() + timedelta(seconds=30)
    chunk(
        job,
        0,
        0,
        3,
        state="live",
        remote_id="batch_<b>abc</b>",
        provider_status="in_progress",
        counts={"total": 3, "completed": 2, "failed": 1},
        next_poll_at=due,
        submitted_at=clock.now(),
    )
    chunk(
        job,
        1,
        3,
        7,
        state="live",
        remote_id="msgbatch_1",
        provider_status="in_progress",
        counts={"processing": 4},
        next_poll_at=due,
    )
    chunk(
        job,
        2,
        7,
        9,
        state="live",
        remote_id="batch_fin",
        provider_status="finalizing",
        counts={"total": 2, "completed": 2, "failed": 0},
        next_poll_at=due,
    )
    chunk(job, 3, 9, 10, state="unknown", error="The create may have happened.")

    page = text(bob_client.get(job.get_absolute_url()))

    panel = page[page.index('id="job-batches"') : page.index('id="job-outputs"')]
    rows = {n: panel[panel.index(f'id="chunk-{n}"') :].split("</tr>")[0] for n in range(4)}
    assert "batch_&lt;b&gt;abc&lt;/b&gt;" in rows[0] and "<b>abc" not in panel  # escaped
    assert "2/3 completed · 1 failed" in rows[0] and "in_progress" in rows[0]
    assert ">Live<" in rows[0] and "next check at <time" in rows[0]
    assert f"{clock.now().astimezone(due.tzinfo):%Y}" in rows[0]  # submitted time shown
    assert "processing 4" in rows[1] and "completed" not in rows[1].split("chunk-counts")[1][:40]
    assert "finalizing" in rows[2] and "every row ran" in rows[2] and "2/2 completed" in rows[2]
    assert "Outcome unknown" in rows[3] and "next check" not in rows[3]
    assert "Waiting for OpenAI" in panel and "reports 5 of 10 rows run so far" in panel
    resubmit = reverse("job_chunk_resubmit", args=[job.pk, 3])
    assert f'action="{resubmit}"' in panel and "csrfmiddlewaretoken" in panel
    assert panel.count("Resubmit<") == 1  # only the unknown chunk offers it
    # The page polls a batch job slowly, and says so.
    assert 'hx-trigger="every 15s"' in page and "checks every 15 s" in panel
    assert '<span class="badge mode-batch">batch</span>' in page


def test_an_online_job_has_no_batches_panel_and_polls_every_second(
    bob_client: Client, team: Team
) -> None:
    job = make_job(make_credential(team))
    page = text(bob_client.get(job.get_absolute_url()))
    assert 'id="job-batches"' not in page and 'hx-trigger="every 1s"' in page


def test_the_live_update_sends_the_batches_panel(bob_client: Client, team: Team) -> None:
    job = batch_job(team)
    chunk(job, 0, 0, 4, state="live", remote_id="batch_live", counts={"processing": 4})
    live = text(bob_client.get(reverse("job_live", args=[job.pk])))
    assert 'id="job-batches" class="card"' in live and 'hx-swap-oob="true"' in live
    assert "processing 4" in live and 'hx-trigger="every 15s"' in live


def test_an_unknown_chunk_is_resubmitted_by_a_member_only(
    bob_client: Client, viewer_client: Client, team: Team, bob: User
) -> None:
    job = batch_job(team)
    chunk(job, 0, 0, 2, state="live", remote_id="batch_ok")
    unknown = chunk(job, 1, 2, 4, state="unknown")
    url = reverse("job_chunk_resubmit", args=[job.pk, unknown.number])

    assert viewer_client.post(url).status_code == 403
    assert bob_client.get(url).status_code == 405
    assert bob_client.post(reverse("job_chunk_resubmit", args=[job.pk, 9])).status_code == 404
    assert Job.objects.count() == 1

    response = bob_client.post(url)

    new = Job.objects.exclude(pk=job.pk).get()
    assert response.status_code == 302 and response["Location"] == new.get_absolute_url()
    assert (new.mode, new.retry_of_id, new.created_by) == ("batch", job.pk, bob)
    assert list(new.items.order_by("index").values_list("source_index", flat=True)) == [2, 3]
    assert "resubmitted as job" in flash(response)
    again = bob_client.post(reverse("job_chunk_resubmit", args=[job.pk, 0]))  # a live one
    assert "Only a batch whose outcome is unknown" in flash(again)
    assert Job.objects.count() == 2


def test_another_team_s_chunk_is_not_found(client: Client, team: Team, other_team: Team) -> None:
    job = batch_job(team)
    chunk(job, 0, 0, 4, state="unknown")
    client.force_login(other_team.memberships.get().user)
    assert client.post(reverse("job_chunk_resubmit", args=[job.pk, 0])).status_code == 404
    assert Job.objects.count() == 1


# --- retry as a batch or online ---------------------------------------------------------------


def test_a_batch_job_s_retry_offers_both_modes_and_each_keeps_its_word(
    bob_client: Client, team: Team
) -> None:
    job = batch_job(team, ["a", "b", "c"])
    finish_items(job, ["A"], {1: "expired: the window closed", 2: "boom"})
    job_transition(job.pk, "failed")
    page = text(bob_client.get(job.get_absolute_url()))
    actions = page[page.index('id="job-actions"') :].split("</div>")[0]
    assert 'name="mode" value="batch"' in actions and 'name="mode" value="online"' in actions
    assert "Retry failed as batch (2)" in actions and "Retry failed as online (2)" in actions
    url = reverse("job_retry", args=[job.pk])

    as_online = bob_client.post(url, {"failed_only": "1", "mode": "online"})
    as_batch = bob_client.post(url, {"failed_only": "1", "mode": "batch"})
    bogus = bob_client.post(url, {"failed_only": "1", "mode": "turbo"})

    online, batch = Job.objects.exclude(pk=job.pk).order_by("id")
    assert as_online.status_code == as_batch.status_code == 302
    assert (online.mode, batch.mode) == ("online", "batch")
    assert online.progress_total == batch.progress_total == 2
    assert "Retry online or as a batch." in flash(bogus) and Job.objects.count() == 3


def test_an_online_job_s_retry_stays_one_button(bob_client: Client, team: Team) -> None:
    job = make_job(make_credential(team), ["a", "b"])
    finish_items(job, ["A"], {1: "boom"})
    job_transition(job.pk, "failed")
    page = text(bob_client.get(job.get_absolute_url()))
    actions = page[page.index('id="job-actions"') :].split("</div>")[0]
    assert 'name="mode"' not in actions and "Retry rows that did not complete (1)" in actions


# --- the history ------------------------------------------------------------------------------


def test_the_history_shows_the_mode_and_filters_by_it(bob_client: Client, team: Team) -> None:
    batch = batch_job(team)
    online = make_job(make_credential(team))

    everything = text(bob_client.get(reverse("job_list")))
    only_batch = text(bob_client.get(reverse("job_list"), {"mode": "batch"}))
    only_online = text(bob_client.get(reverse("job_list"), {"mode": "online"}))
    bad = bob_client.get(reverse("job_list"), {"mode": "turbo"})

    def row(page: str, job: Job) -> str:
        return page[page.index(f'id="job-row-{job.pk}"') :].split("</tr>")[0]

    assert 'class="badge mode-batch"' in row(everything, batch)
    assert "mode-batch" not in row(everything, online)
    assert (
        f'id="job-row-{batch.pk}"' in only_batch and f'id="job-row-{online.pk}"' not in only_batch
    )
    assert (
        f'id="job-row-{online.pk}"' in only_online and f'id="job-row-{batch.pk}"' not in only_online
    )
    assert '<option value="batch" selected>Batch</option>' in only_batch
    assert bad.status_code == 200 and "Select a valid choice" in text(bad)
    assert f'id="job-row-{batch.pk}"' not in text(bad)


# --- the credential's check -------------------------------------------------------------------


def test_the_connection_check_says_whether_the_batch_api_answers(
    bob_client: Client, team: Team, sims: Any
) -> None:
    sim = sims.get("openai")
    credential = make_credential(team, "openai", base_url=sim.base_url)
    url = reverse("credential_test", args=[credential.pk])

    available = flash(bob_client.post(url))
    sim.batch_api = False
    missing = flash(bob_client.post(url))

    assert available.startswith("Connection OK") and "Batch API: available." in available
    assert "Batch API: not available on this server." in missing
    credential.refresh_from_db()
    assert "Batch API: not available on this server." in credential.health_detail
    listed = text(bob_client.get(reverse("credential_list")))
    assert "Batch API: not available on this server." in listed


def test_an_anthropic_check_says_batch_is_available(
    bob_client: Client, team: Team, sims: Any
) -> None:
    sim = sims.get("anthropic")
    credential = make_credential(team, "anthropic", base_url=sim.base_url)
    message = flash(bob_client.post(reverse("credential_test", args=[credential.pk])))
    assert message.startswith("Connection OK") and "Batch API: available." in message


def test_a_provider_without_batch_says_nothing_of_it(
    bob_client: Client, team: Team, sims: Any
) -> None:
    sim = sims.get("bytez")
    credential = make_credential(team, "bytez", base_url=sim.base_url)
    message = flash(bob_client.post(reverse("credential_test", args=[credential.pk])))
    assert message.startswith("Connection OK") and "Batch API" not in message


# --- the usage page ---------------------------------------------------------------------------


def test_the_usage_page_shows_the_mode_split_and_batch_prices(
    client: Client, team: Team, alice: User
) -> None:
    client.force_login(alice)
    Price.objects.create(
        team=team,
        provider="openai",
        model="m",
        input_per_mtok=Decimal(2),
        output_per_mtok=Decimal(10),
        batch_input_per_mtok=Decimal("0.75"),
    )
    job = batch_job(team)
    job_transition(job.pk, "completed")
    Job.objects.filter(pk=job.pk).update(cost_actual=Decimal("0.10"))

    page = text(client.get(reverse("usage")))

    assert '<th scope="col">Batch</th>' in page and "(1 batch)" in page
    assert 'class="cost-batch">$0.1000</td>' in page
    assert '<td class="batch-price">$0.75</td>' in page
    assert re.search(r'<td class="batch-price"><span class="muted">half of online</span>', page)
    assert 'name="batch_input_per_mtok"' in page and 'name="batch_output_per_mtok"' in page


def test_the_price_form_saves_batch_prices_and_refuses_bad_ones(
    client: Client, team: Team, alice: User
) -> None:
    client.force_login(alice)
    body = {"provider": "openai", "model": "m", "input_per_mtok": "2", "output_per_mtok": "8"}
    bad = client.post(reverse("price_save"), {**body, "batch_output_per_mtok": "-1"})
    assert bad.status_code == 400 and not Price.objects.exists()
    assert "greater than or equal to 0" in text(bad)
    saved = client.post(reverse("price_save"), {**body, "batch_output_per_mtok": "3"})
    assert saved.status_code == 302
    price = Price.objects.get()
    assert (price.batch_input_per_mtok, price.batch_output_per_mtok) == (None, Decimal(3))


def test_the_estimate_says_how_long_each_mode_takes_at_the_credential_s_limits(
    bob_client: Client, team: Team
) -> None:
    """840 prompts at 60 rpm: about 14 minutes online; batch within 24 h, and
    how much less it costs."""
    limited = make_credential(team, "openai", requests_per_minute=60)
    Price.objects.create(
        team=team, provider="openai", model="m", input_per_mtok=Decimal(2), output_per_mtok=10
    )
    prompts = "\n".join(f"prompt {i}" for i in range(840))
    body = {"model": "m", "prompts": prompts, "split": "lines", "max_tokens": "10"}
    page = text(bob_client.post(reverse("job_estimate"), {**body, "credential": limited.pk}))
    assert "online about <strong>14 min</strong> at the credential's 60 rpm" in page
    assert "batch: within 24 h, $" in page and " less." in page

    free = make_credential(team, "openai")
    unlimited = text(bob_client.post(reverse("job_estimate"), {**body, "credential": free.pk}))
    assert "online as fast as the provider answers; batch: within 24 h" in unlimited


def test_a_split_chunk_says_so_and_waits_for_nothing(bob_client: Client, team: Team) -> None:
    job = batch_job(team, ["p"] * 4)
    said = "Too large for one batch (Anthropic refused a request too large (HTTP 413)); split into batches 2 and 3."
    chunk(job, 0, 0, 4, state="split", error=said)
    chunk(job, 1, 0, 2, state="ended", remote_id="msgbatch_1")
    chunk(job, 2, 2, 4, state="ended", remote_id="msgbatch_2")

    page = text(bob_client.get(job.get_absolute_url()))

    panel = page[page.index('id="job-batches"') : page.index('id="job-outputs"')]
    row = panel[panel.index('id="chunk-0"') :].split("</tr>")[0]
    assert ">Split<" in row and "status-cancelled" in row
    detail = panel[panel.index('id="chunk-0-detail"') :].split("</tr>")[0]
    assert "split into batches 2 and 3" in detail
    assert "Resubmit<" not in panel and 'id="batches-waiting"' not in panel
