"""One provider simulator in a process of its own (``python -m bench.simserver
together 0.02 PORT [name=value ...]``), so the figures that compare the
dashboard with a bare client give both the same server without sharing its
process's GIL, and a figure that measures memory keeps the simulator's out of
its own. ``name=value`` pairs are passed to the simulator as float keyword
arguments (``step_seconds=1`` for the batch simulators)."""

from __future__ import annotations

import signal
import sys
import threading

from providers.simulators import get_simulator_class

from .common import HOST


def main() -> None:
    slug, latency, port = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    extra = {name: float(value) for name, _, value in (a.partition("=") for a in sys.argv[4:])}
    sim = get_simulator_class(slug)(latency=latency, host=HOST, port=port, **extra)
    sim.start()
    print(sim.base_url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    sim.stop()


if __name__ == "__main__":
    main()
