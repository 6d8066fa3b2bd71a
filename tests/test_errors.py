"""Bad input gets a clear answer in the one error shape, never a 500, on every endpoint."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.mediaserver import MediaServer, no_video_page, video_page
from werkzeug.routing import IntegerConverter, Rule
from werkzeug.routing.exceptions import RequestRedirect
from werkzeug.test import TestResponse

from nazzil.app import create_app

# Parts of a body that would show an internal detail: a traceback or a path on this machine.
LEAKS = re.compile(r"Traceback|File \"|site-packages|/work/|/tmp/|/usr/|\.py\b|<class ")
HEX_ID = re.compile(r"[0-9a-f]{16}")


def assert_error(
    response: TestResponse, status: int | None = None, code: str | None = None
) -> dict[str, Any]:
    """Assert the one JSON error shape (and status/code when given); return the body."""
    text = response.get_data(as_text=True)
    assert response.status_code >= 400, text
    assert response.status_code != 500 or code == "internal_error", text
    if status is not None:
        assert response.status_code == status, text
    assert response.mimetype == "application/json", text
    body = json.loads(text)
    assert set(body) == {"error", "request_id"}
    assert set(body["error"]) == {"code", "message"}
    assert isinstance(body["error"]["code"], str) and body["error"]["code"]
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, text
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert not LEAKS.search(text), text
    return body


def _is_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, RecursionError):
        return False


def assert_still_up(client: Any) -> None:
    """The app answers normally after the bad request."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ok"


# ---------------------------------------------------------------------------- bad input

LONG_URL = "http://example.com/" + "a" * 100_000

BAD_BODIES = [
    # (id, raw body, content type, status, code)
    ("not-json", b"url=http://example.com/", "application/json", 400, "invalid_request"),
    ("not-json-text", b"hello", "text/plain", 400, "invalid_request"),
    ("invalid-utf8", b"\xff\xfe\x00", "application/json", 400, "invalid_request"),
    ("trailing-comma", b'{"url": "http://example.com/",}', "application/json", 400,
     "invalid_request"),
    ("empty-body", b"", "application/json", 400, "invalid_request"),
    ("json-array", b'["http://example.com/"]', "application/json", 400, "invalid_request"),
    ("json-string", b'"http://example.com/"', "application/json", 400, "invalid_request"),
    ("json-number", b"42", "application/json", 400, "invalid_request"),
    ("json-null", b"null", "application/json", 400, "invalid_request"),
    ("missing-url", b'{"link": "http://example.com/"}', "application/json", 400,
     "invalid_request"),
    ("null-url", b'{"url": null}', "application/json", 400, "invalid_request"),
    ("number-url", b'{"url": 5}', "application/json", 400, "invalid_request"),
    ("bool-url", b'{"url": true}', "application/json", 400, "invalid_request"),
    ("list-url", b'{"url": ["http://example.com/"]}', "application/json", 400,
     "invalid_request"),
    ("object-url", b'{"url": {"href": "http://example.com/"}}', "application/json", 400,
     "invalid_request"),
    ("empty-url", b'{"url": ""}', "application/json", 400, "invalid_url"),
    ("blank-url", b'{"url": "   "}', "application/json", 400, "invalid_url"),
    ("deeply-nested", b"[" * 60_000, "application/json", 400, "invalid_request"),
    ("nested-field", b'{"url": "http://example.com/", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
     "application/json", 400, "invalid_request"),
    ("json-nan", b"NaN", "application/json", 400, "invalid_request"),
    ("json-bom", b'\xef\xbb\xbf{"url": 5}', "application/json", 400, "invalid_request"),
    # A 100 KB URL makes the body larger than MAX_BODY (64K): refused before it is parsed.
    ("100kb-url", json.dumps({"url": LONG_URL}).encode(), "application/json", 413,
     "payload_too_large"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_BODIES],
)
def test_bad_body(client, body: bytes, content_type: str, status: int, code: str) -> None:
    response = client.post("/api/v1/info", data=body, content_type=content_type)
    payload = assert_error(response, status, code)
    if code == "invalid_request" and _is_object(body):
        assert "'url'" in payload["error"]["message"], "the message names the field"
    assert_still_up(client)


