"""Preview: real yt-dlp turns pages and media served on 127.0.0.1 into nazzil's MediaInfo."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from tests.mediaserver import (
    MediaServer,
    jsonld_page,
    multi_video_page,
    og_page,
    video_page,
)

DURATION = 4.0
FORMAT_KEYS = {
    "format_id", "ext", "kind", "width", "height", "fps", "vcodec", "acodec", "tbr",
    "filesize", "protocol",
}  # fmt: skip
INFO_KEYS = {
    "type", "url", "webpage_url", "extractor", "id", "title", "duration", "thumbnail",
    "uploader", "upload_date", "formats", "entries",
}  # fmt: skip


@pytest.fixture(scope="module")
def pages(media_server: MediaServer) -> dict[str, str]:
    """Register the HTML pages of this module on the media server; name -> absolute URL."""
    s = media_server
    return {
        # Relative poster and og:image: the preview must resolve them against the page.
        "video": s.add_page(
            "/preview/video.html", video_page("/sample.mp4", "A video tag", poster="../thumb.jpg")
        ),
        "og": s.add_page(
            "/preview/og.html",
            og_page(s.url("/sample.mp4"), "Open Graph video", image="/thumb.jpg"),
        ),
        "jsonld": s.add_page(
            "/preview/jsonld.html",
            jsonld_page(s.url("/moov_end.mp4"), "JSON-LD video", thumbnail=s.url("/thumb.jpg")),
        ),
        "multi": s.add_page(
            "/preview/multi.html",
            multi_video_page(["/sample.mp4", "/moov_end.mp4", "/audio.m4a"], "Three on one page"),
        ),
    }


def preview(client: Any, url: str) -> dict[str, Any]:
    """POST /api/v1/info and return the MediaInfo, failing loudly on an error answer."""
    response = client.post("/api/v1/info", json={"url": url})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return response.get_json()


def check_video(info: dict[str, Any]) -> None:
    """Assert the MediaInfo shape of one video: keys, duration, formats."""
    assert set(info) == INFO_KEYS
    assert info["type"] == "video"
    assert info["entries"] is None
    assert info["duration"] == pytest.approx(DURATION, abs=0.5)
    assert info["formats"], "a video has at least one format"
    for fmt in info["formats"]:
        assert set(fmt) == FORMAT_KEYS
        assert fmt["kind"] in ("video+audio", "video", "audio")
        assert isinstance(fmt["format_id"], str) and fmt["format_id"]


def assert_image(url: str) -> None:
    """The thumbnail URL is absolute and really serves an image."""
    assert url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "image/jpeg"


def test_video_tag_page(client, pages) -> None:
    info = preview(client, pages["video"])
    check_video(info)
    assert info["title"] == "A video tag"
    assert info["url"] == info["webpage_url"] == pages["video"]
    assert_image(info["thumbnail"])
    assert info["thumbnail"].endswith("/thumb.jpg")
    assert info["formats"][0]["kind"] == "video+audio"


def test_open_graph_page(client, pages) -> None:
    info = preview(client, pages["og"])
    check_video(info)
    assert info["title"] == "Open Graph video"
    assert_image(info["thumbnail"])


def test_json_ld_page(client, pages) -> None:
    info = preview(client, pages["jsonld"])
    check_video(info)
    assert info["title"] == "JSON-LD video"
    assert_image(info["thumbnail"])


def test_page_with_several_videos_is_a_playlist(client, pages) -> None:
    info = preview(client, pages["multi"])
    assert set(info) == INFO_KEYS
    assert info["type"] == "playlist"
    assert info["title"] == "Three on one page"
    assert info["formats"] == []
    assert len(info["entries"]) == 3
    for entry in info["entries"]:
        check_video(entry)
    assert [e["formats"][0]["kind"] for e in info["entries"]] == [
        "video+audio", "video+audio", "audio",
    ]  # fmt: skip
    # Each entry links to its own media file, so a job or a stream can ask for exactly it.
    assert [e["url"].rsplit("/", 1)[1] for e in info["entries"]] == [
        "sample.mp4", "moov_end.mp4", "audio.m4a",
    ]  # fmt: skip
    assert preview(client, info["entries"][2]["url"])["formats"][0]["kind"] == "audio"


def test_playlist_limit(config, pages) -> None:
    from nazzil.app import create_app

    client = create_app({**config, "PLAYLIST_LIMIT": "2"}).test_client()
    assert len(preview(client, pages["multi"])["entries"]) == 2


def test_hls_master_lists_variants_best_first(client, media_server) -> None:
    info = preview(client, media_server.url("/hls/master.m3u8"))
    check_video(info)
    formats = info["formats"]
    assert len(formats) >= 2
    assert [f["height"] for f in formats] == [360, 240]
    assert [f["width"] for f in formats] == [640, 426]
    assert all(f["kind"] == "video+audio" for f in formats)
    assert all(f["vcodec"].startswith("avc1") and f["acodec"].startswith("mp4a") for f in formats)
    assert formats[0]["tbr"] > formats[1]["tbr"]
    assert {f["protocol"] for f in formats} == {"m3u8_native"}


def test_dash_has_separate_video_and_audio(client, media_server) -> None:
    info = preview(client, media_server.url("/dash/manifest.mpd"))
    check_video(info)
    kinds = [f["kind"] for f in info["formats"]]
    assert sorted(kinds) == ["audio", "video"]
    assert kinds[0] == "video", "video before audio: best first"
    video = info["formats"][0]
    audio = info["formats"][1]
    assert video["height"] == 240 and video["vcodec"].startswith("avc1")
    assert video["acodec"] is None
    assert audio["acodec"].startswith("mp4a") and audio["vcodec"] is None
    assert audio["height"] is None


@pytest.mark.parametrize(
    ("path", "kind"),
    [("/sample.mp4", "video+audio"), ("/moov_end.mp4", "video+audio"), ("/audio.m4a", "audio")],
)
def test_direct_media_link(client, media_server, path: str, kind: str) -> None:
    url = media_server.url(path)
    info = preview(client, url)
    check_video(info)
    assert info["url"] == url
    assert [f["kind"] for f in info["formats"]] == [kind]
    assert info["formats"][0]["protocol"] == "http"


def test_get_and_post_answer_the_same(client, pages) -> None:
    posted = preview(client, pages["og"])
    response = client.get("/api/v1/info", query_string={"url": pages["og"]})
    assert response.status_code == 200
    assert response.get_json() == posted


def test_repeated_preview_is_served_from_the_cache(client, media_server) -> None:
    url = media_server.add_page("/preview/cached.html", video_page("/sample.mp4", "Cached"))
    first = preview(client, url)
    assert "/preview/cached.html" in media_server.paths()
    media_server.clear()
    again = preview(client, url)
    same_via_get = client.get("/api/v1/info", query_string={"url": url}).get_json()
    assert again == first == same_via_get
    assert media_server.paths() == [], "a cached preview must not touch the site again"


def test_cache_can_be_turned_off(config, media_server) -> None:
    from nazzil.app import create_app

    client = create_app({**config, "PREVIEW_CACHE_TTL": "0"}).test_client()
    url = media_server.add_page("/preview/uncached.html", video_page("/sample.mp4", "Uncached"))
    preview(client, url)
    media_server.clear()
    preview(client, url)
    assert "/preview/uncached.html" in media_server.paths()


def test_page_renders_the_preview_card(client, pages) -> None:
    response = client.get("/", query_string={"url": pages["video"]})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "A video tag" in html
    assert "0:04" in html
    assert "/thumb.jpg" in html
    assert "data-code=" not in html


def test_page_lists_the_qualities(client, media_server) -> None:
    html = client.get("/", query_string={"url": media_server.url("/hls/master.m3u8")}).get_data(
        as_text=True
    )
    assert "360p" in html and "240p" in html


def test_page_shows_a_preview_error_in_place(client, media_server) -> None:
    response = client.get("/", query_string={"url": media_server.url("/status/404")})
    assert response.status_code == 200
    assert 'data-code="upstream_error"' in response.get_data(as_text=True)


def test_yt_dlp_is_quiet(client, pages, capfd) -> None:
    """yt-dlp prints nothing of its own: its messages go through nazzil's log only."""
    capfd.readouterr()
    preview(client, pages["multi"])
    out, err = capfd.readouterr()
    assert out == ""
    # yt-dlp's own lines start with "[extractor]", "WARNING:" or "ERROR:"; ours with a time.
    assert not [line for line in err.splitlines() if line.startswith(("[", "WARNING:", "ERROR:"))]


