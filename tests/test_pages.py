"""The page people use, rendered on the server: paste box, /?url= preview, fragment, manifest."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from tests.mediaserver import multi_video_page, no_video_page, rss_feed, video_page

from nazzil.app import create_app
from nazzil.web import pages

HOSTILE = "</title><script>alert(1)</script>\"'><img src=x onerror=alert(2)>"


class Tags(HTMLParser):
    """Collect every start tag with its attributes (and the text of the i18n JSON block)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.json_text = ""
        self._in_json = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_json = tag == "script" and dict(attrs).get("type") == "application/json"

    def handle_endtag(self, tag: str) -> None:
        self._in_json = False

    def handle_data(self, data: str) -> None:
        if self._in_json:
            self.json_text += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        """Return the attributes of each tag with the given attribute values."""
        return [
            a
            for t, a in self.tags
            if t == tag and all(a.get(k.rstrip("_")) == v for k, v in attrs.items())
        ]


def parse(html: str) -> Tags:
    """Parse a page."""
    tags = Tags()
    tags.feed(html)
    return tags


@pytest.fixture(scope="module")
def urls(media_server) -> dict[str, str]:
    """Pages on the media server this module previews."""
    s = media_server
    return {
        "hls": s.add_page(
            "/pages/hls.html", video_page("/hls/master.m3u8", "Two qualities", poster="/thumb.jpg")
        ),
        "hostile": s.add_page("/pages/hostile.html", video_page("/sample.mp4", HOSTILE)),
        "none": s.add_page("/pages/none.html", no_video_page("Only words")),
        "multi": s.add_page(
            "/pages/multi.html", multi_video_page(["/sample.mp4", "/hls/master.m3u8"], "Both")
        ),
        # The second video offers two files: no single link of its own.
        "two_sources": s.add_page(
            "/pages/two-sources.html",
            "<!doctype html><html><head><title>Sources</title></head><body>"
            '<video><source src="/sample.mp4" type="video/mp4"></video>'
            '<video><source src="/moov_end.mp4" type="video/mp4">'
            '<source src="/video_only.mp4" type="video/mp4"></video></body></html>',
        ),
        "feed": s.add_page(
            "/pages/feed.xml",
            rss_feed("A feed", [("One", s.url("/pages/hls.html")), ("Two", s.url("/sample.mp4"))]),
            content_type="application/rss+xml",
        ),
    }