BAD_URLS = [
    # (id, url, message fragment)
    ("nul", "http://example.com/\x00", "control"),
    ("newline", "http://example.com/\nx", "control"),
    ("tab", "http://example.com/\tx", "control"),
    ("del", "http://example.com/\x7f", "control"),
    ("c1-control", "http://example.com/\x85x", "control"),
    ("space-in-host", "http://exa mple.com/", "malformed"),
    ("file", "file:///etc/passwd", "http"),
    ("ftp", "ftp://example.com/video.mp4", "http"),
    ("javascript", "javascript:alert(1)", "http"),
    ("data", "data:text/html,hi", "http"),
    ("gopher", "gopher://127.0.0.1:70/", "http"),
    ("no-scheme", "example.com/video", "http"),
    ("scheme-relative", "//example.com/video", "http"),
    ("no-host", "http:///video", "host"),
    ("only-scheme", "https://", "host"),
    ("port-too-big", "http://example.com:99999/", "port"),
    ("port-letters", "http://example.com:abc/", "port"),
    ("port-zero", "http://example.com:0/", "port"),
    ("port-negative", "http://example.com:-1/", "port"),
    ("unclosed-ipv6", "http://[::1/", "host"),
    ("bad-ipv6", "http://[12345::1]/", "host"),
    ("ipv6-zone", "http://[fe80::1%25eth0]/", "host"),
    ("leading-hyphen", "http://-example.com/", "host"),
    ("empty-label", "http://example..com/", "host"),
    ("long-label", "http://" + "a" * 64 + ".com/", "host"),
    ("bad-chars-host", "http://exa$mple.com/", "host"),
    ("credentials", "http://user:secret@example.com/", "password"),
]  # fmt: skip


@pytest.mark.parametrize(("url", "fragment"), [pytest.param(*c[1:], id=c[0]) for c in BAD_URLS])
def test_bad_url(client, url: str, fragment: str) -> None:
    response = client.post("/api/v1/info", json={"url": url})
    body = assert_error(response, 400, "invalid_url")
    assert fragment in body["error"]["message"].lower()
    # The same through the query string of GET.
    assert_error(client.get("/api/v1/info", query_string={"url": url}), 400, "invalid_url")
    assert_still_up(client)


def test_get_without_url(client) -> None:
    body = assert_error(client.get("/api/v1/info"), 400, "invalid_request")
    assert "'url'" in body["error"]["message"]


def test_100kb_url_in_query_string(client) -> None:
    body = assert_error(
        client.get("/api/v1/info", query_string={"url": LONG_URL}), 400, "invalid_url"
    )
    assert "longer than" in body["error"]["message"]
    assert LONG_URL[:200] not in body["error"]["message"], "the URL is not echoed back"


def test_url_just_under_the_limit_is_accepted_for_checking(client, media_server) -> None:
    url = media_server.url("/status/404?" + "q" * (4096 - len(media_server.url("/status/404?"))))
    assert len(url) == 4096
    assert_error(client.post("/api/v1/info", json={"url": url}), 502, "upstream_error")
    assert_error(client.post("/api/v1/info", json={"url": url + "q"}), 400, "invalid_url")


# --------------------------------------------------------------------- upstream failures


