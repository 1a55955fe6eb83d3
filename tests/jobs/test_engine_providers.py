"""Each provider through the dashboard's own task code, against its simulator on
loopback: exact outputs, the status sequence and the provider's own words."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from dashboard.core import clock, connect
from dashboard.jobs import poller, worker
from dashboard.jobs import sweep as job_sweep
from dashboard.models import Credential, Job, JobEvent, JobUnit
from providers import get_provider_class
from providers.simulators import completion_text
from tests.conftest import FakeClock, item_spec, make_credential, make_job, outputs, use_clock

pytestmark = pytest.mark.django_db


class Recorder:
    """Runs poll rounds one by one, moving the simulator's clock between them,
    and records each status the job passed through."""

    def __init__(self, credential: Credential, clock: FakeClock, step: float = 0.5) -> None:
        self.credential, self.clock, self.step = credential, clock, step
        self.seen: list[tuple[str, str]] = []

    def note(self, job: Job) -> None:
        job.refresh_from_db()
        pair = (job.status, job.provider_status)
        if not self.seen or self.seen[-1] != pair:
            self.seen.append(pair)

    def run(self, job: Job, rounds: int = 40) -> Job:
        worker.advance_job(job.pk)
        self.note(job)
        provider = connect.build_provider(self.credential)
        for _ in range(rounds):
            units = poller.due_units(self.credential.pk, timezone.now() + timedelta(hours=1))
            if not units:
                break
            poller.poll_round(provider, units)
            self.note(job)
            self.clock.advance(self.step)
        job.refresh_from_db()
        return job


# --- MyMagic -----------------------------------------------------------------------------


def test_mymagic_batch(team: Any, sims: Any, sim_clock: FakeClock) -> None:
    sim = use_clock(sims.get("mymagic"), sim_clock, step_seconds=1.0)
    credential = make_credential(team, "mymagic", base_url=sim.base_url)
    job = make_job(
        credential, ["Paris", "Rome"], model="llama3_70b", question="Which country?", max_tokens=20
    )

    job = Recorder(credential, sim_clock).run(job)

    assert job.status == "completed", job.error
    assert outputs(job) == [
        completion_text("llama3_70b", f"Which country?\n{p}", 20) for p in ("Paris", "Rome")
    ]
    assert sim.submissions == 1


def test_mymagic_status_words_and_cold_start(team: Any, sims: Any, sim_clock: FakeClock) -> None:
    sim = use_clock(sims.get("mymagic"), sim_clock, step_seconds=1.0)
    credential = make_credential(team, "mymagic", base_url=sim.base_url)
    job = make_job(credential, ["x"], model="mistral_7b", question="[[cold]] q")
    recorder = Recorder(credential, sim_clock)

    job = recorder.run(job)

    assert recorder.seen == [
        ("queued", "Submitted"),
        ("queued", "Waiting for instance"),
        ("running", "Processing"),
        ("completed", "Completed"),
    ]
    assert not job.cold_start
    assert job.events.filter(message="MyMagic says: Waiting for instance").exists()


def test_mymagic_cold_start_is_flagged_while_waiting(
    team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    sim = use_clock(sims.get("mymagic"), sim_clock, step_seconds=10.0)
    credential = make_credential(team, "mymagic", base_url=sim.base_url)
    job = make_job(credential, ["x"], model="mistral_7b", question="[[cold]] q")
    Recorder(credential, sim_clock, step=0.1).run(job, rounds=2)
    job.refresh_from_db()
    assert (
        job.status == "queued" and job.cold_start and job.provider_status == "Waiting for instance"
    )


def test_mymagic_error_status_fails_the_job(team: Any, sims: Any, sim_clock: FakeClock) -> None:
    sim = use_clock(sims.get("mymagic"), sim_clock, step_seconds=1.0)
    credential = make_credential(team, "mymagic", base_url=sim.base_url)
    job = Recorder(credential, sim_clock).run(
        make_job(credential, ["a [[fail]]", "b"], question="q")
    )
    assert job.status == "failed" and job.provider_status == "Error"
    assert "2 of 2 prompts failed" in job.error


def test_mymagic_structured_output(team: Any, sims: Any, sim_clock: FakeClock) -> None:
    sim = use_clock(sims.get("mymagic"), sim_clock, step_seconds=0.0)
    credential = make_credential(team, "mymagic", base_url=sim.base_url)
    job = make_job(
        credential, ["Carl"], question="How old?", output_schema={"age": "int", "units": "str"}
    )
    job = Recorder(credential, sim_clock).run(job)
    assert job.status == "completed"
    (output,) = outputs(job)
    assert set(output) == {"age", "units"} and isinstance(output["age"], int)


def test_mymagic_without_question_is_refused(team: Any, sims: Any) -> None:
    sim = sims.get("mymagic")
    credential = make_credential(team, "mymagic", base_url=sim.base_url)
    worker.advance_job(make_job(credential, ["x"]).pk)
    job = Job.objects.get()
    assert job.status == "failed" and "question is required" in job.error
    assert sim.submissions == 0


# --- GridRepublic ----------------------------------------------------------------------------


def test_gridrepublic_one_remote_job_per_prompt_with_growing_log(
    team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    sim = use_clock(sims.get("gridrepublic"), sim_clock, step_seconds=1.0)
    credential = make_credential(team, "gridrepublic", base_url=sim.base_url)
    job = make_job(credential, ["When does 1+1=10?", "Why?"], model="gemma:2b")
    recorder = Recorder(credential, sim_clock, step=0.4)

    job = recorder.run(job)

    assert job.status == "completed", job.error
    expected = [completion_text("gemma:2b", p) for p in ("When does 1+1=10?", "Why?")]
    assert outputs(job) == expected
    assert sim.submissions == 2
    assert [s for s, _ in recorder.seen][:1] == ["queued"]
    assert ("running", "running") in recorder.seen
    assert recorder.seen[-1][0] == "completed"
    # Only the new part of the log is stored each time; together it is the whole log.
    for unit in job.units.all():
        chunks = list(
            job.events.filter(kind=JobEvent.Kind.LOG, unit=unit.index).values_list(
                "message", flat=True
            )
        )
        assert len(chunks) >= 2
        assert "".join(chunks) == expected[unit.index]
        assert unit.log_length == len(expected[unit.index])


def test_gridrepublic_50_jobs_one_request_per_round(
    team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    sim = use_clock(sims.get("gridrepublic"), sim_clock, step_seconds=100.0)
    credential = make_credential(team, "gridrepublic", base_url=sim.base_url)
    jobs = [make_job(credential, [f"prompt {i}"], model="gemma:2b") for i in range(50)]
    for job in jobs:
        worker.advance_job(job.pk)
    assert sim.submissions == 50
    before = sim.status_requests
    units = poller.due_units(credential.pk, timezone.now() + timedelta(hours=1))
    assert len(units) == 50
    poller.poll_round(connect.build_provider(credential), units)
    assert sim.status_requests - before == 1
    assert JobUnit.objects.filter(provider_status="queued").count() == 50


def test_gridrepublic_one_unknown_id_does_not_stall_the_others(
    team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    sim = use_clock(sims.get("gridrepublic"), sim_clock, step_seconds=0.0)
    credential = make_credential(team, "gridrepublic", base_url=sim.base_url)
    good, bad = make_job(credential, ["a"]), make_job(credential, ["b"])
    worker.advance_job(good.pk)
    worker.advance_job(bad.pk)
    JobUnit.objects.filter(job=bad).update(remote_id="no-such-id")
    poller.poll_round(
        connect.build_provider(credential), poller.due_units(credential.pk, timezone.now())
    )
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.status == "completed"
    assert bad.status == "failed"


# --- Lamini and Bytez (synchronous) ------------------------------------------------------------


def test_lamini_typed_batch(team: Any, sims: Any) -> None:
    sim = sims.get("lamini")
    credential = make_credential(team, "lamini", base_url=sim.base_url)
    job = make_job(
        credential,
        ["How old is Carl, the llama with a hat?", "How old is Paul, the llama with a hat?"],
        model="meta-llama/Llama-2-7b-chat-hf",
        output_schema={"age": "int", "units": "str"},
    )
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "completed", job.error
    assert sim.count("POST /v1/completions") == 1  # the whole list in one call
    provider = get_provider_class("lamini")(secret="sim-secret-key", base_url=sim.base_url)
    assert outputs(job) == provider.run(item_spec(job), [0, 1])
    assert all(isinstance(o["age"], int) and isinstance(o["units"], str) for o in outputs(job))


def test_lamini_refuses_what_it_cannot_express(team: Any, sims: Any) -> None:
    sim = sims.get("lamini")
    credential = make_credential(team, "lamini", base_url=sim.base_url)
    schema = {
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}}},
    }
    job = make_job(credential, ["x"], output_schema=schema)
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "failed" and "tags" in job.error
    assert sim.count("POST /v1/completions") == 0


def _load_bytez(sim: Any, model: str) -> None:
    clock = FakeClock()
    sim.clock = clock
    provider = get_provider_class("bytez")(secret="sim-secret-key", base_url=sim.base_url)
    provider.load_model(model, concurrency=1)
    clock.advance(sim.load_seconds + 1)  # loaded: running


def test_bytez_run_streams_into_the_log(team: Any, sims: Any) -> None:
    sim = sims.get("bytez")
    sim.stream_chunk_delay = 0.0
    _load_bytez(sim, "openai-community/gpt2")
    credential = make_credential(team, "bytez", base_url=sim.base_url)
    job = make_job(credential, ["Once upon a time"], model="openai-community/gpt2", stream=True)
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "completed", job.error
    expected = completion_text("openai-community/gpt2", "Once upon a time")
    assert outputs(job) == [expected]
    streamed = "".join(
        job.events.filter(kind=JobEvent.Kind.STREAM).values_list("message", flat=True)
    )
    assert streamed == expected


def test_bytez_run_on_unloaded_model_fails_clearly(team: Any, sims: Any) -> None:
    sim = sims.get("bytez")
    credential = make_credential(team, "bytez", base_url=sim.base_url)
    job = make_job(credential, ["hi"], model="not/loaded")
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error.startswith("No instance of not/loaded is loaded on Bytez. Load it")
    assert sim.count("POST /model/run") == 0  # failed at once, nothing run


def test_bytez_job_waits_queued_while_its_instance_loads(team: Any, sims: Any) -> None:
    from dashboard.models import ModelInstance

    sim = sims.get("bytez")
    _load_bytez(sim, "openai-community/gpt2")
    credential = make_credential(team, "bytez", base_url=sim.base_url)
    instance = ModelInstance.objects.create(
        team=team,
        credential=credential,
        model="openai-community/gpt2",
        status="loading",
        provider_status="LOADING",
    )
    job = make_job(credential, ["hi"], model="openai-community/gpt2")
    assert worker.advance_job(job.pk, budget=0.2) == "deferred"
    job.refresh_from_db()
    assert job.status == "queued" and job.provider_status.startswith(
        "Waiting for instance (loading"
    )
    assert sim.count("POST /model/run") == 0
    ModelInstance.objects.filter(pk=instance.pk).update(status="running", inferences=0)
    Job.objects.filter(pk=job.pk).update(next_check_at=None)
    assert worker.advance_job(job.pk) == "completed"
    instance.refresh_from_db()
    assert (
        instance.inferences == 1 and instance.expires_at is not None
    )  # each run resets the expiry


# --- exactly once -------------------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["mymagic", "gridrepublic"])
def test_submitted_once_even_when_status_polls_fail(
    slug: str, team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    sim = use_clock(sims.get(slug), sim_clock, step_seconds=1.0)
    credential = make_credential(team, slug, base_url=sim.base_url)
    job = (
        make_job(credential, ["a"], question="q")
        if slug == "mymagic"
        else make_job(credential, ["a"])
    )
    worker.advance_job(job.pk)
    sim.add_fault(status=500, method="GET", times=3)
    job = Recorder(credential, sim_clock, step=1.0).run(job)
    assert job.status == "completed"
    assert sim.submissions == 1
    assert job.events.filter(kind=JobEvent.Kind.RETRY).count() == 3
    # advance_job again (a duplicate nudge) does not resubmit.
    assert worker.advance_job(job.pk) == "skipped"
    assert sim.submissions == 1


@pytest.mark.parametrize("slug", ["mymagic", "gridrepublic"])
def test_submit_500_is_outcome_unknown_never_resubmitted(slug: str, team: Any, sims: Any) -> None:
    sim = sims.get(slug)
    credential = make_credential(team, slug, base_url=sim.base_url)
    sim.add_fault(status=500, method="POST")
    job = (
        make_job(credential, ["a"], question="q")
        if slug == "mymagic"
        else make_job(credential, ["a"])
    )
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "failed"
    assert job.error.startswith("Outcome unknown, not resubmitted")
    assert job.error_retryable
    assert sim.count("fault 500") == 1 and sim.submissions == 0


def test_crash_mid_submit_is_reconciled_not_resubmitted(team: Any, sims: Any) -> None:
    sim = sims.get("gridrepublic")
    credential = make_credential(team, "gridrepublic", base_url=sim.base_url)
    job = make_job(credential, ["a"])
    # A worker died between recording 'submitting' and hearing back.
    JobUnit.objects.create(job=job, index=0, prompt_indexes=[0], state=JobUnit.State.SUBMITTING)
    Job.objects.filter(pk=job.pk).update(
        lease_owner="dead", lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    counts = job_sweep.sweep()
    job.refresh_from_db()
    assert counts["unknown"] == 1
    assert job.status == "failed" and "Outcome unknown" in job.error
    assert sim.submissions == 0


def test_poll_credential_loop_runs_to_completion(team: Any, sims: Any, monkeypatch: Any) -> None:
    """The real loop, with real (short) waits: submit, then rounds until done."""
    import time

    monkeypatch.setattr(clock, "sleep", time.sleep)
    sim = sims.get("gridrepublic")
    sim.step_seconds = 0.3  # done 0.9 s after submit: several rounds, even on a slow machine
    credential = make_credential(
        team, "gridrepublic", base_url=sim.base_url, options={"poll_interval_seconds": 0.05}
    )
    job = make_job(credential, ["a", "b", "c"])
    worker.advance_job(job.pk)
    rounds = poller.poll_credential(credential.pk, budget=10)
    job.refresh_from_db()
    assert job.status == "completed"
    assert 2 <= rounds < 100
    credential.refresh_from_db()
    assert credential.poll_lease_owner == ""


def test_lamini_text_batch(team: Any, sims: Any) -> None:
    sim = sims.get("lamini")
    credential = make_credential(team, "lamini", base_url=sim.base_url)
    job = make_job(credential, ["one", "two"], model="meta-llama/Llama-2-7b-chat-hf")
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "completed", job.error
    assert outputs(job) == [
        completion_text("meta-llama/Llama-2-7b-chat-hf", p).strip() for p in ("one", "two")
    ]


@pytest.mark.parametrize(("age", "expected"), [(0, 1.0), (119, 1.0), (120, 2.0), (900, 5.0)])
def test_poll_cadence_backs_off_for_long_remote_jobs(age: int, expected: float) -> None:
    provider = get_provider_class("gridrepublic")(secret="x")
    now = timezone.now()
    unit = JobUnit(submitted_at=now - timedelta(seconds=age))
    assert poller.poll_interval(provider, unit, now) == expected * provider.poll_interval


def test_openai_compatible_chat_with_structured_output(team: Any, sims: Any) -> None:
    sim = sims.get("openai")
    credential = make_credential(team, "openai", base_url=sim.base_url + "/v1")
    job = make_job(
        credential,
        ["Carl", "Paul"],
        model="llama-3-8b",
        output_schema={"age": "int", "units": "str"},
    )
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "completed", job.error
    assert all(set(o) == {"age", "units"} and isinstance(o["age"], int) for o in outputs(job))
    assert sim.count("POST /v1/chat/completions") == 2


def test_openai_compatible_stream(team: Any, sims: Any) -> None:
    sim = sims.get("openai")
    credential = make_credential(team, "openai", base_url=sim.base_url)
    job = make_job(
        credential, ["Tell a story"], model="llama-3-8b", stream=True, system_prompt="Be brief"
    )
    worker.advance_job(job.pk)
    job.refresh_from_db()
    assert job.status == "completed", job.error
    streamed = "".join(
        job.events.filter(kind=JobEvent.Kind.STREAM).values_list("message", flat=True)
    )
    assert streamed == outputs(job)[0] == completion_text("llama-3-8b", "Tell a story").strip()


def test_sweep_finishes_a_submission_that_was_paused_halfway(
    team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    sim = use_clock(sims.get("gridrepublic"), sim_clock, step_seconds=0.0)
    credential = make_credential(team, "gridrepublic", base_url=sim.base_url)
    job = make_job(credential, ["a", "b"])
    # The first prompt went out; the second was paused (say a long Retry-After).
    first = connect.build_provider(credential).submit(item_spec(job), [0])
    JobUnit.objects.create(job=job, index=0, prompt_indexes=[0], state="submitted", remote_id=first)
    JobUnit.objects.create(job=job, index=1, prompt_indexes=[1], state="pending")
    Job.objects.filter(pk=job.pk).update(next_check_at=timezone.now() - timedelta(seconds=1))
    assert (
        job_sweep.sweep()["jobs"] == 1
    )  # due again: handed back to advance_job, not only the poller
    assert worker.advance_job(job.pk) == "submitted"
    assert sim.submissions == 2
    assert sorted(job.units.values_list("state", flat=True)) == ["submitted", "submitted"]


def _round_queries(team: Any, sim: Any, clock: FakeClock, count: int) -> list[int]:
    """SQL queries of each poll round (queued, all start running, all end) for ``count`` jobs."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    credential = make_credential(team, "gridrepublic", base_url=sim.base_url)
    for i in range(count):
        worker.advance_job(make_job(credential, [f"{count}-{i}"]).pk)
    provider = connect.build_provider(credential)
    counts = []
    for _ in range(3):
        units = poller.due_units(credential.pk, timezone.now() + timedelta(hours=1))
        with CaptureQueriesContext(connection) as queries:
            poller.poll_round(provider, units)
        counts.append(len(queries))
        clock.advance(1.0 if len(counts) == 1 else 2.0)
    return counts