def test_page_without_url_offers_the_paste_box(client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    doc = parse(html)
    (field,) = doc.find("input", id="url")
    assert field["type"] == "url" and field["name"] == "url"
    assert doc.find("label", for_="url"), "the link box has a label"
    (paste,) = doc.find("button", id="paste-btn")
    assert "hidden" in paste, "the Paste button stays hidden until app.js finds a clipboard"
    (app_div,) = doc.find("div", id="app")
    assert app_div["data-mode"] == "single" and app_div["data-jobs"] == "1"
    strings = json.loads(doc.json_text)
    assert strings["errors"]["unsupported_url"] and strings["status"]["running"]


def test_page_has_no_inline_script_and_nothing_external(client) -> None:
    html = client.get("/").get_data(as_text=True)
    doc = parse(html)
    for tag, attrs in doc.tags:
        if tag == "script":
            assert attrs.get("src") or attrs.get("type") == "application/json"
            if attrs.get("src"):
                assert "defer" in attrs, "scripts must not block the first paint"
        for name, value in attrs.items():
            assert not name.startswith("on"), f"inline handler {name} on <{tag}>"
            assert name != "style", "inline styles break a strict CSP"
            if name in ("src", "href"):
                assert not re.match(r"(https?:)?//", value or ""), f"external resource {value}"


def test_static_files_are_small(client) -> None:
    css = client.get("/static/app.css")
    js = client.get("/static/app.js")
    assert css.status_code == js.status_code == 200
    assert len(css.data) < 16_000 and len(js.data) < 40_000


def test_url_preview_is_rendered_on_the_server(client, urls) -> None:
    response = client.get("/", query_string={"url": urls["hls"]})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    doc = parse(html)
    assert "Two qualities" in html and "0:04" in html
    (field,) = doc.find("input", id="url")
    assert field["value"] == urls["hls"]
    (form,) = doc.find("form", class_="dl")
    assert form["action"] == "/api/v1/stream" and form["method"] == "get"
    assert doc.find("input", type="hidden", name="url", value=urls["hls"])
    values = [a["value"] for t, a in doc.tags if t == "option"]
    assert values[:4] == ["best", "360p", "240p", "audio"]
    assert values[4:] == ["m4a", "mp3"]
    (best,) = doc.find("option", value="best")
    assert "selected" in best
    assert re.search(r"Best \(360p\) · ~\d+\xa0KB", html), "the default shows its size"
    assert doc.find("img", src=urls["hls"].rsplit("/pages/", 1)[0] + "/thumb.jpg")
    for select_id in ("q0", "a0", "s0", "e0"):
        assert doc.find("label", for_=select_id), f"control {select_id} has a label"


def test_hostile_title_is_escaped_everywhere(client, urls) -> None:
    for path in ("/", "/preview"):
        html = client.get(path, query_string={"url": urls["hostile"]}).get_data(as_text=True)
        assert "<script>alert(1)" not in html
        assert "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert not any(name.startswith("on") for _, a in parse(html).tags for name in a)


def test_page_with_no_video_shows_a_sentence(client, urls) -> None:
    response = client.get("/", query_string={"url": urls["none"]})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "No video was found at that link." in html
    assert ">unsupported_url<" not in html and "Traceback" not in html


@pytest.mark.parametrize(
    ("url", "sentence"),
    [
        ("not a link", "does not look like a web link"),
        ("http://10.0.0.1/x", "private network"),
    ],
)
def test_bad_links_get_friendly_sentences(client, url, sentence) -> None:
    html = client.get("/", query_string={"url": url}).get_data(as_text=True)
    assert sentence in html


def test_preview_fragment_for_app_js(client, urls) -> None:
    ok = client.get("/preview", query_string={"url": urls["hls"]})
    assert ok.status_code == 200 and ok.headers["X-Nazzil-Fragment"] == "1"
    html = ok.get_data(as_text=True)
    assert "<html" not in html and 'class="card preview"' in html and "Two qualities" in html
    bad = client.get("/preview", query_string={"url": urls["none"]})
    assert bad.status_code == 422 and bad.headers["X-Nazzil-Fragment"] == "1"
    assert 'data-code="unsupported_url"' in bad.get_data(as_text=True)
    empty = client.get("/preview")
    assert empty.status_code == 400 and "web link" in empty.get_data(as_text=True)


def test_playlist_shows_each_entry_with_its_own_controls(client, urls, media_server) -> None:
    html = client.get("/", query_string={"url": urls["feed"]}).get_data(as_text=True)
    doc = parse(html)
    assert "several videos" in html and "A feed" in html
    assert len(doc.find("article", class_="card preview")) == 2
    forms = doc.find("form", class_="dl")
    assert len(forms) == 2
    links = [a["value"] for a in doc.find("input", type="hidden", name="url")]
    assert links == [urls["hls"], media_server.url("/sample.mp4")]
    ids = [a["id"] for t, a in doc.tags if t in ("select", "input") and a.get("id")]
    assert len(ids) == len(set(ids)), "each entry's controls have their own ids"


def test_every_video_of_a_page_can_be_downloaded(client, urls, media_server) -> None:
    # A plain file and an HLS master playlist each get a link of their own.
    html = client.get("/", query_string={"url": urls["multi"]}).get_data(as_text=True)
    doc = parse(html)
    assert len(doc.find("article", class_="card preview")) == 2
    links = [a["value"] for a in doc.find("input", type="hidden", name="url")]
    assert links == [media_server.url("/sample.mp4"), media_server.url("/hls/master.m3u8")]
    assert "no link of its own" not in html


def test_videos_sharing_the_page_link_offer_only_the_first(client, urls) -> None:
    html = client.get("/", query_string={"url": urls["two_sources"]}).get_data(as_text=True)
    doc = parse(html)
    assert len(doc.find("article", class_="card preview")) == 2
    assert len(doc.find("form", class_="dl")) == 1
    assert "no link of its own" in html


def test_manifest_is_served_with_its_type_and_share_target(client) -> None:
    base = parse(client.get("/").get_data(as_text=True))
    (link,) = base.find("link", rel="manifest")
    response = client.get(link["href"])
    assert response.status_code == 200
    assert response.mimetype == "application/manifest+json"
    manifest = json.loads(response.data)
    assert manifest["start_url"] == "/" and manifest["display"] == "standalone"
    share = manifest["share_target"]
    assert share["action"] == "/" and share["method"] == "GET"
    assert share["params"] == {"title": "title", "text": "text", "url": "url"}
    purposes = set()
    for icon in manifest["icons"]:
        got = client.get(icon["src"])
        assert got.status_code == 200 and got.mimetype == icon["type"], icon["src"]
        purposes.add(icon["purpose"])
        if icon["type"] == "image/png":
            width, height = (int(x) for x in icon["sizes"].split("x"))
            assert got.data[:8] == b"\x89PNG\r\n\x1a\n"
            assert int.from_bytes(got.data[16:20], "big") == width
            assert int.from_bytes(got.data[20:24], "big") == height
    assert {"any", "maskable"} <= purposes


@pytest.mark.parametrize("param", ["text", "title"])
def test_share_target_takes_the_link_out_of_text(client, urls, param) -> None:
    shared = f"Look at this: {urls['hls']}, really."
    html = client.get("/", query_string={param: shared, "url": ""}).get_data(as_text=True)
    assert "Two qualities" in html
    (field,) = parse(html).find("input", id="url")
    assert field["value"] == urls["hls"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"url": " https://a.example/v "}, "https://a.example/v"),
        ({"url": "", "text": "see https://a.example/v?x=1."}, "https://a.example/v?x=1"),
        ({"text": "شاهد https://a.example/v،"}, "https://a.example/v"),
        ({"title": "(https://a.example/w)"}, "https://a.example/w"),
        ({"text": "no link here", "title": "none"}, ""),
    ],
)
def test_shared_url(args, expected) -> None:
    assert pages.shared_url(args) == expected