@pytest.fixture(scope="module")
def upstream(media_server: MediaServer, media_root) -> dict[str, str]:
    """Pages on the media server that fail in the ways sites do."""
    garbage = (media_root / "garbage.bin").read_bytes()
    s = media_server
    return {
        "no-video": s.add_page("/errors/plain.html", no_video_page("Only words here")),
        "404": s.url("/status/404"),
        "500": s.url("/status/500"),
        "garbage-as-html": s.add_page("/errors/garbage.html", garbage),
        "garbage-direct": s.url("/garbage.bin"),
        "missing-media": s.add_page(
            "/errors/missing.html", video_page("/errors/no-such-file.mp4", "Broken")
        ),
    }


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("no-video", 422, "unsupported_url"),
        ("404", 502, "upstream_error"),
        ("500", 502, "upstream_error"),
        ("garbage-as-html", 422, "unsupported_url"),
        ("garbage-direct", 422, "unsupported_url"),
    ],
)
def test_upstream_failure(client, upstream, name: str, status: int, code: str) -> None:
    assert_error(client.post("/api/v1/info", json={"url": upstream[name]}), status, code)
    assert_error(client.get("/api/v1/info", query_string={"url": upstream[name]}), status, code)
    assert_still_up(client)


def test_site_error_message_names_the_status(client, upstream) -> None:
    body = assert_error(client.post("/api/v1/info", json={"url": upstream["500"]}), 502)
    assert "500" in body["error"]["message"]


def test_site_that_never_answers_times_out(client, media_server) -> None:
    started = time.monotonic()
    response = client.post("/api/v1/info", json={"url": media_server.url("/hang")})
    elapsed = time.monotonic() - started
    assert_error(response, 504, "upstream_timeout")
    # FETCH_TIMEOUT is 2 s in tests; the bound is only a safety net, not a benchmark.
    assert elapsed < 15
    assert_still_up(client)


def test_failures_are_not_cached(client, media_server) -> None:
    url = media_server.add_page("/errors/flaky.html", no_video_page("Nothing yet"))
    assert_error(client.post("/api/v1/info", json={"url": url}), 422, "unsupported_url")
    media_server.add_page("/errors/flaky.html", video_page("/sample.mp4", "Now a video"))
    response = client.post("/api/v1/info", json={"url": url})
    assert response.status_code == 200
    assert response.get_json()["title"] == "Now a video"


def test_app_keeps_working_after_every_bad_input(config, upstream, media_server) -> None:
    # One client sends every bad request in a row: lift the preview rate limit for it.
    client = create_app({**config, "RATE_LIMIT_PREVIEW": "10000/minute"}).test_client()
    for _, body, content_type, *_ in BAD_BODIES:
        client.post("/api/v1/info", data=body, content_type=content_type)
    for _, url, _ in BAD_URLS:
        client.post("/api/v1/info", json={"url": url})
    for url in upstream.values():
        client.post("/api/v1/info", json={"url": url})
    page = media_server.add_page("/errors/after.html", video_page("/sample.mp4", "Still fine"))
    response = client.post("/api/v1/info", json={"url": page})
    assert response.status_code == 200
    assert response.get_json()["duration"] == pytest.approx(4, abs=0.5)


# ------------------------------------------------------------ the shape on every endpoint

_RULES_APP = create_app({"SECRET_KEY": "rules", "DATA_DIR": "/nonexistent/nazzil-rules"})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _rules() -> list[Rule]:
    return sorted(
        (r for r in _RULES_APP.url_map.iter_rules() if r.endpoint != "static"),
        key=lambda r: (r.rule, r.endpoint),
    )


def _sample_path(rule: Rule) -> str:
    """A concrete path for a rule, with ids that exist nowhere."""
    values: dict[str, Any] = {}
    for name, converter in rule._converters.items():
        values[name] = 987654321 if isinstance(converter, IntegerConverter) else "no-such-id-0"
    built = rule.build(values, append_unknown=False)
    assert built is not None
    return built[1]


def _matches(path: str, method: str) -> bool:
    adapter = _RULES_APP.url_map.bind("localhost")
    try:
        adapter.match(path, method=method)
    except RequestRedirect:
        return True
    except Exception:  # noqa: BLE001 - NotFound / MethodNotAllowed: nothing serves it
        return False
    return True


def _is_api(path: str) -> bool:
    return path.startswith("/api/") or path in ("/healthz", "/readyz")


RULE_IDS = [f"{r.rule}[{r.endpoint}]" for r in _rules()]


