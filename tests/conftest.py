"""Shared fixtures: the team trio (alice admin, bob member, charlie elsewhere),
factories, and the provider simulators on loopback."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User

from dashboard.core import clock, queue
from dashboard.models import Credential, Job, Membership, Role, Team
from providers import JobSpec
from providers.simulators import DEFAULT_TOKEN, Simulator, get_simulator_class

SECRET = DEFAULT_TOKEN


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: once Playwright's loop runs in the main thread it
    stays for the session, and only they are allowed to share it with the ORM.
    They start a real worker process, so their database is ``shared_db`` too."""
    browser = [item for item in items if "/tests/browser/" in str(item.path).replace("\\", "/")]
    for item in browser:
        item.add_marker(pytest.mark.browser)
        item.add_marker(pytest.mark.shared_db)
    # Under `--dist loadgroup` the browser tests share one xdist worker (the
    # Playwright loop stays for the session); every other shared-database test
    # may go to any worker, so they run beside the browser tests.
    for item in browser:
        item.add_marker(pytest.mark.xdist_group("browser"))
    others = [item for item in items if item not in browser]
    items[:] = others + browser


def pytest_collection_finish(session: pytest.Session) -> None:
    """A session whose database other connections use (a real qcluster process,
    threads) needs a database file they can open too; every other session keeps
    SQLite in memory. The test database is not created yet here, so switching
    is safe."""
    if not any(item.get_closest_marker("shared_db") for item in session.items):
        return
    from django.conf import settings
    from django.db import connections

    database = connections["default"].settings_dict
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = settings.TEST_DATABASE_FILE


_names = itertools.count(1)


@pytest.fixture(autouse=True)
def _test_settings(settings: Any) -> None:
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1", "localhost"]
    settings.DASHBOARD_HTTP_TIMEOUT = 2.0


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff waits are recorded, not slept (time is controlled, never slept on)."""
    waits: list[float] = []
    monkeypatch.setattr(clock, "sleep", waits.append)
    return waits


@pytest.fixture
def nudges(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Tasks enqueued, recorded instead of sent to the broker (the one queue)."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(queue, "enqueue", lambda func, *args: calls.append((func, *args)))
    return calls


@pytest.fixture
def waits(_fast_backoff: list[float]) -> list[float]:
    return _fast_backoff


def make_user(username: str, *, password: str = "pw-for-tests-123", **extra: Any) -> User:
    user = User.objects.create_user(username=username, password=password, **extra)
    return user


def make_team(name: str | None = None, **members: str) -> Team:
    team = Team.objects.create(name=name or f"Team {next(_names)}")
    for username, role in members.items():
        user = User.objects.filter(username=username).first() or make_user(username)
        Membership.objects.create(team=team, user=user, role=role)
    return team


def make_credential(
    team: Team,
    provider: str = "together",
    *,
    base_url: str = "http://127.0.0.1:9",
    secret: str = SECRET,
    **extra: Any,
) -> Credential:
    return Credential.objects.create(
        team=team,
        provider=provider,
        name=extra.pop("name", f"{provider} {next(_names)}"),
        secret=secret,
        base_url=base_url,
        **extra,
    )


def make_job(
    credential: Credential,
    prompts: list[str] | None = None,
    *,
    user: User | None = None,
    **spec: Any,
) -> Job:
    from dashboard.jobs.services import job_create

    spec.setdefault("model", "test-model")
    return job_create(
        team=credential.team,
        credential=credential,
        spec=JobSpec(prompts=prompts or ["Hello"], **spec),
        user=user,
    )


@pytest.fixture
def alice(db: Any) -> User:
    return make_user("alice")


@pytest.fixture
def bob(db: Any) -> User:
    return make_user("bob")


@pytest.fixture
def charlie(db: Any) -> User:
    return make_user("charlie")


@pytest.fixture
def team(alice: User, bob: User) -> Team:
    team = Team.objects.create(name="Alpha")
    Membership.objects.create(team=team, user=alice, role=Role.ADMIN)
    Membership.objects.create(team=team, user=bob, role=Role.MEMBER)
    return team


@pytest.fixture
def other_team(charlie: User) -> Team:
    team = Team.objects.create(name="Beta")
    Membership.objects.create(team=team, user=charlie, role=Role.ADMIN)
    return team


class SimulatorPool:
    """One server per provider for the whole session, reset between tests."""

    def __init__(self) -> None:
        self.sims: dict[str, Simulator] = {}
        self.defaults: dict[str, dict[str, Any]] = {}

    def get(self, slug: str) -> Simulator:
        if slug not in self.sims:
            sim = get_simulator_class(slug)()
            sim.start()
            self.sims[slug] = sim
        sim = self.sims[slug]
        defaults = self.defaults.setdefault(slug, dict(vars(sim)))
        for name in (
            "clock",
            "step_seconds",
            "load_seconds",
            "request_seconds",
            "default_expiration",
            "stream_chunk_delay",
            "model_count",
            "token",
        ):
            if name in defaults:
                setattr(sim, name, defaults[name])
        reset = getattr(sim, "reset", None)
        if reset:
            reset()
        for name in ("instances", "job_requests", "jobs"):
            state = getattr(sim, name, None)
            if isinstance(state, dict):
                state.clear()
        sim.faults.clear()
        for hold in sim.holds:  # a test that failed before letting its request go
            hold.release.set()
        sim.holds.clear()
        sim.requests.clear()
        sim.latency = 0.0
        sim.submissions = 0
        sim.max_active = 0
        return sim

    def stop(self) -> None:
        for sim in self.sims.values():
            sim.stop()


@pytest.fixture(scope="session")
def simulator_pool() -> Iterator[SimulatorPool]:
    pool = SimulatorPool()
    yield pool
    pool.stop()


@pytest.fixture
def sims(simulator_pool: SimulatorPool) -> SimulatorPool:
    return simulator_pool


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def sim_clock() -> FakeClock:
    return FakeClock()


def use_clock(sim: Simulator, clock: FakeClock, **attrs: Any) -> Simulator:
    """Put a simulator on a fake clock for one test (the pool restores it)."""
    sim.clock = clock  # type: ignore[attr-defined]
    for name, value in attrs.items():
        setattr(sim, name, value)
    return sim


def outputs(job: Job) -> list[Any]:
    """The job's outputs, one per item in index order (None where there is none)."""
    return list(job.items.order_by("index").values_list("output", flat=True))


