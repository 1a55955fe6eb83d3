"""The baselines of figure 9: a bare httpx thread pool, in a process of its own,
sending the same requests the dashboard sends to the same simulator, with
nothing recorded. ``python -m bench.bare_pool URL COUNT THREADS PROMPT_CHARS
[shared|per-thread]`` prints the seconds it took.

``shared`` (the default, and the issue's baseline) is the pool as it is
usually written: one ``httpx.Client`` for every thread. ``per-thread`` gives
each thread a client of its own, as the dashboard's runner does: httpcore's
pool walks all of its connections on every request and response under one
lock, so a client per thread is the fastest a bare httpx pool gets. ``stdlib``
is the issue's bar: no httpx at all, each thread one persistent
``http.client.HTTPConnection`` (keep-alive), the same requests."""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx

from providers.simulators import DEFAULT_TOKEN


def main() -> None:
    url, count, threads, chars = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    mode = sys.argv[5] if len(sys.argv) > 5 else "shared"
    if mode not in ("shared", "per-thread", "stdlib"):
        sys.exit(f"unknown mode {mode!r}: shared, per-thread or stdlib")
    if mode == "stdlib":
        stdlib_pool(url, count, threads, chars)
        return

    def client(connections: int) -> httpx.Client:
        return httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            timeout=30,
        )

    shared = client(threads)
    local = threading.local()

    def call(i: int) -> int:
        if mode == "shared":
            own = shared
        elif (own := getattr(local, "client", None)) is None:
            own = local.client = client(1)
        prompt = (f"Prompt {i}: " + "lorem ipsum " * chars)[:chars]
        response = own.post("/inference", json={"model": "bench-model", "prompt": prompt})
        response.raise_for_status()
        return len(response.content)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        total = sum(pool.map(call, range(count)))
    print(f"{time.perf_counter() - started:.4f} {total}", flush=True)


def stdlib_pool(url: str, count: int, threads: int, chars: int) -> None:
    """A thread pool with one persistent ``http.client`` connection per thread."""
    parsed = urlsplit(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    headers = {"Authorization": f"Bearer {DEFAULT_TOKEN}", "Content-Type": "application/json"}
    local = threading.local()

    def call(i: int) -> int:
        prompt = (f"Prompt {i}: " + "lorem ipsum " * chars)[:chars]
        body = json.dumps({"model": "bench-model", "prompt": prompt}).encode()
        for attempt in range(3):
            connection = getattr(local, "connection", None)
            if connection is None:
                connection = local.connection = http.client.HTTPConnection(host, port, timeout=30)
            try:
                connection.request("POST", "/inference", body=body, headers=headers)
                response = connection.getresponse()
                content = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                # The server dropped the connection (its accept backlog is
                # short): a new one, as urllib3 and httpx do.
                connection.close()
                local.connection = None
                if attempt == 2:
                    raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}")
        return len(content)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        total = sum(pool.map(call, range(count)))
    print(f"{time.perf_counter() - started:.4f} {total}", flush=True)


if __name__ == "__main__":
    main()
