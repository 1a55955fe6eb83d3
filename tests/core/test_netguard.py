"""The outbound guard sits on the connection: the address checked is the
address connected to, a DNS answer that changes between a check and the call
is refused, and a name that does not resolve is refused with a readable error."""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore
import httpx
import pytest

from dashboard.core import netguard
from dashboard.core.connect import build_provider
from tests.conftest import make_credential

PUBLIC = "93.184.216.34"
OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class Rebinding:
    """A DNS server under an attacker's control: each lookup gets the next answer."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.asked: list[str] = []

    def __call__(self, host: str) -> Sequence[str]:
        self.asked.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


class RecordingNetwork(httpcore.NetworkBackend):
    """A network that answers 200 and remembers where each socket connected."""

    def __init__(self) -> None:
        self.connected: list[tuple[str, int]] = []
        self._mock = httpcore.MockBackend([OK_RESPONSE])

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        self.connected.append((host, port))
        return self._mock.connect_tcp(host, port)

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise NotImplementedError

    def sleep(self, seconds: float) -> None:
        pass


def test_dns_rebinding_is_refused_at_connect(settings: Any) -> None:
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = []
    dns = Rebinding([PUBLIC], ["127.0.0.1"])
    network = RecordingNetwork()
    netguard.check_url("http://rebind.example/v1", resolver=dns)  # the form's check: public
    client = httpx.Client(transport=netguard.guarded_transport(resolver=dns, backend=network))
    with pytest.raises(httpx.ConnectError, match=r"rebind\.example \(127\.0\.0\.1\).*refused"):
        client.get("http://rebind.example/v1")
    assert network.connected == []


def test_the_connection_goes_to_the_address_that_was_checked(settings: Any) -> None:
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = []
    dns = Rebinding([PUBLIC], ["127.0.0.1"])
    network = RecordingNetwork()
    client = httpx.Client(transport=netguard.guarded_transport(resolver=dns, backend=network))
    assert client.get("http://api.example/v1").status_code == 200
    assert network.connected == [(PUBLIC, 80)]
    assert dns.asked == ["api.example"]  # resolved once, never again by the socket


def test_any_internal_answer_refuses_the_host(settings: Any) -> None:
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = []
    network = RecordingNetwork()
    for address in ("169.254.169.254", "10.0.0.8", "::1", "fd00:ec2::254", "0.0.0.0", "100.64.0.1"):
        dns = Rebinding([PUBLIC, address])
        client = httpx.Client(transport=netguard.guarded_transport(resolver=dns, backend=network))
        with pytest.raises(httpx.ConnectError, match="refused"):
            client.get("http://mixed.example/")
    assert network.connected == []


def test_literal_internal_addresses_are_refused(settings: Any) -> None:
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = []
    network = RecordingNetwork()
    client = httpx.Client(transport=netguard.guarded_transport(backend=network))
    for url in ("http://127.0.0.1:8000/", "http://[::ffff:169.254.169.254]/", "http://[::1]/"):
        with pytest.raises(httpx.ConnectError, match="refused"):
            client.get(url)
    assert network.connected == []


#: IPv6 addresses that carry an internal IPv4 one: 6to4 (2002::/16, the v4 in
#: bits 16-48) and NAT64 (64:ff9b::/96, the v4 in the last 32 bits).
EMBEDDED_INTERNAL = [
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254 (metadata)
    "2002:a00:1:1234::5",  # 6to4 of 10.0.0.1
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::ac10:1",  # NAT64 of 172.16.0.1
]


@pytest.mark.parametrize("address", EMBEDDED_INTERNAL)
def test_ipv6_that_embeds_an_internal_ipv4_is_refused(settings: Any, address: str) -> None:
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = []
    network = RecordingNetwork()
    dns = Rebinding([address])
    client = httpx.Client(transport=netguard.guarded_transport(resolver=dns, backend=network))
    for url in (f"http://[{address}]/", "http://tunnel.example/"):
        with pytest.raises(httpx.ConnectError, match="refused"):
            client.get(url)
    assert network.connected == []
    with pytest.raises(netguard.BlockedHostError):
        netguard.check_url(f"https://[{address}]/v1")
    with pytest.raises(netguard.BlockedHostError):
        netguard.check_url("https://tunnel.example/v1", resolver=dns)


def test_6to4_of_a_public_ipv4_is_not_refused(settings: Any) -> None:
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = []
    netguard.check_url("https://[2002:5db8:d822::1]/v1")  # 6to4 of 93.184.216.34
    network = RecordingNetwork()
    client = httpx.Client(transport=netguard.guarded_transport(backend=network))
    assert client.get("http://[2002:5db8:d822::1]/").status_code == 200


def test_a_name_that_does_not_resolve_is_refused_readably(settings: Any) -> None:
    def nxdomain(host: str) -> Sequence[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    network = RecordingNetwork()
    client = httpx.Client(transport=netguard.guarded_transport(resolver=nxdomain, backend=network))
    with pytest.raises(httpx.ConnectError, match=r"nowhere\.example does not resolve"):
        client.get("http://nowhere.example/")
    assert network.connected == []


def test_allowed_private_hosts_connect_as_named(settings: Any) -> None:
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = ["gateway.internal"]
    dns = Rebinding(["10.1.2.3"])
    network = RecordingNetwork()
    client = httpx.Client(transport=netguard.guarded_transport(resolver=dns, backend=network))
    assert client.get("http://Gateway.Internal:8080/").status_code == 200
    assert network.connected == [("gateway.internal", 8080)]


def test_the_peer_address_is_checked_after_connect(settings: Any) -> None:
    """Belt and braces: whatever the socket reports as its peer is checked too."""
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = []

    class Stream(httpcore.MockStream):
        def get_extra_info(self, info: str) -> Any:
            return ("10.9.9.9", 80) if info == "server_addr" else None

    class Network(RecordingNetwork):
        def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
            self.connected.append((host, port))
            return Stream([OK_RESPONSE])

    client = httpx.Client(
        transport=netguard.guarded_transport(resolver=Rebinding([PUBLIC]), backend=Network())
    )
    with pytest.raises(httpx.ConnectError, match=r"10\.9\.9\.9"):
        client.get("http://odd.example/")


# --- through the app: a credential whose host rebinds --------------------------------------------


class SwitchableDns:
    def __init__(self, answer: str) -> None:
        self.answer = answer

    def __call__(self, host: str) -> Sequence[str]:
        return [self.answer]


@pytest.mark.django_db
def test_a_credential_whose_host_rebinds_reaches_nothing(
    team: Any, sims: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks see a public address; between them and the call the DNS
    answer turns to loopback, where a simulator listens: the call is refused
    and the simulator sees nothing. (``localhost`` is loopback for the system
    resolver too, so a guard that let the socket resolve the name again would
    reach the simulator.)"""
    settings.DASHBOARD_ALLOWED_PRIVATE_HOSTS = []
    sim = sims.get("together")
    port = sim.base_url.rsplit(":", 1)[1]
    dns = SwitchableDns(PUBLIC)
    monkeypatch.setattr(netguard, "_resolve", dns)
    url = f"http://localhost:{port}"
    netguard.check_url(url)  # what the credential form asks: public, accepted
    credential = make_credential(team, base_url=url)
    with build_provider(credential) as provider:
        dns.answer = "127.0.0.1"  # the attacker's short-TTL record changes
        check = provider.check_connection()
    assert not check.ok and "refused" in check.detail, check.detail
    assert sum(sim.requests.values()) == 0


@pytest.mark.django_db
def test_a_credential_on_a_name_that_does_not_resolve(
    team: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def nxdomain(host: str) -> Sequence[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(netguard, "_resolve", nxdomain)
    credential = make_credential(team, base_url="https://api.nowhere.example")
    with build_provider(credential) as provider:
        check = provider.check_connection()
    assert not check.ok and "api.nowhere.example does not resolve" in check.detail


@pytest.mark.django_db
def test_simulators_on_allowed_hosts_still_work(team: Any, sims: Any) -> None:
    sim = sims.get("bytez")
    credential = make_credential(team, "bytez", base_url=sim.base_url)
    with build_provider(credential) as provider:
        assert provider.check_connection().ok
