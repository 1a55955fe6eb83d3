"""A webhook receiver on loopback: a real HTTP server that records every
request and answers from a script (a status per request, or no answer)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dashboard.core import clock, queue

HANG = -1  # in a script: read the request, never answer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    url: str
    script: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def next_status(self) -> int:
        return self.script.pop(0) if self.script else 200


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.requests.append(Received(dict(self.headers.items()), body, time.monotonic()))
            status = state.next_status()
            if status == HANG:
                state.stop.wait(5)
                return
            payload = b'{"ok": true}' if status < 300 else b"receiver is down"
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/dashboard"
    yield state
    state.stop.set()
    server.shutdown()
    server.server_close()


class WallClock:
    """``clock.now`` under the test's control: it moves only when told."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def wall(monkeypatch: pytest.MonkeyPatch) -> WallClock:
    wall = WallClock(clock.now())
    monkeypatch.setattr(clock, "now", wall)
    return wall


@pytest.fixture
def scheduled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Tasks scheduled for later (retries), recorded instead of stored."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        queue, "enqueue_at", lambda func, *args, at: calls.append((func, *args, at))
    )
    return calls
