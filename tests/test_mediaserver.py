"""Self-tests for the test-media generator and the local media server."""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yt_dlp
from tests.media import (
    build_media,
    decode_ok,
    ffmpeg_exe,
    ffprobe_like,
    make_big_file,
    mp4_top_level_boxes,
)
from tests.mediaserver import (
    MediaServer,
    jsonld_page,
    multi_video_page,
    no_video_page,
    og_page,
    video_page,
)

# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def media_root_ms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory holding the generated test media (built once per session)."""
    root = tmp_path_factory.mktemp("media_ms")
    build_media(root)
    return root


@pytest.fixture(scope="module")
def server_ms(media_root_ms: Path) -> Iterator[MediaServer]:
    """A running MediaServer over the generated media."""
    with MediaServer(media_root_ms) as server:
        yield server


def _get(
    server: MediaServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    # http.client directly: urllib would follow redirects and raise on 4xx/5xx.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def _ydl_params(**extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "quiet": True,
        "noprogress": True,
        "ignoreconfig": True,
        "no_warnings": True,
    }
    params.update(extra)
    return params


def _extract(url: str) -> dict[str, Any]:
    with yt_dlp.YoutubeDL(_ydl_params()) as ydl:
        info = ydl.extract_info(url, download=False)
        return dict(ydl.sanitize_info(info))


# ------------------------------------------------------------------------- media


def test_sample_properties(media_root_ms: Path) -> None:
    info = ffprobe_like(media_root_ms / "sample.mp4")
    assert info["duration"] == pytest.approx(4.0, abs=0.2)
    assert info["video"] and info["audio"]
    assert (info["width"], info["height"]) == (320, 240)
    assert (info["vcodec"], info["acodec"]) == ("h264", "aac")
    assert decode_ok(media_root_ms / "sample.mp4")


def test_other_media_properties(media_root_ms: Path) -> None:
    moov_end = ffprobe_like(media_root_ms / "moov_end.mp4")
    assert moov_end["video"] and moov_end["audio"]
    assert moov_end["duration"] == pytest.approx(4.0, abs=0.2)

    audio = ffprobe_like(media_root_ms / "audio.m4a")
    assert audio["audio"] and not audio["video"] and audio["acodec"] == "aac"
    assert audio["duration"] == pytest.approx(4.0, abs=0.2)

    video_only = ffprobe_like(media_root_ms / "video_only.mp4")
    assert video_only["video"] and not video_only["audio"]

    thumb = ffprobe_like(media_root_ms / "thumb.jpg")
    assert (thumb["width"], thumb["height"], thumb["vcodec"]) == (320, 180, "mjpeg")

    for name in ("moov_end.mp4", "audio.m4a", "video_only.mp4", "hls/360/index.m3u8"):
        assert decode_ok(media_root_ms / name), name

    hls = ffprobe_like(media_root_ms / "hls/360/index.m3u8")
    assert (hls["width"], hls["height"]) == (640, 360) and hls["audio"]


def test_garbage_is_not_media(media_root_ms: Path) -> None:
    garbage = media_root_ms / "garbage.bin"
    assert garbage.stat().st_size == 64 * 1024
    info = ffprobe_like(garbage)
    assert not info["video"] and not info["audio"] and info["error"]
    assert not decode_ok(garbage)
    assert not decode_ok(media_root_ms / "does-not-exist.mp4")


def test_faststart_layout(media_root_ms: Path) -> None:
    fast = mp4_top_level_boxes(media_root_ms / "sample.mp4")
    slow = mp4_top_level_boxes(media_root_ms / "moov_end.mp4")
    assert fast.index("moov") < fast.index("mdat")
    assert slow.index("moov") > slow.index("mdat")


def test_hls_master_is_well_formed(media_root_ms: Path) -> None:
    text = (media_root_ms / "hls/master.m3u8").read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith("#EXT-X-STREAM-INF:")]
    assert len(lines) == 2
    assert "RESOLUTION=426x240" in lines[0] and "RESOLUTION=640x360" in lines[1]
    assert all('CODECS="avc1.42c01e,mp4a.40.2"' in ln for ln in lines)


