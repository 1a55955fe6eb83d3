"""A total deadline for one HTTP request, on the socket.

httpx's timeouts are per operation: a receiver that sends one byte of its
headers every half second never trips a 10 s read timeout and can hold a
delivery for as long as it likes. This network backend gives every connect,
read and write of its connections at most what is left of one wall-clock
budget, and refuses any once it has run out, so the whole request (connect,
TLS, the body sent, the headers and body read) ends within the budget
however the peer paces itself. One backend serves one request: it is made
with the budget's start.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

from dashboard.core import clock

#: Bytes written per socket call, so a receiver that reads slowly meets the
#: deadline between writes too.
WRITE_CHUNK = 64 * 1024


class DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, seconds: float, *, inner: httpcore.NetworkBackend | None = None) -> None:
        self._ends = clock.monotonic() + seconds
        self._seconds = seconds
        self._inner = inner or httpcore.SyncBackend()

    def left(self, timeout: float | None, error: type[Exception]) -> float:
        """``timeout`` cut to what is left of the budget; raises ``error`` when nothing is."""
        left = self._ends - clock.monotonic()
        if left <= 0:
            raise error(f"No answer within {self._seconds:g} s.")
        return left if timeout is None else min(timeout, left)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host,
            port,
            self.left(timeout, httpcore.ConnectTimeout),
            local_address,
            socket_options,
        )
        return DeadlineStream(stream, self)

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("Unix sockets are not used for outbound calls.")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadline: DeadlineBackend) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), WRITE_CHUNK):
            chunk = buffer[start : start + WRITE_CHUNK]
            self._inner.write(chunk, self._deadline.left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = self._deadline.left(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, left), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)
