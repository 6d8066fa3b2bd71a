"""Fuzzing: the URL and address checks with hypothesis, the HTTP API with schemathesis."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from nazzil import netguard
from nazzil.errors import InvalidURL
from nazzil.openapi import spec

IPV4_BLOCKED = [n for n in netguard.BLOCKED_NETWORKS if n.version == 4]
IPV6_BLOCKED = [n for n in netguard.BLOCKED_NETWORKS if n.version == 6]


def address_in(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> st.SearchStrategy:
    """Any address inside a network."""
    first, last = int(network.network_address), int(network.broadcast_address)
    return st.integers(first, last).map(ipaddress.ip_address)


blocked_v4 = st.sampled_from(IPV4_BLOCKED).flatmap(address_in)
blocked_v6 = st.sampled_from(IPV6_BLOCKED).flatmap(address_in)


@st.composite
def hidden_v4(draw: Any) -> ipaddress.IPv6Address:
    """A blocked IPv4 address hidden in one of the IPv6 forms that carry one."""
    v4 = int(draw(blocked_v4))
    form = draw(st.sampled_from(["mapped", "translated", "compatible", "nat64", "6to4", "teredo"]))
    if form == "mapped":
        value = 0xFFFF << 32 | v4
    elif form == "translated":
        value = 0xFFFF << 48 | v4
    elif form == "compatible":
        value = v4 if v4 > 1 else 2  # ::0.0.0.2 is still 0.0.0.0/8
    elif form == "nat64":
        value = 0x0064FF9B << 96 | v4
    elif form == "6to4":
        value = 0x2002 << 112 | v4 << 80 | draw(st.integers(0, 2**80 - 1))
    else:
        server = draw(st.integers(0, 2**32 - 1))
        flags_port = draw(st.integers(0, 2**32 - 1))
        value = 0x20010000 << 96 | server << 64 | flags_port << 32 | (~v4 & 0xFFFFFFFF)
    return ipaddress.IPv6Address(value)


FAST = settings(max_examples=300, deadline=None, derandomize=True)


@FAST
@given(st.one_of(blocked_v4, blocked_v6, hidden_v4()))
def test_blocked_ranges_are_never_public(ip: Any) -> None:
    assert not netguard.is_public(ip)
    assert not netguard.Policy().allows("any.example", 443, ip)


@FAST
@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_is_public_never_crashes(ip: Any) -> None:
    result = netguard.is_public(ip)
    # Whatever Python's own tables say is private stays blocked.
    if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast:
        assert result is False


@FAST
@given(st.one_of(blocked_v4, blocked_v6, hidden_v4()))
def test_connections_to_blocked_ranges_never_start(ip: Any) -> None:
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sockaddr = (str(ip), 80, 0, 0) if ip.version == 6 else (str(ip), 80)
    policy = netguard.Policy()
    original, original_socket = netguard.resolve, netguard.socket.socket
    netguard.resolve = lambda host, port: [(family, socket.SOCK_STREAM, 6, "", sockaddr)]

    def no_socket(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a socket was opened for {ip}")

    netguard.socket.socket = no_socket  # type: ignore[misc]
    try:
        with pytest.raises(netguard.AddressBlocked):
            policy.create_connection(("name.example", 80), 1)
    finally:
        netguard.resolve, netguard.socket.socket = original, original_socket  # type: ignore[misc]


URL_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs",))
hosts = st.one_of(
    st.text(URL_CHARS, max_size=30),
    st.sampled_from(["example.org", "127.0.0.1", "[::1]", "2130706433", "0x7f.1", "localhost"]),
    st.ip_addresses().map(lambda ip: f"[{ip}]" if ip.version == 6 else str(ip)),
)
urls = st.one_of(
    st.text(URL_CHARS, max_size=80),
    st.builds(
        "{}://{}{}{}{}".format,
        st.sampled_from(["http", "https", "HTTP", "ftp", "file", "data", "javascript", "", "h"]),
        st.sampled_from(["", "user@", "u:p@", ":@", "@"]),
        hosts,
        st.one_of(st.just(""), st.integers(-1, 70000).map(lambda p: f":{p}"), st.text(max_size=5)),
        st.text(URL_CHARS, max_size=30),
    ),
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(urls)
def test_check_url_accepts_only_clean_http_urls(url: str) -> None:
    try:
        clean = netguard.check_url(url)
    except InvalidURL:
        return
    parts = urlsplit(clean)
    assert parts.scheme.lower() in ("http", "https")
    assert parts.hostname and parts.username is None and parts.password is None
    assert not any(ord(c) < 0x21 or 0x7F <= ord(c) < 0xA0 for c in clean)
    assert netguard.host_port(clean)[1] > 0


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.text(max_size=40), hosts), max_size=5))
def test_trusted_hosts_parse_or_fail_cleanly(entries: list[str]) -> None:
    try:
        policy = netguard.Policy.from_trusted(entries)
    except ValueError:
        return
    # A parsed policy answers every question without raising.
    policy.trusts("example.org", 80, ipaddress.ip_address("10.0.0.1"))
    policy.allows("example.org", 80, ipaddress.ip_address("::1"))


# ------------------------------------------------------------------------------ the API


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """An app whose every outgoing lookup fails: fuzzed URLs can reach nothing at all."""
    from nazzil.app import create_app

    with pytest.MonkeyPatch.context() as mp:

        def nowhere(host: str, port: int) -> list[tuple]:
            raise socket.gaierror(socket.EAI_NONAME, "the fuzz test resolves nothing")

        mp.setattr(netguard, "resolve", nowhere)
        app = create_app(
            {
                "DATA_DIR": str(tmp_path_factory.mktemp("fuzz")),
                "SECRET_KEY": "fuzz",
                "FETCH_TIMEOUT": "1",
                "LOG_LEVEL": "ERROR",
                "RATE_LIMIT_STORAGE": "memory://",
                "RATE_LIMIT_PREVIEW": "off",
                "RATE_LIMIT_JOBS": "off",
                "RATE_LIMIT_STREAM": "off",
            }
        )
        yield app


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Any) -> Any:
    """The app's own OpenAPI description, loaded in-process."""
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", fuzz_app)


# 5xx answers the API may give by design: the site, or a part of a cluster, is down.
EXPECTED_5XX = {"upstream_error", "upstream_timeout", "jobs_disabled", "unavailable"}
# Every operation the API describes (schemathesis' own lazy-fixture loader does not work
# with this pytest, so operations are parametrized here and their strategies drawn below).
OPERATIONS = [
    (path, method.upper()) for path, methods in spec()["paths"].items() for method in methods
]


def check_answer(case: Any, response: Any) -> None:
    """No 500, and every error in the one JSON shape."""
    status = response.status_code
    assert status != 500, (case.method, case.path, case.path_parameters, case.query, case.body)
    if status >= 400:
        body = response.json()
        assert set(body) == {"error", "request_id"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"]
        if status >= 500:
            assert body["error"]["code"] in EXPECTED_5XX, body


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=lambda v: str(v))
def test_api_never_fails_with_a_server_error(api_schema: Any, path: str, method: str) -> None:
    operation = api_schema[path][method]
    strategy = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )

    @given(case=strategy)
    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        check_answer(case, case.call())

    run()
