"""A provider called from many threads (the sync runner's pool) gives each
thread a client and a connection pool of its own, keeps each thread's
connection alive between its calls, and closes every client it made."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpcore
import httpx
import pytest

from dashboard.core import netguard
from providers import JobSpec
from providers.base import THREAD_LIMITS
from providers.simulators import DEFAULT_TOKEN
from providers.together import TogetherProvider

THREADS = 4
CALLS = 40


class CountingNetwork(httpcore.SyncBackend):
    """The real network, with every connection counted by the thread that opened it."""

    def __init__(self, opened: Counter[int]) -> None:
        self.opened = opened

    def connect_tcp(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        self.opened[threading.get_ident()] += 1
        return super().connect_tcp(*args, **kwargs)


@pytest.fixture
def together(sims: Any) -> Any:
    return sims.get("together")


def run_on_threads(provider: TogetherProvider) -> dict[int, set[int]]:
    """CALLS calls on a pool of THREADS threads; each thread's clients, by id."""
    spec = JobSpec(model="m", prompts=[f"prompt {i}" for i in range(CALLS)])
    seen: dict[int, set[int]] = {}
    lock = threading.Lock()

    def call(index: int) -> list[Any]:
        outputs = provider.run(spec, [index])
        with lock:
            seen.setdefault(threading.get_ident(), set()).add(id(provider.client))
        return outputs

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        outputs = list(pool.map(call, range(CALLS)))
    assert len(outputs) == CALLS and all(len(output) == 1 for output in outputs)
    return seen


def test_each_thread_has_its_own_client_and_keeps_its_connection(together: Any) -> None:
    opened: Counter[int] = Counter()
    provider = TogetherProvider(
        secret=DEFAULT_TOKEN,
        base_url=together.base_url,
        transport_factory=lambda: netguard.guarded_transport(
            backend=CountingNetwork(opened), limits=THREAD_LIMITS
        ),
    )
    creator = provider.client
    seen = run_on_threads(provider)

    assert all(len(clients) == 1 for clients in seen.values())  # one client per thread
    clients = {client for per_thread in seen.values() for client in per_thread}
    assert len(clients) == len(seen) <= THREADS and id(creator) not in clients
    # One connection per thread, reused for all of its calls.
    assert set(opened) == set(seen) and all(n == 1 for n in opened.values())
    assert together.count("POST /inference") == CALLS

    made = list(provider._clients)
    assert len(made) == len(seen) + 1
    provider.close()
    assert all(client.is_closed for client in made)


def test_a_transport_given_is_shared_by_every_thread(together: Any) -> None:
    """Tests pass one ``httpx.MockTransport``: every thread's client uses it."""
    answered: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        answered.append(threading.get_ident())
        return httpx.Response(200, json={"output": {"choices": [{"text": "ok"}]}})

    provider = TogetherProvider(
        secret=DEFAULT_TOKEN, base_url="https://api.example", transport=httpx.MockTransport(handler)
    )
    seen = run_on_threads(provider)
    assert len(answered) == CALLS and set(answered) == set(seen)
    assert together.count("POST /inference") == 0
    provider.close()
