from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand

from providers.simulators import DEFAULT_TOKEN, start_all


class Command(BaseCommand):
    help = "Serve every provider simulator on loopback and print their base URLs."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--base-port", type=int, default=8901, help="first port; 0 picks free ports"
        )
        parser.add_argument(
            "--latency", type=float, default=0.2, help="seconds added to every answer"
        )
        parser.add_argument(
            "--token", default=DEFAULT_TOKEN, help="the API key the simulators accept"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        sims = start_all(
            host=options["host"],
            base_port=options["base_port"],
            token=options["token"],
            latency=options["latency"],
        )
        for slug, sim in sims.items():
            self.stdout.write(f"{slug:<14} {sim.base_url}")
        self.stdout.write(f"API key for all of them: {options['token']}")
        self.stdout.flush()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            for sim in sims.values():
                sim.stop()
