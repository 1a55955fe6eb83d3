"""Outbound-call guard: calls may not reach loopback, private, link-local,
reserved, multicast, unspecified or cloud-metadata addresses unless the URL's
host is listed in DASHBOARD_ALLOWED_PRIVATE_HOSTS (the local simulators, a
self-hosted gateway).

The check that counts is made where the connection is made
(:func:`guarded_transport`): the host is resolved once, every address it
resolves to is checked, and the socket connects to exactly one of those
addresses, so a DNS answer that changes between a check and the call
(rebinding) cannot slip a private address in. A name that does not resolve is
refused there with a readable error. :func:`check_url` stays for forms: it
tells the user early, but it is advice, not the guard.

Resolution goes through one seam, the module attribute ``_resolve(host)``, or
the ``resolver`` argument of :func:`check_url` and :func:`guarded_transport`;
tests replace it there, never by patching ``socket``.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from django.conf import settings

from providers.base import shared_ssl_context

#: host -> the addresses it resolves to (raises OSError when it does not resolve).
Resolver = Callable[[str], Sequence[str]]


class BlockedHostError(ValueError):
    pass


#: NAT64's well-known prefix (RFC 6052): the last 32 bits are an IPv4 address.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries to (IPv4-mapped, 6to4, NAT64)."""
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _is_internal(address: str) -> bool:
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and _is_internal(str(embedded)):
            return True
        if ip.ipv4_mapped:
            return False  # its IPv4 address is all there is to it
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        # Shared (carrier-grade NAT) space, documentation ranges and the like:
        # nothing a provider's public endpoint lives on.
        or not ip.is_global
    )


def allowed_hosts() -> set[str]:
    return {host.lower() for host in settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS}


def host_is_allowed(host: str) -> bool:
    allowed = allowed_hosts()
    return "*" in allowed or host.lower().strip("[]") in {h.strip("[]") for h in allowed}


def _blocked_message(host: str, address: str) -> str:
    shown = host if host == address else f"{host} ({address})"
    return (
        f"{shown} is a loopback, private, link-local, reserved or metadata address; "
        "calls there are refused unless the host is listed in "
        "DASHBOARD_ALLOWED_PRIVATE_HOSTS."
    )


def check_url(url: str, *, resolve: bool = True, resolver: Resolver | None = None) -> None:
    """Raise BlockedHostError when ``url`` may not be called, as far as can be
    told now (the form's early answer; the connection checks again). A name
    that does not resolve now passes here: the call itself refuses it."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BlockedHostError("The base URL must start with http:// or https://.")
    host = (parts.hostname or "").lower()
    if not host:
        raise BlockedHostError("The base URL has no host.")
    if host_is_allowed(host):
        return
    if _literal(host):
        addresses: Sequence[str] = [host.strip("[]")]
    elif not resolve:
        return
    else:
        try:
            addresses = (resolver or _resolve)(host)
        except OSError:
            return
    for address in addresses:
        if _is_internal(address):
            raise BlockedHostError(_blocked_message(host, address))


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _resolve(host: str) -> list[str]:
    """The system resolver: the host's addresses, in the order it gives them."""
    found = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in found))


# --- the guard on the connection ----------------------------------------------------------


class GuardedBackend(httpcore.NetworkBackend):
    """An httpcore network backend that resolves the host itself, refuses it if
    any of its addresses is internal, and connects the socket to one of the
    addresses it checked (never to the name, which would resolve again). The
    peer of the connected socket is checked as well. TLS still verifies the
    certificate against the host name: httpcore passes the URL's host as SNI."""

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        inner: httpcore.NetworkBackend | None = None,
        allowed: Callable[[str], bool] = host_is_allowed,
    ) -> None:
        self._resolver = resolver
        self._inner = inner or httpcore.SyncBackend()
        self._allowed = allowed

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        if self._allowed(host):
            return self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        addresses = self.addresses(host)
        error: Exception | None = None
        for address in addresses:
            try:
                stream = self._inner.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            self._check_peer(host, stream)
            return stream
        assert error is not None
        raise error

    def addresses(self, host: str) -> list[str]:
        """The addresses to connect to, every one checked; raises ConnectError."""
        if _literal(host):
            addresses = [host.strip("[]")]
        else:
            try:
                addresses = list((self._resolver or _resolve)(host))
            except OSError as exc:
                raise httpcore.ConnectError(
                    f"{host} does not resolve ({exc.strerror or exc}); the call was not made."
                ) from None
            if not addresses:
                raise httpcore.ConnectError(f"{host} does not resolve; the call was not made.")
        for address in addresses:
            if _is_internal(address):
                raise httpcore.ConnectError(_blocked_message(host, address))
        return addresses

    def _check_peer(self, host: str, stream: httpcore.NetworkStream) -> None:
        peer = stream.get_extra_info("server_addr")
        if peer and _is_internal(str(peer[0])):
            stream.close()
            raise httpcore.ConnectError(_blocked_message(host, str(peer[0])))

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("Unix sockets are not used for outbound calls.")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's own transport on a :class:`GuardedBackend`. Proxies are not
    supported: a proxy would make the connection, not us."""

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        backend: httpcore.NetworkBackend | None = None,
        verify: Any = None,
        limits: httpx.Limits | None = None,
        retries: int = 0,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        ssl_context = verify if verify is not None else shared_ssl_context()
        super().__init__(verify=ssl_context, limits=limits, retries=retries, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=retries,
            network_backend=GuardedBackend(resolver=resolver, inner=backend),
        )


def guarded_transport(
    *,
    resolver: Resolver | None = None,
    backend: httpcore.NetworkBackend | None = None,
    limits: httpx.Limits | None = None,
) -> GuardedTransport:
    """The transport for every outbound call (providers, webhooks): pass it as
    ``httpx.Client(transport=...)``. ``resolver`` and ``backend`` are the seams
    for tests (a fake DNS answer; a network that records where it connects)."""
    return GuardedTransport(resolver=resolver, backend=backend, limits=limits)