def test_poll_round_queries_do_not_grow_with_jobs(
    team: Any, sims: Any, sim_clock: FakeClock
) -> None:
    sim = use_clock(sims.get("gridrepublic"), sim_clock, step_seconds=1.0)
    small = _round_queries(team, sim, sim_clock, 5)
    large = _round_queries(team, sim, sim_clock, 40)
    assert small == large, (small, large)
    assert Job.objects.filter(status="completed").count() == 45


def test_a_round_cut_short_leaves_its_remote_jobs_to_poll_again(
    team: Any, sims: Any, sim_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed between writing a round's units and its jobs used to
    leave every unit ended and the job running forever, with nothing left to
    poll (seen in the chaos test). The round is one transaction now."""
    sim = use_clock(sims.get("gridrepublic"), sim_clock, step_seconds=0.0)
    credential = make_credential(team, "gridrepublic", base_url=sim.base_url)
    job = make_job(credential, ["a"])
    worker.advance_job(job.pk)
    sim_clock.advance(60)

    def killed(*args: Any) -> None:
        raise SystemExit("worker killed mid-round")

    monkeypatch.setattr(poller, "jobs_end", killed)
    provider = connect.build_provider(credential)
    with pytest.raises(SystemExit):
        poller.poll_round(provider, poller.due_units(credential.pk, timezone.now()))
    assert list(job.units.values_list("state", flat=True)) == ["submitted"]
    monkeypatch.undo()
    poller.poll_round(provider, poller.due_units(credential.pk, timezone.now()))
    job.refresh_from_db()
    assert job.status == "completed"
