"""Limits: body size, URL length, playlist size, and rate limits per device and address."""

from __future__ import annotations

import os
import secrets
import socket
from typing import Any

import pytest
from tests.mediaserver import MediaServer, multi_video_page

from nazzil import limits
from nazzil.app import create_app

RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
BLOCKED_URL = "http://10.0.0.1/"  # refused before any fetch: cheap to repeat


def make(config: dict, **extra: Any) -> Any:
    """A test app with extra settings."""
    return create_app({**config, **extra})


def assert_error(response: Any, status: int, code: str) -> dict:
    """Check the one JSON error shape."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error", "request_id"} and body["error"]["code"] == code
    assert body["error"]["message"] and body["request_id"] == response.headers["X-Request-ID"]
    return body


# ---------------------------------------------------------------------- body, URL, playlist


def test_request_body_over_the_limit_is_413(config) -> None:
    client = make(config, MAX_BODY="1K").test_client()
    body = '{"url": "http://example.org/", "pad": "' + "x" * 2000 + '"}'
    response = client.post("/api/v1/info", data=body, content_type="application/json")
    assert_error(response, 413, "payload_too_large")


def test_request_body_under_the_limit_is_read(config) -> None:
    client = make(config, MAX_BODY="1K").test_client()
    response = client.post("/api/v1/info", json={"url": BLOCKED_URL, "pad": "x" * 500})
    assert_error(response, 403, "blocked_address")


def test_jobs_body_over_the_limit_is_413(config, app) -> None:
    if not any(r.rule == "/api/v1/jobs" for r in app.url_map.iter_rules()):
        pytest.skip("POST /api/v1/jobs does not exist in this build")
    client = make(config, MAX_BODY="1K").test_client()
    response = client.post(
        "/api/v1/jobs", data="[" + "1," * 2000 + "1]", content_type="application/json"
    )
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("method", "route"),
    [
        ("GET", "/api/v1/info"),
        ("POST", "/api/v1/info"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/stream"),
    ],
)
def test_url_longer_than_the_limit_is_refused(config, method, route) -> None:
    app = make(config, MAX_URL_LENGTH="100")
    if not any(r.rule == route and method in r.methods for r in app.url_map.iter_rules()):
        pytest.skip(f"{method} {route} does not exist in this build")
    client = app.test_client()
    long_url = "http://example.org/" + "a" * 100
    if method == "GET":
        response = client.get(route, query_string={"url": long_url})
    else:
        response = client.post(route, json={"url": long_url})
    body = assert_error(response, 400, "invalid_url")
    assert "100" in body["error"]["message"]


def test_playlist_is_cut_at_the_limit(config, media_server: MediaServer) -> None:
    srcs = [f"/sample.mp4?n={i}" for i in range(60)]
    page = media_server.add_page("/limits/many.html", multi_video_page(srcs, "Sixty videos"))
    client = make(config, PLAYLIST_LIMIT="3").test_client()
    response = client.post("/api/v1/info", json={"url": page})
    assert response.status_code == 200, response.get_data(as_text=True)
    info = response.get_json()
    assert info["type"] == "playlist"
    assert len(info["entries"]) == 3


# ----------------------------------------------------------------------------- buckets


@pytest.mark.parametrize(
    ("method", "path", "args", "bucket"),
    [
        ("GET", "/api/v1/info", {}, "preview"),
        ("POST", "/api/v1/info", {}, "preview"),
        ("GET", "/preview", {"url": "x"}, "preview"),
        ("GET", "/", {"url": "http://x/"}, "preview"),
        ("GET", "/", {"text": "look http://x/"}, "preview"),
        ("GET", "/", {}, None),
        ("POST", "/api/v1/jobs", {}, "jobs"),
        ("GET", "/api/v1/jobs", {}, None),
        ("POST", "/api/v1/jobs/abc/retry", {}, "jobs"),
        ("POST", "/api/v1/jobs/abc/cancel", {}, None),
        ("GET", "/api/v1/stream", {"url": "x"}, "stream"),
        ("HEAD", "/api/v1/stream", {}, "stream"),
        ("POST", "/login", {}, "login"),
        ("GET", "/login", {}, None),
        ("GET", "/healthz", {}, None),
    ],
)
def test_requests_are_sorted_into_buckets(method, path, args, bucket) -> None:
    assert limits.bucket_of(path, method, args) == bucket


# ------------------------------------------------------------------------------ 429


def test_preview_is_limited_with_429_and_headers(config) -> None:
    client = make(config, RATE_LIMIT_PREVIEW="3/minute").test_client()
    for remaining in (2, 1, 0):
        response = client.get("/api/v1/info", query_string={"url": BLOCKED_URL})
        assert_error(response, 403, "blocked_address")
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Remaining"] == str(remaining)
        assert 0 < int(response.headers["RateLimit-Reset"]) <= 61
        assert "Retry-After" not in response.headers
    refused = client.post("/api/v1/info", json={"url": BLOCKED_URL})
    assert_error(refused, 429, "rate_limited")
    assert 0 < int(refused.headers["Retry-After"]) <= 61
    assert all(name in refused.headers for name in RATE_HEADERS)
    assert refused.headers["RateLimit-Remaining"] == "0"


def test_page_preview_counts_against_the_same_limit(config) -> None:
    client = make(config, RATE_LIMIT_PREVIEW="2/minute").test_client()
    assert client.get("/", query_string={"url": BLOCKED_URL}).status_code == 200
    assert client.get("/api/v1/info", query_string={"url": BLOCKED_URL}).status_code == 403
    page = client.get("/", query_string={"url": BLOCKED_URL}, headers={"Accept": "text/html"})
    assert page.status_code == 429 and page.mimetype == "text/html"
    assert "Retry-After" in page.headers
    # The plain page and the health check are never limited.
    assert client.get("/").status_code == 200
    assert client.get("/healthz").status_code == 200


def device_cookie(app: Any, device_id: str = "device-for-tests-1") -> str:
    """A valid signed device cookie value, as nazzil would have set it."""
    from nazzil import device

    with app.app_context():
        return device._serializer().dumps(device_id)


def test_limits_count_per_device_and_per_address(config) -> None:
    app = make(config, RATE_LIMIT_PREVIEW="2/minute")
    first = app.test_client()
    first.set_cookie("nazzil_device", device_cookie(app))
    for _ in range(2):
        assert first.get("/api/v1/info", query_string={"url": BLOCKED_URL}).status_code == 403
    # Same device from another address: refused by the device limit.
    moved = first.get(
        "/api/v1/info",
        query_string={"url": BLOCKED_URL},
        environ_base={"REMOTE_ADDR": "203.0.113.5"},
    )
    assert_error(moved, 429, "rate_limited")
    # Another device (no cookie) from the first address: refused by the address limit.
    other = app.test_client().get("/api/v1/info", query_string={"url": BLOCKED_URL})
    assert_error(other, 429, "rate_limited")
    # Someone else entirely is not affected.
    stranger = app.test_client().get(
        "/api/v1/info",
        query_string={"url": BLOCKED_URL},
        environ_base={"REMOTE_ADDR": "198.51.100.9"},
    )
    assert stranger.status_code == 403


def test_a_forged_device_cookie_is_not_a_device(config) -> None:
    app = make(config, RATE_LIMIT_PREVIEW="1/minute")
    client = app.test_client()
    client.set_cookie("nazzil_device", "forged.value")
    assert client.get("/api/v1/info", query_string={"url": BLOCKED_URL}).status_code == 403
    # The address limit still holds, whatever cookie is sent.
    client.set_cookie("nazzil_device", "another.forgery")
    assert client.get("/api/v1/info", query_string={"url": BLOCKED_URL}).status_code == 429


def test_ipv6_clients_are_counted_by_their_64(config) -> None:
    client = make(config, RATE_LIMIT_PREVIEW="1/minute").test_client()
    a = client.get(
        "/api/v1/info",
        query_string={"url": BLOCKED_URL},
        environ_base={"REMOTE_ADDR": "2001:db8:1:2::1"},
    )
    b = client.get(
        "/api/v1/info",
        query_string={"url": BLOCKED_URL},
        environ_base={"REMOTE_ADDR": "2001:db8:1:2:ffff::99"},
    )
    c = client.get(
        "/api/v1/info",
        query_string={"url": BLOCKED_URL},
        environ_base={"REMOTE_ADDR": "2001:db8:1:3::1"},
    )
    assert (a.status_code, b.status_code, c.status_code) == (403, 429, 403)


@pytest.mark.parametrize("value", ["off", "", "0"])
def test_a_limit_can_be_turned_off(config, value) -> None:
    client = make(config, RATE_LIMIT_PREVIEW=value).test_client()
    for _ in range(5):
        response = client.get("/api/v1/info", query_string={"url": BLOCKED_URL})
        assert response.status_code == 403
        assert "RateLimit-Limit" not in response.headers


def test_a_malformed_limit_stops_the_start(config) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        make(config, RATE_LIMIT_PREVIEW="lots per hour")


def test_limits_can_be_set_from_the_environment(config, monkeypatch) -> None:
    monkeypatch.setenv("NAZZIL_RATE_LIMIT_PREVIEW", "1/hour")
    client = create_app(config).test_client()
    client.get("/api/v1/info", query_string={"url": BLOCKED_URL})
    response = client.get("/api/v1/info", query_string={"url": BLOCKED_URL})
    assert_error(response, 429, "rate_limited")
    assert int(response.headers["Retry-After"]) > 60


@pytest.mark.parametrize(
    ("route", "method", "setting"),
    [("/api/v1/jobs", "POST", "RATE_LIMIT_JOBS"), ("/api/v1/stream", "GET", "RATE_LIMIT_STREAM")],
)
def test_jobs_and_streams_are_limited(config, route, method, setting) -> None:
    app = make(config, **{setting: "2/minute"})
    if not any(r.rule == route and method in r.methods for r in app.url_map.iter_rules()):
        pytest.skip(f"{method} {route} does not exist in this build")
    client = app.test_client()
    statuses = []
    for _ in range(3):
        if method == "POST":
            response = client.post(route, json={"url": BLOCKED_URL})
        else:
            response = client.get(route, query_string={"url": BLOCKED_URL})
            response.get_data()
        statuses.append(response.status_code)
    assert statuses[:2] != [429, 429] and statuses[2] == 429, statuses
    assert_error(response, 429, "rate_limited")
    assert "Retry-After" in response.headers and "RateLimit-Limit" in response.headers
    # Previews have a limit of their own.
    assert client.get("/api/v1/info", query_string={"url": BLOCKED_URL}).status_code == 403


# ------------------------------------------------------------------- client address


def _hit(client: Any, forwarded: str, remote: str = "10.0.0.2") -> int:
    return client.get(
        "/api/v1/info",
        query_string={"url": BLOCKED_URL},
        headers={"X-Forwarded-For": forwarded},
        environ_base={"REMOTE_ADDR": remote},
    ).status_code


def test_forwarded_for_is_ignored_without_proxy_hops(config) -> None:
    client = make(config, RATE_LIMIT_PREVIEW="1/minute").test_client()
    assert _hit(client, "198.51.100.1") == 403
    # Forging another X-Forwarded-For does not make a new client.
    assert _hit(client, "198.51.100.2") == 429


def test_forwarded_for_names_the_client_behind_one_proxy(config) -> None:
    client = make(config, RATE_LIMIT_PREVIEW="1/minute", PROXY_HOPS="1").test_client()
    assert _hit(client, "198.51.100.1") == 403
    assert _hit(client, "198.51.100.2") == 403
    assert _hit(client, "198.51.100.1") == 429
    # A client prepending a forged address still counts as itself: the proxy appends the
    # real one last, and only one hop is trusted.
    assert _hit(client, "203.0.113.77, 198.51.100.1") == 429


# ------------------------------------------------------------------------------ storage


def test_no_connection_is_made_when_the_app_is_created(config, monkeypatch) -> None:
    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("create_app opened a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    app = make(config, RATE_LIMIT_STORAGE="", REDIS_URL="redis://127.0.0.1:1/0")
    assert limits.storage_uri(app.config) == "redis://127.0.0.1:1/0"


def test_an_unreachable_redis_falls_back_to_memory(config) -> None:
    client = make(
        config,
        RATE_LIMIT_STORAGE="redis://127.0.0.1:1/0",
        RATE_LIMIT_PREVIEW="1/minute",
        LOG_LEVEL="ERROR",
    ).test_client()
    assert client.get("/api/v1/info", query_string={"url": BLOCKED_URL}).status_code == 403
    assert client.get("/api/v1/info", query_string={"url": BLOCKED_URL}).status_code == 429


def _redis_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 6379), 0.5).close()
        return True
    except OSError:
        return False


@pytest.mark.services
def test_redis_counts_are_shared_by_every_web_node(config) -> None:
    if not _redis_up():
        if os.environ.get("NAZZIL_REQUIRE_SERVICES") == "1":
            pytest.fail("Redis on 127.0.0.1:6379 is required (NAZZIL_REQUIRE_SERVICES=1)")
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    nodes = [
        make(
            config, RATE_LIMIT_STORAGE="redis://127.0.0.1:6379/0", RATE_LIMIT_PREVIEW="2/minute"
        ).test_client()
        for _ in range(2)
    ]
    # An address of its own (a random /64), so counters of other runs are never met.
    address = {"REMOTE_ADDR": f"2001:db8:{secrets.randbits(16):x}:{secrets.randbits(16):x}::1"}
    query = {"url": BLOCKED_URL}
    statuses = [
        node.get("/api/v1/info", query_string=query, environ_base=address).status_code
        for node in (nodes[0], nodes[1], nodes[0])
    ]
    assert statuses == [403, 403, 429]
