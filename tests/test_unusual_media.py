"""Preview and stream of unusual media and hostile pages: real ffmpeg files, local server."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from tests.media import decode_ok, ffmpeg_exe, ffprobe_like
from tests.mediaserver import MediaServer, video_page

from nazzil.mediaprobe import matroska_duration

ARABIC_TITLE = "فيديو تجريبي عربي"


@pytest.fixture(scope="module")
def webm(media_root: Path) -> Path:
    """A 1 s VP9/Opus WebM, made once for this module."""
    path = media_root / "unusual" / "clip.webm"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        lavfi = ["-f", "lavfi", "-i"]
        subprocess.run(
            [ffmpeg_exe(), "-y", "-loglevel", "error",
             *lavfi, "testsrc=size=160x120:rate=15:duration=1",
             *lavfi, "sine=frequency=440:duration=1",
             "-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "100k",
             "-c:a", "libopus", "-shortest", str(path)],
            check=True,
            timeout=60,
        )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def mp3(media_root: Path) -> Path:
    """A 2 s MP3 with an ID3 tag and no Xing header (so its size and bit rate tell)."""
    path = media_root / "unusual" / "tone.mp3"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        subprocess.run(
            [ffmpeg_exe(), "-y", "-loglevel", "error",
             "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-metadata", "title=Tone",
             "-c:a", "libmp3lame", "-b:a", "64k", "-write_xing", "0", str(path)],
            check=True,
            timeout=60,
        )  # fmt: skip
    return path


@pytest.fixture
def pages(media_server: MediaServer, media_root: Path) -> Iterator[MediaServer]:
    """The media server with this module's pages registered (removed afterwards)."""
    added: list[str] = []

    def add(path: str, body: str | bytes, **kwargs: Any) -> None:
        media_server.add_page(path, body, **kwargs)
        added.append(path)

    add("/u/empty.mp4", b"", content_type="video/mp4")
    add("/u/empty.html", video_page("/u/empty.mp4", "Empty file"))
    login = "<!doctype html><html><title>Log in</title><body>Please log in.</body></html>"
    add("/u/login.mp4", login)  # a site answering 200 with a page where the video was
    add("/u/login.html", video_page("/u/login.mp4", "Behind a login"))
    add("/u/webm.html", video_page("/unusual/clip.webm", "WebM clip"))
    add(
        "/u/audio.html",
        "<!doctype html><html><head><title>Audio page</title></head>"
        '<body><audio controls src="/unusual/tone.mp3"></audio></body></html>',
    )
    arabic = (
        '<!doctype html><html><head><meta http-equiv="Content-Type" '
        'content="text/html; charset=windows-1256">'
        f'<title>{ARABIC_TITLE}</title></head><body><video src="/sample.mp4"></video></body></html>'
    )
    add("/u/ar.html", arabic.encode("cp1256"), content_type="text/html; charset=windows-1256")
    for i in range(11):
        target = f"/u/r{i + 1}" if i < 10 else "/sample.mp4"
        add(f"/u/r{i}", "", status=302, headers={"Location": target})
    yield media_server
    for path in added:
        media_server.remove_page(path)


@pytest.fixture
def fast(config: dict) -> dict:
    """Config without stream/preview rate limits (many requests in one test)."""
    return {**config, "RATE_LIMIT_STREAM": "off", "RATE_LIMIT_PREVIEW": "off"}


def _client(config: dict) -> Any:
    from nazzil.app import create_app

    return create_app(config).test_client()


def _stream(client: Any, tmp_path: Path, **query: str) -> tuple[Any, Path]:
    resp = client.get("/api/v1/stream", query_string=query, buffered=False)
    path = tmp_path / "out.bin"
    try:
        path.write_bytes(b"".join(resp.response))
    finally:
        resp.close()
    return resp, path


def _error(path: Path) -> dict[str, str]:
    """The JSON error a streamed response wrote to path."""
    return json.loads(path.read_bytes())["error"]


