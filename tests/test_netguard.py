"""netguard: which addresses may be reached, and its own guarded HTTP client."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from tests.mediaserver import MediaServer

from nazzil import netguard
from nazzil.errors import BlockedAddress, InvalidURL, UpstreamError

BLOCKED = [
    "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1", "100.127.255.254",  # CGNAT
    "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1",
    "192.0.0.9", "192.0.2.1", "198.18.0.1", "198.51.100.7", "203.0.113.9",
    "::", "::1", "fe80::1", "fec0::1", "fc00::1", "fd12:3456::1", "ff02::1", "ff0e::1",
    "2001:db8::1", "3fff::1", "100::1",
    # IPv4 hidden in IPv6: mapped, translated, compatible, NAT64, local NAT64, 6to4, Teredo.
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:0:7f00:1", "::7f00:1", "::a00:1",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::808:808", "2002:7f00:1::",
    "2002:a00:1::", "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo client 127.0.0.1
]  # fmt: skip
PUBLIC = [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700::1111", "2001:4860:4860::8888",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::",
]  # fmt: skip


@pytest.mark.parametrize("address", BLOCKED)
def test_private_and_reserved_addresses_are_not_public(address: str) -> None:
    assert not netguard.is_public(ipaddress.ip_address(address))
    assert not netguard.Policy().allows("example.org", 80, ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address: str) -> None:
    assert netguard.is_public(ipaddress.ip_address(address))


def test_scoped_ipv6_is_never_public() -> None:
    assert not netguard.is_public(ipaddress.IPv6Address("2606:4700::1111%eth0"))


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("::ffff:127.0.0.1", ["127.0.0.1"]),
        ("64:ff9b::a9fe:a9fe", ["169.254.169.254"]),
        ("2002:c0a8:101::1", ["192.168.1.1"]),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", ["65.54.227.120", "127.0.0.1"]),
        ("2606:4700::1111", []),
    ],
)
def test_embedded_ipv4_addresses_are_found(address: str, inner: list[str]) -> None:
    found = netguard.embedded_ipv4s(ipaddress.IPv6Address(address))
    assert [str(ip) for ip in found] == inner


@pytest.fixture(autouse=True)
def _fresh_canary(canary: MediaServer) -> None:
    """Each test starts with an empty canary log."""
    canary.clear()


# ----------------------------------------------------------------------------- Policy


def test_trusted_entries_host_port_and_cidr() -> None:
    policy = netguard.Policy.from_trusted(
        ["127.0.0.1:8080", "Media.LAN.", "[::1]:9000", "10.0.0.0/8", "fd00::/8", " ", ""]
    )
    ip = ipaddress.ip_address
    assert policy.trusts("127.0.0.1", 8080, ip("127.0.0.1"))
    assert not policy.trusts("127.0.0.1", 8081, ip("127.0.0.1"))
    # Any spelling of a trusted address is the same address.
    assert policy.allows("2130706433", 8080, ip("127.0.0.1"))
    assert policy.trusts("media.lan", 80) and policy.trusts("MEDIA.lan.", 443)
    assert policy.trusts("[::1]", 9000, ip("::1")) and not policy.trusts("::1", 9001, ip("::1"))
    assert policy.allows("nas", 5000, ip("10.20.30.40"))
    assert policy.allows("nas", 5000, ip("fd00::5"))
    assert not policy.allows("nas", 5000, ip("192.168.0.1"))


@pytest.mark.parametrize(
    "entry", ["host:port", "host:0", "host:70000", "[::1]x", "bad host", "[::1]:", "a/b:1"]
)
def test_malformed_trusted_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="NAZZIL_TRUSTED_HOSTS"):
        netguard.Policy.from_trusted([entry])


def test_a_malformed_trusted_entry_stops_the_app_at_start(config) -> None:
    from nazzil.app import create_app

    with pytest.raises(ValueError, match="TRUSTED_HOSTS"):
        create_app({**config, "TRUSTED_HOSTS": "127.0.0.1:notaport"})


class _NoSocket:
    """socket.socket stand-in that fails the test if a socket is ever created."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise AssertionError("a socket was created for a blocked address")


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "169.254.169.254", "::ffff:10.0.0.1"])
def test_connections_to_blocked_addresses_are_never_attempted(monkeypatch, address) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sockaddr = (address, 80, 0, 0) if family == socket.AF_INET6 else (address, 80)
    monkeypatch.setattr(
        netguard, "resolve", lambda host, port: [(family, socket.SOCK_STREAM, 6, "", sockaddr)]
    )
    monkeypatch.setattr(netguard.socket, "socket", _NoSocket)
    with pytest.raises(netguard.AddressBlocked):
        netguard.Policy().create_connection(("innocent.example", 80), 1)