def test_yt_dlp_writes_no_cache_or_config(client, media_server, tmp_path, monkeypatch) -> None:
    """No cache dir, no config file, nothing in HOME: yt-dlp runs as a quiet library."""
    home, cache, config_home = tmp_path / "home", tmp_path / "cache", tmp_path / "config"
    for path in (home, cache, config_home):
        path.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    # A config file that would break every extraction if yt-dlp read it.
    (config_home / "yt-dlp").mkdir()
    (config_home / "yt-dlp" / "config").write_text("--simulate --match-filter 'id=nothing'\n")
    url = media_server.add_page("/preview/no-cache.html", video_page("/sample.mp4", "No cache"))
    assert preview(client, url)["title"] == "No cache"
    assert list(home.iterdir()) == [] and list(cache.iterdir()) == []


def test_a_site_that_trickles_is_cut_at_the_overall_time_limit(config, tmp_path) -> None:
    """Per-read timeouts never fire on a trickle; the overall preview limit must."""
    import time

    from tests.mediaserver import MediaServer

    from nazzil.app import create_app

    root = tmp_path / "site"
    root.mkdir()
    padding = "<!-- " + "x" * 20_000 + " -->"
    (root / "page.html").write_text(f"<html><head><title>Slow</title>{padding}</head></html>")
    with MediaServer(root) as slow:
        slow.slow_rate = 2_000  # 10 s for the page, each read well within FETCH_TIMEOUT
        app = create_app(
            {**config, "TRUSTED_HOSTS": f"127.0.0.1:{slow.port}", "PREVIEW_TIMEOUT": "1"}
        )
        started = time.monotonic()
        response = app.test_client().post("/api/v1/info", json={"url": slow.url("/slow/page.html")})
        elapsed = time.monotonic() - started
    assert response.status_code == 504, response.get_json()
    assert response.get_json()["error"]["code"] == "upstream_timeout"
    assert elapsed < 8  # the page alone would take 10 s to arrive
