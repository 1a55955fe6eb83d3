"""The simulators' HTTP server itself."""

from __future__ import annotations

import select
import socket
import time

from providers.simulators import get_simulator_class


def test_the_simulator_queues_many_connections_at_once() -> None:
    """A simulator's listen backlog holds a wide pool's connections opened at
    once (figure 12 opens 1,000): with the backlog of 5 it had (the size was
    set after ``listen``), the rest were dropped and retried a second later,
    or reset."""
    sim = get_simulator_class("together")()
    sim.start()
    assert sim._server is not None
    sim._server.shutdown()  # nobody accepts now: connections wait in the backlog
    sockets = []
    try:
        for _ in range(100):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex((sim.host, sim.port))
            sockets.append(sock)
        time.sleep(0.3)
        _, writable, _ = select.select([], sockets, [], 0)
        connected = [s for s in writable if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0]
    finally:
        for sock in sockets:
            sock.close()
        sim.stop()
    assert len(connected) == 100