# ------------------------------------------------------------------ the media a page points at


def test_stream_refuses_an_empty_file_behind_a_page(pages: MediaServer, fast: dict, tmp_path: Path):
    """A <video src> leading to a 0-byte file is a coded error, not an empty 200 download."""
    resp, path = _stream(_client(fast), tmp_path, url=pages.url("/u/empty.html"))
    assert resp.status_code == 422
    assert _error(path)["code"] == "unsupported_url"
    assert "empty" in _error(path)["message"]


def test_stream_refuses_a_web_page_served_as_the_video(
    pages: MediaServer, fast: dict, tmp_path: Path
):
    """A site answering 200 with a login page where the video was: no HTML saved as .mp4."""
    resp, path = _stream(_client(fast), tmp_path, url=pages.url("/u/login.html"))
    assert resp.status_code == 422
    assert _error(path)["code"] == "unsupported_url"
    assert "Content-Disposition" not in resp.headers


def test_range_past_the_end_tells_the_size(media_server: MediaServer, fast: dict):
    """A 416 carries Content-Range: bytes */size, so the client can ask again sensibly."""
    client = _client(fast)
    size = client.get("/api/v1/stream", query_string={"url": media_server.url("/sample.mp4")})
    resp = client.get(
        "/api/v1/stream",
        query_string={"url": media_server.url("/sample.mp4")},
        headers={"Range": "bytes=999999999-"},
    )
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{len(size.data)}"


# ------------------------------------------------------------------ WebM / Matroska