def item_errors(job: Job) -> dict[str, str]:
    """The failed items' errors by index (as the job page and the API show them)."""
    return {
        str(index): error
        for index, error in job.items.filter(status="failed").values_list("index", "error")
    }


def item_spec(job: Job) -> JobSpec:
    """The job's spec with its prompts (read back from its items)."""
    prompts = list(job.items.order_by("index").values_list("input", flat=True))
    return JobSpec.from_dict({**job.spec, "prompts": prompts})


def job_row(
    team: Team,
    credential: Credential | None = None,
    *,
    prompts: list[str] | None = None,
    outputs: list[Any] | None = None,
    errors: dict[int, str] | None = None,
    spec: dict[str, Any] | None = None,
    **fields: Any,
) -> Job:
    """A job and its items as a worker would leave them, without a worker:
    an item with an output completed, one with an error failed, the rest
    pending (or cancelled/failed with a terminal job). Counters to match."""
    from dashboard.jobs.items import Tally, estimate_tokens
    from dashboard.models import Item

    credential = credential or Credential.objects.filter(team=team).first() or make_credential(team)
    prompts = prompts or [f"prompt {next(_names)}"]
    outputs = list(outputs or [])
    errors = errors or {}
    fields.setdefault("status", "completed")
    status = fields["status"]
    job = Job.objects.create(
        team=team,
        credential=credential,
        credential_name=credential.name,
        provider=fields.pop("provider", credential.provider),
        model=fields.pop("model", "m1"),
        spec={"model": "m1", "question": fields.pop("question", ""), **(spec or {})},
        progress_total=len(prompts),
        **fields,
    )
    tally = Tally()
    items = []
    for i, prompt in enumerate(prompts):
        output = outputs[i] if i < len(outputs) else None
        item = Item(job=job, index=i, input=prompt, output=output, error=errors.get(i, ""))
        if output is not None:
            item.status = "completed"
            item.tokens_in, item.tokens_out = estimate_tokens(prompt), estimate_tokens(output)
            item.tokens_estimated = True
        elif i in errors:
            item.status = "failed"
        elif status == "cancelled":
            item.status = "cancelled"
        elif status in ("completed", "failed"):
            item.status, item.error = "failed", item.error or fields.get("error", "")
        tally.move(item, "pending")
        items.append(item)
    Item.objects.bulk_create(items)
    Job.objects.filter(pk=job.pk).update(**tally.job_updates())
    job.refresh_from_db()
    return job


def prompts_of(job: Job) -> list[str]:
    return list(job.items.order_by("index").values_list("input", flat=True))


def finish_items(job: Job, outputs: list[Any], errors: dict[int, str] | None = None) -> Job:
    """Set a job's items as a worker would have left them (outputs, errors,
    validity against the job's schema), with the counters to match."""
    from dashboard.jobs.items import Changes, ItemResult, item_complete, item_fail, items_write
    from dashboard.status import JOB_STATUSES

    errors = errors or {}
    changes = Changes()
    schema = job.spec.get("output_schema")
    for item in job.items.order_by("index"):
        if item.index in errors:
            changes.add(item, item.status)
            item_fail(item, errors[item.index])
        elif item.index < len(outputs) and outputs[item.index] is not None:
            changes.add(item, item.status)
            item_complete(item, ItemResult(outputs[item.index]), schema)
    items_write(job.pk, changes, statuses=JOB_STATUSES)
    job.refresh_from_db()
    return job