def test_only_the_allowed_address_of_a_mixed_answer_is_used(monkeypatch, media_server) -> None:
    # A name that resolves to a blocked address first and a trusted one second.
    answers = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.9.9.9", media_server.port)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", media_server.port)),
    ]
    monkeypatch.setattr(netguard, "resolve", lambda host, port: answers)
    policy = netguard.Policy.from_trusted([f"127.0.0.1:{media_server.port}"])
    sock = policy.create_connection(("mixed.example", media_server.port), 2)
    try:
        assert sock.getpeername() == ("127.0.0.1", media_server.port)
    finally:
        sock.close()


def test_dns_rebinding_is_caught_at_connect_time(monkeypatch, canary) -> None:
    # The first lookup (precheck) says public, the one made to connect says loopback.
    calls = []

    def rebinding(host: str, port: int) -> list[tuple]:
        calls.append(host)
        address = "93.184.216.34" if len(calls) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(netguard, "resolve", rebinding)
    url = f"http://rebind.example:{canary.port}/secret"
    assert netguard.precheck(url, netguard.Policy()) == url
    with pytest.raises(BlockedAddress):
        netguard.fetch(url, netguard.Policy(), timeout=2).close()
    assert len(calls) == 2
    assert canary.requests == []


# ----------------------------------------------------------------------------- check_url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "example.org",
        "/relative",
        "ftp://example.org/x",
        "file:///etc/passwd",
        "data:text/plain,hi",
        "javascript:alert(1)",
        "gopher://127.0.0.1:70/",
        "http://",
        "http:///path",
        "http://user:pw@example.org/",
        "http://user@example.org/",
        "http://@example.org/",
        "http://example.org:0/",
        "http://example.org:99999/",
        "http://exa mple.org/",
        "http://example.org/\x00",
        "http://example.org/a\nb",
        "http://[::1%25eth0]/",
        "http://[not-v6]/",
        "http://ex_ample.-bad-.org/",
        "http://example.org\\@evil.org/",
        "http://" + "a" * 300 + ".org/",
        None,
        42,
    ],
)
def test_check_url_refuses(url: object) -> None:
    with pytest.raises(InvalidURL):
        netguard.check_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.org/",
        "HTTPS://Example.ORG:8443/a?b=c#d",
        "http://[2606:4700::1111]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "https://bücher.example/ünï",
    ],
)
def test_check_url_accepts(url: str) -> None:
    assert netguard.check_url(f"  {url} ") == url


def test_check_url_limits_the_length() -> None:
    url = "http://example.org/" + "a" * 100
    assert netguard.check_url(url, max_length=200) == url
    with pytest.raises(InvalidURL, match="longer than 50"):
        netguard.check_url(url, max_length=50)


# ----------------------------------------------------------------------------- fetch


@pytest.fixture
def policy(media_server: MediaServer) -> netguard.Policy:
    """The test policy: only the media server is trusted."""
    return netguard.Policy.from_trusted([f"127.0.0.1:{media_server.port}"])


def test_fetch_reads_a_trusted_server(policy, media_server) -> None:
    resp = netguard.fetch(media_server.url("/sample.mp4"), policy, headers={"Range": "bytes=0-7"})
    try:
        assert resp.status == 206
        assert resp.read()[4:8] == b"ftyp"
    finally:
        resp.close()