def test_webm_preview_and_streams(pages: MediaServer, webm: Path, fast: dict, tmp_path: Path):
    """A VP9/Opus WebM page: preview with its duration; best and mp3 streams decode."""
    client = _client(fast)
    info = client.post("/api/v1/info", json={"url": pages.url("/u/webm.html")}).get_json()
    assert info["title"] == "WebM clip"
    assert info["formats"][0]["ext"] == "webm"
    assert info["duration"] == pytest.approx(1.0, abs=0.1)  # was None: only MP4 was read

    resp, path = _stream(client, tmp_path, url=pages.url("/u/webm.html"))
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "video/webm"
    assert "filename*=UTF-8''WebM%20clip.webm" in resp.headers["Content-Disposition"]
    probe = ffprobe_like(path)
    assert (probe["vcodec"], probe["acodec"]) == ("vp9", "opus")
    assert probe["duration"] == pytest.approx(1.0, abs=0.2)

    resp, path = _stream(
        client, tmp_path, url=pages.url("/u/webm.html"), format="audio", audio_format="mp3"
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "audio/mpeg"
    assert ffprobe_like(path)["acodec"] == "mp3"
    assert decode_ok(path)


def test_max_duration_holds_for_direct_files_and_pages(
    pages: MediaServer, webm: Path, fast: dict, tmp_path: Path
):
    """NAZZIL_MAX_DURATION refuses a stream of a direct file or html5 page, not only HLS."""
    client = _client({**fast, "MAX_DURATION": "0.5"})
    for url in (pages.url("/sample.mp4"), pages.url("/u/webm.html")):
        for query in ({}, {"format": "audio", "audio_format": "mp3"}):
            resp, path = _stream(client, tmp_path, url=url, **query)
            assert resp.status_code == 422, (url, query)
            assert _error(path)["code"] == "too_long"


def test_mp3_page_preview_stream_and_duration_limit(
    pages: MediaServer, mp3: Path, fast: dict, tmp_path: Path
):
    """An <audio> page with an MP3: its duration is read, streamed as is, and limited."""
    client = _client(fast)
    info = client.post("/api/v1/info", json={"url": pages.url("/u/audio.html")}).get_json()
    assert info["formats"][0]["kind"] == "audio"
    assert info["duration"] == pytest.approx(2.0, abs=0.15)  # was None: only MP4 was read
    resp, path = _stream(client, tmp_path, url=pages.url("/u/audio.html"))
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "audio/mpeg"
    assert path.read_bytes() == mp3.read_bytes()

    client = _client({**fast, "MAX_DURATION": "1"})
    resp, path = _stream(client, tmp_path, url=pages.url("/u/audio.html"))
    assert resp.status_code == 422
    assert _error(path)["code"] == "too_long"


def test_matroska_duration_of_damaged_bytes_is_none(webm: Path):
    """Cut or garbled WebM headers give no duration, never an exception."""
    head = webm.read_bytes()[:65536]
    assert matroska_duration(head) == pytest.approx(1.0, abs=0.1)
    for cut in (4, 5, 20, 40, 60):
        assert matroska_duration(head[:cut]) is None or matroska_duration(head[:cut]) > 0
    assert matroska_duration(b"\x1a\x45\xdf\xa3" + b"\x00" * 64) is None
    assert matroska_duration(b"\x1a\x45\xdf\xa3\x80" + b"\xff" * 300) is None
    assert matroska_duration(b"not a webm") is None


# ------------------------------------------------------------------ pages and links


def test_windows_1256_page_title_and_file_name(pages: MediaServer, fast: dict, tmp_path: Path):
    """An Arabic page in windows-1256: the title reads right and names the file."""
    client = _client(fast)
    info = client.post("/api/v1/info", json={"url": pages.url("/u/ar.html")}).get_json()
    assert info["title"] == ARABIC_TITLE
    resp, path = _stream(client, tmp_path, url=pages.url("/u/ar.html"))
    assert resp.status_code == 200
    assert f"filename*=UTF-8''{quote(ARABIC_TITLE)}.mp4" in resp.headers["Content-Disposition"]
    assert decode_ok(path)


def test_too_long_redirect_chain_says_so(pages: MediaServer, fast: dict, tmp_path: Path):
    """Eleven redirects: a clear upstream_error, not "the site answered HTTP 302"."""
    client = _client(fast)
    resp = client.post("/api/v1/info", json={"url": pages.url("/u/r0")})
    assert resp.status_code == 502
    assert resp.get_json()["error"]["message"] == "The site redirected too many times."
    resp, path = _stream(client, tmp_path, url=pages.url("/u/r0"))
    assert resp.status_code == 502
    assert _error(path)["message"] == "The site redirected too many times."


def test_a_pasted_link_with_raw_spaces_is_fetched_as_a_browser_would(
    client, media_root: Path, media_server
) -> None:
    """A file name with spaces, pasted as shown in an address bar, still previews."""
    import shutil

    shutil.copy(media_root / "sample.mp4", media_root / "my clip.mp4")
    response = client.post("/api/v1/info", json={"url": media_server.url("/my clip.mp4")})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["duration"] == pytest.approx(4.0, abs=0.5)
    # A space in the host is still a malformed link.
    bad = client.post("/api/v1/info", json={"url": "http://exa mple.com/x.mp4"})
    assert bad.get_json()["error"]["code"] == "invalid_url"


def test_audio_from_media_without_audio_is_format_unavailable(
    app, client, media_server, tmp_path: Path
) -> None:
    """Asking for the audio of a silent video is a format the media does not offer."""
    from nazzil import download, formats, netguard
    from nazzil.errors import FormatUnavailable

    url = media_server.url("/video_only.mp4")
    streamed = client.get(
        "/api/v1/stream", query_string={"url": url, "format": "audio", "audio_format": "mp3"}
    )
    assert streamed.status_code == 422
    assert streamed.get_json()["error"]["code"] == "format_unavailable"
    with app.app_context(), pytest.raises(FormatUnavailable):
        download.fetch(
            url,
            formats.choose("audio", "mp3"),
            tmp_path / "work",
            config=app.config,
            policy=netguard.policy_for(app),
            start=None,
            end=None,
        )
