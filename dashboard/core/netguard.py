"""Outbound-call guard: a credential's base_url may not reach loopback, private,
link-local or cloud-metadata addresses unless its host is listed in
DASHBOARD_ALLOWED_PRIVATE_HOSTS (the local simulators, a self-hosted gateway)."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class BlockedHostError(ValueError):
    pass


def _is_internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
    )


def allowed_hosts() -> set[str]:
    return {host.lower() for host in settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS}


def check_url(url: str, *, resolve: bool = True) -> None:
    """Raise BlockedHostError when ``url`` may not be called."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise BlockedHostError("The base URL must start with http:// or https://.")
    host = (parts.hostname or "").lower()
    if not host:
        raise BlockedHostError("The base URL has no host.")
    if host in allowed_hosts() or "*" in allowed_hosts():
        return
    try:
        addresses = [host] if _literal(host) else (_resolve(host) if resolve else [])
    except OSError:
        # Unresolvable now: the call itself will fail with a readable connect error.
        return
    for address in addresses:
        if _is_internal(address):
            raise BlockedHostError(
                f"{host} is a loopback, private, link-local or metadata address; "
                "calls there are refused unless the host is listed in "
                "DASHBOARD_ALLOWED_PRIVATE_HOSTS."
            )


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _resolve(host: str) -> list[str]:
    return [info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)]