def test_fetch_follows_http_redirects_inside_the_trust(policy, media_server) -> None:
    media_server.add_redirect("/ng/hop1", "/ng/hop2", 301)
    media_server.add_redirect("/ng/hop2", media_server.url("/thumb.jpg"), 307)
    resp = netguard.fetch(media_server.url("/ng/hop1"), policy)
    try:
        assert resp.status == 200
        assert resp.url == media_server.url("/thumb.jpg")
    finally:
        resp.close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_fetch_refuses_a_redirect_inward(policy, media_server, canary, status) -> None:
    media_server.add_redirect(f"/ng/in{status}", canary.url("/secret"), status)
    with pytest.raises(BlockedAddress):
        netguard.fetch(media_server.url(f"/ng/in{status}"), policy, timeout=2)
    assert canary.requests == []


@pytest.mark.parametrize(
    "location", ["ftp://127.0.0.1:21/x", "file:///etc/passwd", "gopher://127.0.0.1/", "data:,x"]
)
def test_fetch_follows_only_http_redirects(policy, media_server, location) -> None:
    media_server.add_redirect("/ng/scheme", location)
    with pytest.raises(BlockedAddress, match="not http"):
        netguard.fetch(media_server.url("/ng/scheme"), policy, timeout=2)


def test_fetch_refuses_redirects_with_credentials_or_garbage(policy, media_server) -> None:
    media_server.add_redirect("/ng/userinfo", f"http://u:p@127.0.0.1:{media_server.port}/")
    with pytest.raises(UpstreamError, match="malformed"):
        netguard.fetch(media_server.url("/ng/userinfo"), policy, timeout=2)


def test_fetch_stops_redirect_loops(policy, media_server) -> None:
    media_server.add_redirect("/ng/loop", "/ng/loop")
    with pytest.raises(UpstreamError, match="too many"):
        netguard.fetch(media_server.url("/ng/loop"), policy, timeout=2, max_redirects=3)


def test_fetch_percent_encodes_non_ascii_paths(policy, media_server) -> None:
    media_server.clear()
    resp = netguard.fetch(media_server.url("/ng/ünï-code?q=ü"), policy, timeout=2)
    resp.close()
    assert media_server.paths()[-1] == "/ng/%C3%BCn%C3%AF-code?q=%C3%BC"


@pytest.mark.parametrize("name", ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"])
def test_fetch_ignores_proxy_variables(monkeypatch, policy, media_server, canary, name) -> None:
    monkeypatch.setenv(name, canary.base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    resp = netguard.fetch(media_server.url("/thumb.jpg"), policy, timeout=2)
    try:
        assert resp.status == 200
    finally:
        resp.close()
    assert canary.requests == []


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST.", "db.localhost", "x.y.localhost."])
def test_localhost_names_are_blocked_without_asking_dns(monkeypatch, name) -> None:
    monkeypatch.setattr(netguard, "resolve", lambda host, port: pytest.fail("resolved"))
    with pytest.raises(BlockedAddress):
        netguard.Policy().check_host(name, 80)
    with pytest.raises(netguard.AddressBlocked):
        netguard.Policy().create_connection((name, 80), 1)
    assert netguard.Policy.from_trusted([f"{name}:80"]).local_name(name, 80) is False


def test_fetch_drops_reserved_and_malformed_headers(policy, media_server) -> None:
    media_server.clear()
    headers = {
        "Host": "other.example",
        "Transfer-Encoding": "chunked",
        "X-Evil": "a\r\nInjected: 1",
        "Bad Name": "x",
        "Referer": "https://site.example/page",
    }
    resp = netguard.fetch(media_server.url("/thumb.jpg"), policy, headers=headers, timeout=2)
    resp.close()
    seen = media_server.requests[-1].headers
    assert seen["Host"] == f"127.0.0.1:{media_server.port}"
    assert seen["Referer"] == "https://site.example/page"
    assert "Injected" not in seen and "X-Evil" not in seen and "Transfer-Encoding" not in seen