@pytest.fixture
def json_client(app) -> Iterator[Any]:
    """A client that asks for JSON, so page routes answer errors in the JSON shape too."""
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT"] = "application/json"
    yield client


@pytest.mark.parametrize("rule", _rules(), ids=RULE_IDS)
def test_wrong_method_is_405(json_client, rule: Rule) -> None:
    path = _sample_path(rule)
    wrong = [m for m in METHODS if m not in rule.methods and not _matches(path, m)]
    if not wrong:
        pytest.skip("every method is served at this path")
    for method in wrong:
        response = json_client.open(path, method=method)
        assert_error(response, 405, "method_not_allowed")
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert allowed & set(rule.methods)


@pytest.mark.parametrize("rule", _rules(), ids=RULE_IDS)
def test_unknown_subpath_is_404(json_client, rule: Rule) -> None:
    path = _sample_path(rule).rstrip("/") + "/no-such-thing"
    if _matches(path, "GET"):
        pytest.skip("a rule serves this path")
    assert_error(json_client.get(path), 404, "not_found")


@pytest.mark.parametrize("rule", _rules(), ids=RULE_IDS)
def test_every_route_answers_errors_in_the_shape(json_client, rule: Rule) -> None:
    """Call each route with nonsense; whatever fails, fails in the one shape and never 500."""
    path = _sample_path(rule)
    for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
        for body in (None, b"\x00garbage", b"[]", b"{}"):
            kwargs: dict[str, Any] = {"method": method}
            if body is not None and method not in ("GET", "DELETE"):
                kwargs.update(data=body, content_type="application/json")
            response = json_client.open(path, **kwargs)
            assert response.status_code != 500, (method, body, response.get_data(as_text=True))
            assert response.headers.get("X-Request-ID")
            if response.status_code < 400:
                continue
            if response.mimetype == "text/html" and not _is_api(path):
                # A page (or an HTML fragment for app.js) may answer its own error in HTML.
                assert not LEAKS.search(response.get_data(as_text=True))
            else:
                assert_error(response)


BODY_RULES = [r for r in _rules() if r.methods & {"POST", "PUT", "PATCH"}]


@pytest.mark.parametrize("rule", BODY_RULES, ids=[f"{r.rule}[{r.endpoint}]" for r in BODY_RULES])
def test_body_too_large(json_client, rule: Rule) -> None:
    method = sorted(rule.methods & {"POST", "PUT", "PATCH"})[0]
    big = json.dumps({"url": "http://example.com/", "pad": "x" * 200_000}).encode()
    response = json_client.open(
        _sample_path(rule), method=method, data=big, content_type="application/json"
    )
    if rule.rule == "/api/v1/info":
        assert_error(response, 413, "payload_too_large")
    elif response.status_code >= 400:
        # Routes that never read a body may refuse for another reason, still in the shape.
        assert_error(response)


@pytest.mark.parametrize(
    "path",
    [
        "/nope",
        "/api/nope",
        "/api/v1/nope",
        "/api/v2/info",
        "/healthz/x",
        "/static/nope.css",
        "/api/v1/info/x",
        "/%00",
        "/api/v1/" + "x" * 5000,
    ],
)
def test_unknown_route(client, path: str) -> None:
    assert_error(client.get(path, headers={"Accept": "application/json"}), 404, "not_found")


def test_unknown_api_route_is_json_even_for_a_browser(client) -> None:
    response = client.get("/api/v1/nope", headers={"Accept": "text/html"})
    assert_error(response, 404, "not_found")


def test_unknown_page_is_html_for_a_browser(client) -> None:
    response = client.get("/nope", headers={"Accept": "text/html,application/xhtml+xml,*/*"})
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert response.headers["X-Request-ID"] in html
    assert not LEAKS.search(html)


def test_wrong_method_on_page_is_html(client) -> None:
    response = client.post("/", headers={"Accept": "text/html"})
    assert response.status_code == 405
    assert response.mimetype == "text/html"
    assert "GET" in response.headers["Allow"]


