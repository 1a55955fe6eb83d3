"""The baselines of figure 9: a bare httpx thread pool, in a process of its own,
sending the same requests the dashboard sends to the same simulator, with
nothing recorded. ``python -m bench.bare_pool URL COUNT THREADS PROMPT_CHARS
[shared|per-thread]`` prints the seconds it took.

``shared`` (the default, and the issue's baseline) is the pool as it is
usually written: one ``httpx.Client`` for every thread. ``per-thread`` gives
each thread a client of its own, as the dashboard's runner does: httpcore's
pool walks all of its connections on every request and response under one
lock, so a client per thread is the fastest a bare pool gets."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from providers.simulators import DEFAULT_TOKEN


def main() -> None:
    url, count, threads, chars = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    mode = sys.argv[5] if len(sys.argv) > 5 else "shared"
    if mode not in ("shared", "per-thread"):
        sys.exit(f"unknown mode {mode!r}: shared or per-thread")

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


if __name__ == "__main__":
    main()
