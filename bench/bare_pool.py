"""The baseline of figure 9: a bare httpx thread pool, in a process of its own,
sending the same requests the dashboard sends to the same simulator, with
nothing recorded. ``python -m bench.bare_pool URL COUNT THREADS PROMPT_CHARS``
prints the seconds it took."""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from providers.simulators import DEFAULT_TOKEN


def main() -> None:
    url, count, threads, chars = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    client = httpx.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
        limits=httpx.Limits(max_connections=threads, max_keepalive_connections=threads),
        timeout=30,
    )

    def call(i: int) -> int:
        prompt = (f"Prompt {i}: " + "lorem ipsum " * chars)[:chars]
        response = client.post("/inference", json={"model": "bench-model", "prompt": prompt})
        response.raise_for_status()
        return len(response.content)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        total = sum(pool.map(call, range(count)))
    print(f"{time.perf_counter() - started:.4f} {total}", flush=True)


if __name__ == "__main__":
    main()