def test_readyz_failure_names_the_part(app, client) -> None:
    def broken(_app: Any) -> None:
        raise ConnectionError("database at /var/lib/secret refused")

    app.extensions["nazzil"].setdefault("ready_checks", {})["database"] = broken
    body = assert_error(client.get("/readyz"), 503, "unavailable")
    assert "database" in body["error"]["message"]
    assert "/var/lib/secret" not in body["error"]["message"]


# ------------------------------------------------------------------- unexpected errors


@pytest.fixture
def boom_app(config) -> Any:
    """An app with test-only routes that fail with a bug."""
    app = create_app(config)

    def boom() -> str:
        raise RuntimeError("secret detail at /work/main/src/nazzil/thing.py")

    app.add_url_rule("/api/v1/test-boom", "test_api_boom", boom, methods=["GET", "POST"])
    app.add_url_rule("/test-boom", "test_page_boom", boom)
    return app


def test_bug_in_api_view_is_500_json(boom_app, nazzil_log) -> None:
    client = boom_app.test_client()
    response = client.get("/api/v1/test-boom")
    body = assert_error(response, 500, "internal_error")
    request_id = response.headers["X-Request-ID"]
    assert HEX_ID.fullmatch(request_id)
    assert request_id in body["error"]["message"], "the person can quote the id"
    assert "secret detail" not in response.get_data(as_text=True)
    log = nazzil_log.getvalue()
    failure = [line for line in log.splitlines() if "unhandled error" in line]
    assert failure and f"[{request_id}]" in failure[0]
    assert "Traceback" in log and "RuntimeError: secret detail" in log
    access = [line for line in log.splitlines() if "GET /api/v1/test-boom 500" in line]
    assert access and f"[{request_id}]" in access[0]
    assert_still_up(client)


def test_bug_in_page_view_is_500_html(boom_app, nazzil_log) -> None:
    client = boom_app.test_client()
    response = client.get("/test-boom", headers={"X-Request-ID": "trace-me-42"})
    assert response.status_code == 500
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert response.headers["X-Request-ID"] == "trace-me-42"
    assert "trace-me-42" in html
    assert "secret detail" not in html and not LEAKS.search(html)
    assert "[trace-me-42]" in nazzil_log.getvalue()
    assert "Traceback" in nazzil_log.getvalue()


def test_bug_in_page_view_is_json_for_an_api_client(boom_app) -> None:
    client = boom_app.test_client()
    assert_error(
        client.get("/test-boom", headers={"Accept": "application/json"}), 500, "internal_error"
    )


# ------------------------------------------------------------------------- request ids


@pytest.mark.parametrize("incoming", ["abc", "req-123_x.Y", "a" * 64, "0f3c9a1e-2b7d-4d6e"])
def test_sane_request_id_is_echoed(client, incoming: str) -> None:
    for response in (
        client.get("/healthz", headers={"X-Request-ID": incoming}),
        client.get("/api/v1/nope", headers={"X-Request-ID": incoming}),
    ):
        assert response.headers["X-Request-ID"] == incoming
    assert (
        client.get("/api/v1/nope", headers={"X-Request-ID": incoming}).get_json()["request_id"]
        == incoming
    )


@pytest.mark.parametrize(
    "incoming",
    [
        "",
        "a b",
        "<script>alert(1)</script>",
        "a" * 65,
        "id\x7f",
        "идентификатор",
        "x;y=1",
        "../../etc/passwd",
        "a\tb",
    ],
)
def test_hostile_request_id_is_replaced(client, incoming: str) -> None:
    response = client.get("/api/v1/nope", headers={"X-Request-ID": incoming})
    request_id = response.headers["X-Request-ID"]
    assert request_id != incoming
    assert HEX_ID.fullmatch(request_id)
    assert response.get_json()["request_id"] == request_id


def test_every_response_has_a_fresh_request_id(client) -> None:
    ids = {client.get("/healthz").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5
    assert all(HEX_ID.fullmatch(i) for i in ids)
