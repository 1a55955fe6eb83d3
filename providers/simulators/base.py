"""A tiny threaded HTTP server that each provider simulator builds on.

Simulators speak a provider's documented protocol on a loopback port, with
deterministic output, adjustable latency, injectable faults and counters that
tests read (requests per route, submissions, overlapping polls per remote id).
Standard library only, so they start in milliseconds and need nothing else.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_TOKEN = "sim-secret-key"


def completion_text(model: str, prompt: str, max_tokens: int | None = None) -> str:
    """Deterministic 'model output' for a prompt: same input, same text."""
    digest = hashlib.sha256(f"{model}\n{prompt}".encode()).hexdigest()[:8]
    words = f"[{model}] answer {digest} to: {prompt}".split(" ")
    if max_tokens is not None and max_tokens > 0:
        words = words[: max(max_tokens, 1)]
    return " " + " ".join(words)


@dataclass
class Fault:
    """Answer the next ``times`` requests matching ``method`` and ``path`` (a
    regex) with this fault instead of the real answer."""

    status: int = 500
    body: Any = None  # text/bytes are sent as they are (malformed bodies); else JSON-encoded
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep first (longer than the client's timeout = a timeout)
    times: int = 1
    method: str | None = None
    path: str = ".*"
    content_type: str = "application/json"

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and re.search(
            self.path, path
        ) is not None


@dataclass
class Hold:
    """Hold a request matching ``method`` and ``path`` (a regex), after letting
    ``skip`` of them through: before it is handled (``after`` 0: a crash test
    kills the client while the provider has the request but has not acted on
    it), or after ``after`` pieces of its answer were sent (a body is sent in
    pieces of ``piece_bytes``: the client has read part of it). ``arrived`` is
    set when it is held; it goes on once ``release`` is set."""

    method: str | None = None
    path: str = ".*"
    skip: int = 0
    after: int = 0
    piece_bytes: int = 64 * 1024
    timeout: float = 60.0
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and re.search(
            self.path, path
        ) is not None

    def wait(self) -> None:
        self.arrived.set()
        self.release.wait(self.timeout)

    def holding(self, response: Response) -> Response:
        """``response`` sent in pieces, held after the first ``after``."""
        if response.stream is not None:
            pieces: Iterable[str | bytes] = response.stream
        else:
            body = response.body
            if isinstance(body, str) and "json" not in response.content_type:
                body = body.encode()
            elif not isinstance(body, bytes):
                body = json.dumps(body).encode()
            size = self.piece_bytes
            pieces = [body[i : i + size] for i in range(0, len(body), size)]

        def held() -> Iterator[str | bytes]:
            for n, piece in enumerate(pieces):
                if n == self.after:
                    self.wait()
                yield piece

        return Response(
            response.status,
            headers=response.headers,
            stream=held(),
            content_type=response.content_type,
        )


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-encoded, except bytes (sent as they are) and text of a non-JSON type
    headers: dict[str, str] = field(default_factory=dict)
    stream: Iterable[str | bytes] | None = None  # raw chunks, sent as they come
    content_type: str = "application/json"


Route = tuple[str, re.Pattern[str], Callable[..., Response]]


class Simulator:
    """Base of every simulator: routing, auth, latency, faults and counters."""

    name = "simulator"
    auth_scheme = "Bearer"

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.latency = latency
        self.host = host
        self.port = port
        self.faults: list[Fault] = []
        self.holds: list[Hold] = []
        self.requests: Counter[str] = Counter()
        self.submissions = 0
        self.lock = threading.RLock()
        self.in_flight: Counter[str] = Counter()
        self.max_overlap: dict[str, int] = defaultdict(int)
        self.overlaps = 0
        #: Requests being answered now, and the most at once (concurrency limits).
        self.active = 0
        self.max_active = 0
        self.log: list[Request] = []
        self.keep_log = False
        self._routes: list[Route] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.setup_routes()

    # -- life cycle ----------------------------------------------------------

    def setup_routes(self) -> None:
        raise NotImplementedError

    def route(self, method: str, pattern: str, handler: Callable[..., Response]) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def start(self) -> str:
        simulator = self

        class Handler(_Handler):
            sim = simulator

        self._server = _Server((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sim-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- test controls ---------------------------------------------------------

    def add_fault(self, **kwargs: Any) -> Fault:
        fault = Fault(**kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    def hold(self, **kwargs: Any) -> Hold:
        """Hold the next matching request (see :class:`Hold`); tests release it."""
        hold = Hold(**kwargs)
        with self.lock:
            self.holds.append(hold)
        return hold

    def take_hold(self, request: Request) -> Hold | None:
        with self.lock:
            for hold in self.holds:
                if hold.matches(request.method, request.path):
                    if hold.skip:
                        hold.skip -= 1
                        return None
                    self.holds.remove(hold)
                    return hold
        return None

    def count(self, key: str) -> int:
        return self.requests[key]

    def track(self, remote_id: str) -> _Tracker:
        """Context manager that records overlapping requests for one remote id."""
        return _Tracker(self, remote_id)

    # -- request handling ----------------------------------------------------

    def authorized(self, request: Request) -> bool:
        return request.headers.get("authorization", "") == f"{self.auth_scheme} {self.token}"

    def unauthorized(self) -> Response:
        return Response(401, {"error": "Invalid API key"})

    def not_found(self, request: Request) -> Response:
        return Response(404, {"error": f"No route for {request.method} {request.path}"})

    def dispatch(self, request: Request) -> Response:
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                with self.lock:
                    self.requests[f"{method} {pattern.pattern[1:-1]}"] += 1
                    if self.keep_log:
                        self.log.append(request)
                if not self.authorized(request):
                    return self.unauthorized()
                return handler(request, **match.groupdict())
        return self.not_found(request)

    def take_fault(self, request: Request) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and fault.matches(request.method, request.path):
                    fault.times -= 1
                    if fault.times == 0:
                        self.faults.remove(fault)
                    return fault
        return None


class _Server(ThreadingHTTPServer):
    #: The listen backlog: a wide pool opens its connections all at once. A
    #: class attribute, since ``listen`` is called in the constructor.
    request_queue_size = 1024

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a closed keep-alive connection, a stream read
        # up to its end marker) is normal; anything else still gets a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _Tracker:
    def __init__(self, sim: Simulator, remote_id: str) -> None:
        self.sim, self.remote_id = sim, remote_id

    def __enter__(self) -> None:
        with self.sim.lock:
            self.sim.in_flight[self.remote_id] += 1
            now = self.sim.in_flight[self.remote_id]
            if now > 1:
                self.sim.overlaps += 1
            self.sim.max_overlap[self.remote_id] = max(self.sim.max_overlap[self.remote_id], now)

    def __exit__(self, *exc: object) -> None:
        with self.sim.lock:
            self.sim.in_flight[self.remote_id] -= 1


class _Handler(BaseHTTPRequestHandler):
    sim: Simulator
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this every keep-alive
    # request waits out a delayed ACK (~40 ms).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        request = Request(
            method=self.command,
            path=path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            query=query,
        )
        fault = self.sim.take_fault(request)
        if fault is not None:
            with self.sim.lock:
                self.sim.requests[f"fault {fault.status}"] += 1
            if fault.delay:
                time.sleep(fault.delay)
            body = fault.body.encode() if isinstance(fault.body, str) else fault.body
            self._send(
                Response(
                    fault.status,
                    body if body is not None else {"error": "simulated fault"},
                    dict(fault.headers),
                    content_type=fault.content_type,
                )
            )
            return
        hold = self.sim.take_hold(request)
        if hold is not None and not hold.after:
            hold.wait()
        with self.sim.lock:
            self.sim.active += 1
            self.sim.max_active = max(self.sim.max_active, self.sim.active)
        try:
            if self.sim.latency:
                time.sleep(self.sim.latency)
            try:
                response = self.sim.dispatch(request)
            except _BadRequest as exc:
                response = Response(400, {"error": str(exc)})
        finally:
            with self.sim.lock:
                self.sim.active -= 1
        if hold is not None and hold.after:
            response = hold.holding(response)
        self._send(response)

    do_GET = do_POST = do_DELETE = do_PUT = _handle

    def _send(self, response: Response) -> None:
        try:
            if response.stream is not None:
                self._send_stream(response)
                return
            if isinstance(response.body, bytes):
                payload = response.body
            elif isinstance(response.body, str) and "json" not in response.content_type:
                payload = response.body.encode()
            else:
                payload = json.dumps(response.body).encode()
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for key, value in response.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send_stream(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        for chunk in _iter(response.stream):
            data = chunk if isinstance(chunk, bytes) else chunk.encode()
            if data:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class _BadRequest(Exception):
    pass


def bad_request(message: str) -> _BadRequest:
    return _BadRequest(message)


def _iter(stream: Iterable[str | bytes] | None) -> Iterator[str | bytes]:
    yield from stream or ()


def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 for anything else."""
    try:
        body = request.json()
    except ValueError:
        raise bad_request("Body is not valid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("Body must be a JSON object")
    return body