def test_serverless_page_streams_instead_of_jobs(config) -> None:
    app = create_app({**config, "MODE": "serverless"})
    doc = parse(app.test_client().get("/").get_data(as_text=True))
    (app_div,) = doc.find("div", id="app")
    assert app_div["data-mode"] == "serverless" and app_div["data-jobs"] == "0"


def test_html_error_page_is_friendly(client) -> None:
    response = client.get("/no/such/page", headers={"Accept": "text/html"})
    assert response.status_code == 404
    html = response.get_data(as_text=True)
    assert "That could not be found." in html
    assert response.headers["X-Request-ID"] in html


def fmt(
    fid: str,
    kind: str,
    height: int | None = None,
    filesize: int | None = None,
    tbr: float | None = None,
) -> dict:
    """A Format of the API."""
    return {
        "format_id": fid,
        "kind": kind,
        "height": height,
        "filesize": filesize,
        "tbr": tbr,
        "ext": "mp4",
    }


def test_choices_group_by_height_best_first_with_sizes(app) -> None:
    info = {
        "duration": 10.0,
        "formats": [
            fmt("v1080", "video", 1080, filesize=30 << 20),
            fmt("m720", "video+audio", 720, filesize=12 << 20),
            fmt("v720", "video", 720, filesize=10 << 20),
            fmt("m360", "video+audio", 360, tbr=800),
            fmt("a", "audio", filesize=2 << 20),
        ],
    }
    with app.test_request_context("/"):
        c = pages.choices(info)
    assert [q["value"] for q in c["qualities"]] == ["1080p", "720p", "360p"]
    assert c["qualities"][0]["size"] == "32.0\xa0MB", "video-only gets the audio added"
    assert c["qualities"][1]["size"] == "12.0\xa0MB"
    assert c["qualities"][2]["size"] == "~977\xa0KB", "estimated from the bitrate"
    assert c["best"] == {"value": "best", "label": "Best (1080p)", "size": "32.0\xa0MB"}
    assert c["audio"] and c["audio_size"] == "2.0\xa0MB"


def test_choices_of_a_single_file(app) -> None:
    with app.test_request_context("/"):
        plain = pages.choices(
            {"duration": 4, "formats": [fmt("mp4", "video+audio", filesize=700_000)]}
        )
        silent = pages.choices({"duration": 4, "formats": [fmt("v", "video", 240)]})
    assert plain["qualities"] == [] and plain["best"]["size"] == "684\xa0KB" and plain["audio"]
    assert silent["audio"] is False and silent["best"]["label"] == "Best (240p)"


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, ""),
        (0, ""),
        (512, "512\xa0B"),
        (2048, "2\xa0KB"),
        (5 << 20, "5.0\xa0MB"),
        (150 << 20, "150\xa0MB"),
        (3 << 30, "3.0\xa0GB"),
    ],
)
def test_format_size(app, n, text) -> None:
    with app.test_request_context("/"):
        assert pages.format_size(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(None, ""), (4.0, "0:04"), (65.4, "1:05"), (3725, "1:02:05")]
)
def test_format_duration(seconds, text) -> None:
    assert pages.format_duration(seconds) == text
