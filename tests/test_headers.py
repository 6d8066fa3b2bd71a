"""Browser safety: CSP without inline script, safety headers, Secure cookies, hostile titles."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from tests.mediaserver import MediaServer, og_page, video_page

from nazzil.app import create_app
from nazzil.headers import CONTENT_SECURITY_POLICY

HOSTILE = (
    '</h2><script>alert(1)</script>"onerror="alert(2)\' <img src=x onerror=alert(3)> \u202egpj.exe'
)


def csp(response: Any) -> dict[str, list[str]]:
    """Parse a Content-Security-Policy header into directive -> sources."""
    out = {}
    for part in response.headers["Content-Security-Policy"].split(";"):
        name, *sources = part.split()
        out[name] = sources
    return out


PAGES = ["/", "/login", "/nothing-here", "/static/app.css", "/api/v1/openapi.json", "/healthz"]


@pytest.mark.parametrize("path", [*PAGES, "/api/v1/info", "/api/v1/nothing"])
def test_every_answer_carries_the_safety_headers(client, path) -> None:
    response = client.get(path)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["X-Frame-Options"] == "DENY"
    policy = csp(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]
    assert policy["form-action"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert set(policy["img-src"]) == {"'self'", "data:", "http:", "https:"}
    assert set(policy["media-src"]) == {"'self'", "blob:"}
    response.close()


def test_the_policy_allows_no_inline_code() -> None:
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "unsafe-eval" not in CONTENT_SECURITY_POLICY
    assert "*" not in CONTENT_SECURITY_POLICY


class InlineCode(HTMLParser):
    """Collect what a strict CSP would block: inline scripts, handlers, style attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name.lower() for name, _ in attrs}
        for name, value in attrs:
            if name.lower().startswith("on"):
                self.problems.append(f"<{tag} {name}=...>")
            if name.lower() in ("href", "src", "action") and (
                value or ""
            ).strip().lower().startswith("javascript:"):
                self.problems.append(f"<{tag} {name}=javascript:>")
        if "style" in names:
            self.problems.append(f"<{tag} style=...>")
        if tag == "style":
            self.problems.append("<style>")
        if tag == "script":
            kind = dict(attrs).get("type") or ""
            if "src" not in names and kind not in ("application/json", "application/ld+json"):
                self.problems.append("<script> without src")
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


@pytest.fixture
def pages(media_server: MediaServer) -> dict[str, str]:
    """A video page and a page with a hostile title on the trusted server."""
    return {
        "video": media_server.add_page("/hdr/video.html", video_page("/sample.mp4", "Fine")),
        "hostile": media_server.add_page("/hdr/hostile.html", video_page("/sample.mp4", HOSTILE)),
        "hostile_og": media_server.add_page(
            "/hdr/hostile-og.html", og_page(media_server.url("/sample.mp4"), HOSTILE)
        ),
    }


def test_rendered_pages_have_no_inline_code(config, pages) -> None:
    app = create_app({**config, "ACCESS_TOKENS": "t"})
    client = app.test_client()
    login = client.get("/login")
    client.post("/login", data={"token": "t"})
    urls = [
        "/",
        f"/?url={pages['video']}",
        f"/?url={pages['hostile']}",
        "/?url=http://10.0.0.1/",
        f"/preview?url={pages['video']}",
        "/nothing-here",
        "/?lang=ar",
    ]
    for response in [login, *(client.get(u, headers={"Accept": "text/html"}) for u in urls)]:
        assert response.mimetype == "text/html"
        parser = InlineCode()
        parser.feed(response.get_data(as_text=True))
        assert parser.problems == [], (response.request.path, parser.problems)


class TextIn(HTMLParser):
    """Record each text node with the tags open around it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.texts: list[tuple[str, tuple[str, ...]]] = []
        self.attributes: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes += [value or "" for _, value in attrs]
        if tag not in ("img", "input", "meta", "link", "br", "source"):
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack and self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        self.texts.append((data, tuple(self.stack)))


@pytest.mark.parametrize("page", ["hostile", "hostile_og"])
def test_hostile_titles_are_rendered_escaped(client, pages, page) -> None:
    response = client.get("/", query_string={"url": pages[page]})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    # Nothing of the title became markup: no script, no handler, no stray element.
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    inline = InlineCode()
    inline.feed(html)
    assert inline.problems == []
    parser = TextIn()
    parser.feed(html)
    holders = [stack for text, stack in parser.texts if "alert(1)" in text]
    assert holders, "the hostile title is not shown at all"
    # The whole title is one text node, and a right-to-left override inside it cannot
    # reorder the text around it: it sits in an isolating element.
    for text, stack in parser.texts:
        if "\u202e" in text:
            assert "bdi" in stack or "title" in stack, stack
    assert not any("\u202e" in value for value in parser.attributes if "alert" not in value)


def test_hostile_titles_are_plain_json_strings(client, pages) -> None:
    info = client.post("/api/v1/info", json={"url": pages["hostile"]}).get_json()
    assert info["title"] == HOSTILE


def test_cookies_are_secure_over_https(config) -> None:
    https = "https://nazzil.example"
    open_client = create_app(config).test_client()
    locked_client = create_app({**config, "ACCESS_TOKENS": "t"}).test_client()
    answers = [
        open_client.get("/?lang=ar", base_url=https),  # the language cookie
        locked_client.post("/login", data={"token": "t"}, base_url=https),  # the access cookie
    ]
    for response in answers:
        cookies = response.headers.getlist("Set-Cookie")
        assert cookies, "no cookie was set"
        assert all("; Secure" in c for c in cookies), cookies
    plain = create_app(config).test_client().get("/?lang=ar")
    assert plain.headers.getlist("Set-Cookie")
    assert all("Secure" not in c for c in plain.headers.getlist("Set-Cookie"))


def test_media_answers_are_not_sniffed_or_framed(client) -> None:
    response = client.get("/static/icon.svg")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    response.close()


def test_hostnames_refuse_other_host_headers(config) -> None:
    """With HOSTNAMES set, a rebinding page's Host header is refused before any view runs."""
    from nazzil.app import create_app

    client = create_app({**config, "HOSTNAMES": "nazzil.example.org"}).test_client()
    ok = client.get("/healthz", headers={"Host": "nazzil.example.org"})
    assert ok.status_code == 200
    refused = client.post(
        "/api/v1/info", json={"url": "http://127.0.0.1:1/"}, headers={"Host": "attacker.example"}
    )
    assert refused.status_code == 400
    assert refused.get_json()["error"]["code"] == "invalid_request"
    page = client.get("/", headers={"Host": "attacker.example", "Accept": "text/html"})
    assert page.status_code == 400 and "attacker" not in page.get_data(as_text=True)