def test_build_media_is_idempotent(media_root_ms: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in media_root_ms.rglob("*") if p.is_file()}
    started = time.monotonic()
    files = build_media(media_root_ms)
    assert time.monotonic() - started < 1.0
    assert all(p.is_file() for p in files.values())
    after = {p: p.stat().st_mtime_ns for p in media_root_ms.rglob("*") if p.is_file()}
    assert before == after


def test_make_big_file(tmp_path: Path) -> None:
    size = 3 * 1024 * 1024 + 123
    path = make_big_file(tmp_path / "big.mp4", size)
    assert path.stat().st_size == size
    info = ffprobe_like(path)
    assert info["video"] and info["audio"] and info["duration"] > 0.2
    assert decode_ok(path)


# ------------------------------------------------------------------------ server


def test_full_get_and_head(server_ms: MediaServer, media_root_ms: Path) -> None:
    data = (media_root_ms / "sample.mp4").read_bytes()
    status, headers, body = _get(server_ms, "/sample.mp4")
    assert status == 200 and body == data
    assert headers["content-type"] == "video/mp4"
    assert headers["content-length"] == str(len(data))
    assert headers["accept-ranges"] == "bytes"

    status, headers, body = _get(server_ms, "/sample.mp4", method="HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == str(len(data))


@pytest.mark.parametrize(
    ("name", "ctype"),
    [
        ("hls/master.m3u8", "application/vnd.apple.mpegurl"),
        ("hls/240/seg000.ts", "video/mp2t"),
        ("dash/manifest.mpd", "application/dash+xml"),
        ("dash/init-0.m4s", "video/iso.segment"),
        ("thumb.jpg", "image/jpeg"),
    ],
)
def test_content_types(server_ms: MediaServer, name: str, ctype: str) -> None:
    status, headers, _ = _get(server_ms, "/" + name, method="HEAD")
    assert status == 200 and headers["content-type"] == ctype


@pytest.mark.parametrize(
    ("spec", "first", "last"),
    [("bytes=0-99", 0, 99), ("bytes=1000-", 1000, None), ("bytes=-100", -100, None)],
)
def test_range_requests(
    server_ms: MediaServer, media_root_ms: Path, spec: str, first: int, last: int | None
) -> None:
    data = (media_root_ms / "sample.mp4").read_bytes()
    expected = data[first:] if last is None else data[first : last + 1]
    status, headers, body = _get(server_ms, "/sample.mp4", {"Range": spec})
    assert status == 206 and body == expected
    start = first % len(data)
    assert headers["content-range"] == f"bytes {start}-{start + len(expected) - 1}/{len(data)}"
    assert headers["content-length"] == str(len(expected))


def test_range_unsatisfiable(server_ms: MediaServer, media_root_ms: Path) -> None:
    size = (media_root_ms / "sample.mp4").stat().st_size
    status, headers, _ = _get(server_ms, "/sample.mp4", {"Range": f"bytes={size}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{size}"


@pytest.mark.parametrize(
    "path", ["/../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/hls/../../etc/passwd", "/nope.mp4"]
)
def test_traversal_and_missing_are_404(server_ms: MediaServer, path: str) -> None:
    assert _get(server_ms, path)[0] == 404


def test_drop_then_resume(server_ms: MediaServer, media_root_ms: Path) -> None:
    data = (media_root_ms / "sample.mp4").read_bytes()
    server_ms.reset_drops()
    conn = http.client.HTTPConnection("127.0.0.1", server_ms.port, timeout=10)
    conn.request("GET", "/drop/1000/sample.mp4")
    resp = conn.getresponse()
    assert resp.getheader("Content-Length") == str(len(data))
    with pytest.raises(http.client.IncompleteRead) as excinfo:
        resp.read()
    conn.close()
    assert excinfo.value.partial == data[:1000]
    assert server_ms.drop_count == 1

    status, _, body = _get(server_ms, "/drop/1000/sample.mp4", {"Range": "bytes=1000-"})
    assert status == 206 and body == data[1000:]
    # Later plain GETs are served whole; the cut happens once per path.
    status, _, body = _get(server_ms, "/drop/1000/sample.mp4")
    assert status == 200 and body == data
    assert server_ms.drop_counts == {"/drop/1000/sample.mp4": 1}


def test_nolength(server_ms: MediaServer, media_root_ms: Path) -> None:
    data = (media_root_ms / "sample.mp4").read_bytes()
    status, headers, body = _get(server_ms, "/nolength/sample.mp4", {"Range": "bytes=0-9"})
    assert status == 200 and body == data
    assert "content-length" not in headers
    assert headers["connection"].lower() == "close"


def test_status_pages_and_redirects(server_ms: MediaServer) -> None:
    assert _get(server_ms, "/status/503")[0] == 503
    assert _get(server_ms, "/status/418")[0] == 418
    server_ms.add_page("/page-ms", "<p>hi</p>", headers={"X-Test": "1"})
    server_ms.add_page("/page-ms?v=2", b"two", content_type="text/plain")
    status, headers, body = _get(server_ms, "/page-ms?v=1")
    assert (status, body, headers["x-test"]) == (200, b"<p>hi</p>", "1")
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert _get(server_ms, "/page-ms?v=2")[2] == b"two"
    server_ms.add_redirect("/go-ms", "/sample.mp4", status=301)
    status, headers, _ = _get(server_ms, "/go-ms")
    assert status == 301 and headers["location"] == "/sample.mp4"
    with urllib.request.urlopen(server_ms.url("/go-ms"), timeout=10) as resp:
        assert resp.headers["Content-Type"] == "video/mp4"


def test_requests_are_recorded_and_canary_stays_silent(server_ms: MediaServer) -> None:
    with MediaServer(server_ms.root) as canary:
        server_ms.clear()
        _get(server_ms, "/thumb.jpg", {"X-Probe": "yes"})
        (method, path, headers) = server_ms.requests[-1]
        assert (method, path, headers["x-probe"]) == ("GET", "/thumb.jpg", "yes")
        assert canary.port != server_ms.port
        assert canary.requests == []


def test_stop_is_fast_with_hanging_and_slow_clients(media_root_ms: Path) -> None:
    server = MediaServer(media_root_ms).start()
    server.slow_rate = 1024
    socks: list[socket.socket] = []
    try:
        for path in ("/hang", "/slow/sample.mp4", "/hang"):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            socks.append(sock)
        # Make sure the slow body has started flowing before stopping.
        assert socks[1].recv(100).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 5
        while len(server.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        thread_name = f"MediaServer:{server.port}"
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2.0
        assert server.errors == []
        assert thread_name not in {t.name for t in threading.enumerate()}
        # The trickling handler noticed the stop and hung up.
        socks[1].settimeout(2)
        while socks[1].recv(65536):
            pass
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def test_slow_route_trickles(server_ms: MediaServer) -> None:
    server_ms.slow_rate = 20_000
    try:
        started = time.monotonic()
        status, _, body = _get(server_ms, "/slow/thumb.jpg")
        elapsed = time.monotonic() - started
    finally:
        server_ms.slow_rate = 64 * 1024
    assert status == 200 and len(body) > 4000
    assert elapsed > len(body) / 20_000 * 0.6


# ------------------------------------------------------------------------ yt-dlp


def test_ytdlp_hls_master(server_ms: MediaServer) -> None:
    info = _extract(server_ms.url("/hls/master.m3u8"))
    video = [f for f in info["formats"] if f.get("vcodec") not in (None, "none")]
    assert len(video) >= 2
    assert {f["height"] for f in video} >= {240, 360}
    assert all(f["protocol"] == "m3u8_native" for f in video)


def test_ytdlp_dash_manifest(server_ms: MediaServer) -> None:
    info = _extract(server_ms.url("/dash/manifest.mpd"))
    formats = info["formats"]
    video_only = [f for f in formats if f["vcodec"] != "none" and f["acodec"] == "none"]
    audio_only = [f for f in formats if f["vcodec"] == "none" and f["acodec"] != "none"]
    assert video_only and audio_only
    assert info["format_id"] == "0+1"  # yt-dlp will merge video and audio


def test_ytdlp_video_page(server_ms: MediaServer) -> None:
    server_ms.add_page("/video-ms.html", video_page("/sample.mp4", "Video Ms", "/thumb.jpg"))
    info = _extract(server_ms.url("/video-ms.html"))
    assert info["url"] == server_ms.url("/sample.mp4")
    # The html5 embed path suffixes the page title with the entry number.
    assert info["title"].startswith("Video Ms")
    assert info["thumbnail"] == server_ms.url("/thumb.jpg")


def test_ytdlp_og_page(server_ms: MediaServer) -> None:
    page = og_page(server_ms.url("/sample.mp4"), "Og Ms", image=server_ms.url("/thumb.jpg"))
    server_ms.add_page("/og-ms.html", page)
    info = _extract(server_ms.url("/og-ms.html"))
    assert info["url"] == server_ms.url("/sample.mp4")
    assert info["title"] == "Og Ms"


def test_ytdlp_jsonld_multi_and_empty_pages(server_ms: MediaServer) -> None:
    server_ms.add_page("/ld-ms.html", jsonld_page(server_ms.url("/sample.mp4"), "Ld Ms"))
    info = _extract(server_ms.url("/ld-ms.html"))
    assert (info["title"], info["duration"]) == ("Ld Ms", 4)

    server_ms.add_page("/multi-ms.html", multi_video_page(["/sample.mp4", "/audio.m4a"], "M"))
    info = _extract(server_ms.url("/multi-ms.html"))
    assert info["_type"] == "playlist" and len(info["entries"]) == 2

    server_ms.add_page("/none-ms.html", no_video_page("Nothing"))
    with pytest.raises(yt_dlp.utils.DownloadError, match="Unsupported URL"):
        _extract(server_ms.url("/none-ms.html"))


def test_ytdlp_downloads_through_drop(
    server_ms: MediaServer, media_root_ms: Path, tmp_path: Path
) -> None:
    server_ms.reset_drops()
    server_ms.drop_skip = 1  # the generic extractor's probe GET comes first
    try:
        params = _ydl_params(outtmpl=str(tmp_path / "%(id)s.%(ext)s"), retries=3)
        with yt_dlp.YoutubeDL(params) as ydl:
            ydl.download([server_ms.url("/drop/20000/sample.mp4")])
    finally:
        server_ms.drop_skip = 0
    out = tmp_path / "sample.mp4"
    assert out.read_bytes() == (media_root_ms / "sample.mp4").read_bytes()
    assert server_ms.drop_count == 1


def test_urlopen_error_status(server_ms: MediaServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(server_ms.url("/status/404"), timeout=10)
    assert excinfo.value.code == 404
    excinfo.value.close()


def test_ytdlp_downloads_dash_and_hls(server_ms: MediaServer, tmp_path: Path) -> None:
    # No ffprobe in the wheel; yt-dlp merges DASH video+audio with the bundled ffmpeg.
    params = _ydl_params(
        outtmpl=str(tmp_path / "%(id)s.%(ext)s"),
        ffmpeg_location=ffmpeg_exe(),
        format="bv*[height<=240]+ba/b[height<=240]/b",
    )
    with yt_dlp.YoutubeDL(params) as ydl:
        ydl.download([server_ms.url("/dash/manifest.mpd"), server_ms.url("/hls/master.m3u8")])
    dash, hls = ffprobe_like(tmp_path / "manifest.mp4"), ffprobe_like(tmp_path / "master.mp4")
    assert dash["video"] and dash["audio"] and dash["duration"] == pytest.approx(4, abs=0.3)
    assert hls["video"] and hls["audio"] and hls["height"] == 240
    assert decode_ok(tmp_path / "manifest.mp4") and decode_ok(tmp_path / "master.mp4")
