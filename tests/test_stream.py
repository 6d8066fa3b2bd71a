"""GET /api/v1/stream in-process: real yt-dlp and ffmpeg against the local media server."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from tests.media import decode_ok, ffmpeg_exe, ffprobe_like
from tests.mediaserver import video_page

from nazzil import sources, stream
from nazzil.app import create_app
from nazzil.errors import UnsupportedURL
from nazzil.names import content_disposition, safe_filename
from nazzil.netguard import Policy


def get(client: Any, **query: str) -> Any:
    """GET the stream endpoint without buffering; the caller reads and closes."""
    return client.get("/api/v1/stream", query_string=query, buffered=False)


def fetch(
    client: Any, tmp_path: Path, name: str = "out.bin", headers: dict | None = None, **query: str
) -> tuple[Any, Path]:
    """Stream to a file and return the response and the file."""
    resp = client.get("/api/v1/stream", query_string=query, headers=headers or {}, buffered=False)
    path = tmp_path / name
    try:
        with path.open("wb") as fh:
            for chunk in resp.response:
                fh.write(chunk)
    finally:
        resp.close()
    return resp, path


def error_of(resp: Any) -> str:
    """The code of a JSON error answer (checks the one shape)."""
    body = resp.get_json()
    resp.close()
    assert set(body) == {"error", "request_id"}, body
    assert set(body["error"]) == {"code", "message"}
    return body["error"]["code"]


def make_client(config: dict, **extra: str) -> Any:
    return create_app({**config, **extra}).test_client()


# ------------------------------------------------------------------ progressive


def test_progressive_bytes_identical(client, media_server, media_root, tmp_path):
    resp, path = fetch(client, tmp_path, url=media_server.url("sample.mp4"))
    assert resp.status_code == 200
    source = (media_root / "sample.mp4").read_bytes()
    assert path.read_bytes() == source
    assert resp.headers["Content-Length"] == str(len(source))
    assert resp.headers["Content-Type"] == "video/mp4"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Disposition"].startswith('attachment; filename="sample.mp4"')


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=1000-1999", 1000, 1999), ("bytes=50000-", 50000, None), ("bytes=-500", None, None)],
)
def test_progressive_range(client, media_server, media_root, tmp_path, header, start, end):
    source = (media_root / "sample.mp4").read_bytes()
    size = len(source)
    if start is None:
        start = size - 500
    end = size - 1 if end is None else end
    resp, path = fetch(
        client, tmp_path, headers={"Range": header}, url=media_server.url("sample.mp4")
    )
    assert resp.status_code == 206
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
    assert resp.headers["Content-Length"] == str(end - start + 1)
    assert path.read_bytes() == source[start : end + 1]


def test_range_past_the_end_is_416(client, media_server, media_root):
    size = (media_root / "sample.mp4").stat().st_size
    resp = client.get(
        "/api/v1/stream",
        query_string={"url": media_server.url("sample.mp4")},
        headers={"Range": f"bytes={size + 10}-"},
    )
    assert resp.status_code == 416
    assert error_of(resp) == "range_not_satisfiable"


def test_m4a_is_passed_through_when_it_is_what_was_asked(
    client, media_server, media_root, tmp_path
):
    resp, path = fetch(
        client, tmp_path, url=media_server.url("audio.m4a"), format="audio", audio_format="m4a"
    )
    assert resp.status_code == 200
    assert path.read_bytes() == (media_root / "audio.m4a").read_bytes()


# ------------------------------------------------------------------ merged and converted


def _check(path: Path, *, video: bool, audio: bool = True, height: int | None = None) -> dict:
    probe = ffprobe_like(path)
    assert probe["video"] is video, probe
    assert probe["audio"] is audio, probe
    assert probe["duration"] == pytest.approx(4.0, abs=0.3), probe
    if height:
        assert probe["height"] == height
    assert decode_ok(path)
    return probe


def test_dash_is_merged_into_fragmented_mp4(client, media_server, tmp_path):
    resp, path = fetch(client, tmp_path, url=media_server.url("dash/manifest.mpd"))
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "video/mp4"
    assert "Content-Length" not in resp.headers
    assert 'filename="manifest.mp4"' in resp.headers["Content-Disposition"]
    probe = _check(path, video=True, height=240)
    assert (probe["vcodec"], probe["acodec"]) == ("h264", "aac")
    head = path.read_bytes()[:4096]
    assert b"mvex" in head  # fragmented: the moov announces movie fragments
    requested = media_server.paths()
    assert any("chunk-0-" in p for p in requested) and any("chunk-1-" in p for p in requested)


@pytest.mark.parametrize("quality", ["240p", "360p"])
def test_hls_quality_is_remuxed(client, media_server, tmp_path, quality):
    media_server.clear()
    resp, path = fetch(client, tmp_path, url=media_server.url("hls/master.m3u8"), format=quality)
    assert resp.status_code == 200
    height = int(quality[:-1])
    _check(path, video=True, height=height)
    segments = [p for p in media_server.paths() if p.endswith(".ts")]
    assert segments and all(f"/hls/{height}/" in p for p in segments)


@pytest.mark.parametrize(
    ("source", "audio_format", "acodec", "ctype"),
    [
        ("dash/manifest.mpd", "mp3", "mp3", "audio/mpeg"),
        ("dash/manifest.mpd", "m4a", "aac", "audio/mp4"),
        ("hls/master.m3u8", "opus", "opus", "audio/ogg"),
        ("moov_end.mp4", "m4a", "aac", "audio/mp4"),  # index at the end: reordered on the fly
    ],
)
def test_audio_conversion(client, media_server, tmp_path, source, audio_format, acodec, ctype):
    resp, path = fetch(
        client, tmp_path, url=media_server.url(source), format="audio", audio_format=audio_format
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == ctype
    assert f'.{audio_format}"' in resp.headers["Content-Disposition"]
    probe = _check(path, video=False)
    assert probe["acodec"] == acodec


# ------------------------------------------------------------------ limits


def test_too_large_is_refused_up_front(config, media_server):
    client = make_client(config, MAX_FILESIZE="20K")
    resp = get(client, url=media_server.url("sample.mp4"))
    assert resp.status_code == 422
    assert error_of(resp) == "too_large"


def test_too_long_is_refused_up_front(config, media_server):
    client = make_client(config, MAX_DURATION="2")
    resp = get(client, url=media_server.url("hls/master.m3u8"))
    assert resp.status_code == 422
    assert error_of(resp) == "too_long"


def test_stream_without_length_is_cut_at_the_limit(config, media_server):
    client = make_client(config, MAX_FILESIZE="100K")
    resp = get(client, url=media_server.url("nolength/sample.mp4"))
    assert resp.status_code == 200
    assert "Content-Length" not in resp.headers
    received = 0
    with pytest.raises(stream.StreamAborted):
        for chunk in resp.response:
            received += len(chunk)
    resp.close()
    assert received == 100 * 1024


# ------------------------------------------------------------------ errors and SSRF


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ({}, 400, "invalid_request"),
        ({"url": "ftp://example.com/a.mp4"}, 400, "invalid_url"),
        ({"url": "http://10.0.0.1/a.mp4"}, 403, "blocked_address"),
        ({"url": "PLACEHOLDER", "format": "bad format!"}, 400, "invalid_request"),
        ({"url": "PLACEHOLDER", "format": "nope123"}, 422, "format_unavailable"),
        ({"url": "PLACEHOLDER", "format": "audio", "audio_format": "wav"}, 400, "invalid_request"),
    ],
)
def test_errors_before_the_first_byte(client, media_server, query, status, code):
    query = {
        k: (media_server.url("sample.mp4") if v == "PLACEHOLDER" else v) for k, v in query.items()
    }
    resp = get(client, **query)
    assert resp.status_code == status
    assert error_of(resp) == code


def test_not_media_is_unsupported(client, media_server):
    resp = get(client, url=media_server.url("garbage.bin"))
    assert resp.status_code == 422
    assert error_of(resp) == "unsupported_url"


@pytest.mark.parametrize("query", [{}, {"format": "audio"}], ids=["proxy", "ffmpeg"])
@pytest.mark.parametrize("client_range", [None, "bytes=1000-"], ids=["whole", "resumed"])
def test_a_direct_link_that_is_not_media_is_refused(
    client, media_server, media_root, query, client_range
):
    """A zip served as video/mp4 is refused, also when a resume asks for its middle."""
    (media_root / "not-media.mp4").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 800)
    headers = {"Range": client_range} if client_range else {}
    resp = client.get(
        "/api/v1/stream",
        query_string={"url": media_server.url("not-media.mp4"), **query},
        headers=headers,
        buffered=False,
    )
    assert resp.status_code == 422
    # Said before ffmpeg starts: not whatever ffmpeg makes of a zip.
    assert "not lead to a video or audio file" in resp.get_json()["error"]["message"]
    assert error_of(resp) == "unsupported_url"


def test_a_repeated_stream_reuses_the_formats(client, media_server, media_root):
    """The second stream of a URL skips the extraction: one request upstream, not several."""
    page = media_server.add_page("/again/page.html", video_page("/sample.mp4", "Again"))
    expected = (media_root / "sample.mp4").read_bytes()
    seen = []
    for _ in range(2):
        media_server.clear()
        resp = get(client, url=page)
        assert resp.status_code == 200
        assert b"".join(resp.response) == expected
        resp.close()
        seen.append(media_server.paths())
    assert "/again/page.html" in seen[0] and "/sample.mp4" in seen[0]
    assert seen[1] == ["/sample.mp4"]


def test_remembered_formats_that_went_stale_are_resolved_again(client, media_server, media_root):
    """A remembered media link that now fails (an expired signature) is looked up afresh."""
    data = (media_root / "sample.mp4").read_bytes()
    media_server.add_page("/stale/v1.mp4", data, content_type="video/mp4")
    page = media_server.add_page("/stale/page.html", video_page("/stale/v1.mp4", "Stale"))
    resp = get(client, url=page)
    assert b"".join(resp.response) == data
    resp.close()
    media_server.add_page("/stale/v1.mp4", b"expired", status=403, content_type="text/plain")
    media_server.add_page("/stale/v2.mp4", data, content_type="video/mp4")
    media_server.add_page("/stale/page.html", video_page("/stale/v2.mp4", "Stale"))
    media_server.clear()
    resp = get(client, url=page)
    assert resp.status_code == 200
    assert b"".join(resp.response) == data
    resp.close()
    paths = media_server.paths()
    assert paths[:2] == ["/stale/v1.mp4", "/stale/page.html"] and paths[-1] == "/stale/v2.mp4"


def test_encrypted_hls_is_refused(client, media_server, media_root):
    playlist = (media_root / "hls/240/index.m3u8").read_text()
    playlist = playlist.replace("#EXTINF", '#EXT-X-KEY:METHOD=AES-128,URI="key.bin"\n#EXTINF', 1)
    media_server.add_page(
        "/hls/240/locked.m3u8", playlist, content_type="application/vnd.apple.mpegurl"
    )
    resp = get(client, url=media_server.url("hls/240/locked.m3u8"))
    assert resp.status_code == 422
    assert error_of(resp) == "unsupported_url"


def test_dash_segments_on_an_untrusted_host_are_blocked(client, media_server, media_root, canary):
    mpd = (media_root / "dash/manifest.mpd").read_text()
    mpd = mpd.replace('initialization="init', f'initialization="{canary.base}/init')
    mpd = mpd.replace('media="chunk', f'media="{canary.base}/chunk')
    media_server.add_page("/dash/evil.mpd", mpd, content_type="application/dash+xml")
    canary.clear()
    resp = get(client, url=media_server.url("dash/evil.mpd"))
    assert resp.status_code == 403
    assert error_of(resp) == "blocked_address"
    assert canary.requests == []


def test_hls_segments_on_an_untrusted_host_are_blocked(client, media_server, media_root, canary):
    playlist = (media_root / "hls/240/index.m3u8").read_text()
    playlist = re.sub(r"^(seg\d+\.ts)$", rf"{canary.base}/\1", playlist, flags=re.M)
    media_server.add_page(
        "/hls/240/evil.m3u8", playlist, content_type="application/vnd.apple.mpegurl"
    )
    canary.clear()
    resp = get(client, url=media_server.url("hls/240/evil.m3u8"))
    assert resp.status_code == 403
    assert error_of(resp) == "blocked_address"
    assert canary.requests == []


def test_ffmpeg_refuses_network_even_when_told_to(canary):
    # Defence in depth: were a demuxer that follows URLs ever chosen, the pipe-only
    # protocol whitelist keeps ffmpeg off the network.
    playlist = (
        f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\n{canary.base}/seg.ts\n#EXT-X-ENDLIST\n"
    ).encode()
    source = stream.Source("hls", [stream.Piece(data=playlist)], {})
    opts = stream.Options(policy=Policy(), timeout=2)
    pipeline = stream.Pipeline([source], ["-map", "0", "-c", "copy", "-f", "mpegts"], opts)
    canary.clear()
    pipeline.start()
    try:
        with pytest.raises(Exception):  # noqa: B017 - any failure will do, no request may happen
            while pipeline.read(deadline=float("inf")):
                pass
            pipeline.finish()
    finally:
        pipeline.close()
    assert canary.requests == []
    assert "not on whitelist" in pipeline.stderr_text()


# ------------------------------------------------------------------ names and parsing


def test_arabic_title_in_content_disposition(client, media_server, tmp_path):
    title = "فيديو: تجربة/أولى"
    media_server.add_page("/arabic.html", video_page("/sample.mp4", title))
    resp, _ = fetch(client, tmp_path, url=media_server.url("arabic.html"))
    assert resp.status_code == 200
    value = resp.headers["Content-Disposition"]
    fallback = re.search(r'filename="([^"]*)"', value).group(1)
    encoded = re.search(r"filename\*=UTF-8''(\S+)", value).group(1)
    assert fallback.isascii() and fallback.endswith(".mp4")
    assert unquote(encoded) == "فيديو تجربة أولى.mp4"


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("a/b\\c", "a b c.mp4"),
        ("../../etc/passwd", "etc passwd.mp4"),
        ("x\x00y\x1b\u202ez", "xyz.mp4"),
        ("CON", "_CON.mp4"),
        ("", "video.mp4"),
        (None, "video.mp4"),
        ("مرحبا", "مرحبا.mp4"),
    ],
)
def test_safe_filename(title, expected):
    assert safe_filename(title, "mp4") == expected


def test_content_disposition_shape():
    value = content_disposition('Café "quoted".mp4')
    assert value == (
        f"attachment; filename=\"Cafe quoted.mp4\"; filename*=UTF-8''{quote('Café quoted.mp4')}"
    )
    assert len(safe_filename("ب" * 500, "mp4").encode()) <= 200


def test_parse_hls_byte_ranges_and_map():
    text = "\n".join(
        [
            "#EXTM3U",
            '#EXT-X-MAP:URI="init.mp4",BYTERANGE="800@0"',
            "#EXTINF:2.0,",
            "#EXT-X-BYTERANGE:1000@800",
            "media.mp4",
            "#EXTINF:2.5,",
            "#EXT-X-BYTERANGE:500",
            "media.mp4",
            "#EXT-X-ENDLIST",
        ]
    )
    pieces, duration, fmp4 = sources.parse_hls(text, "http://h.test/v/list.m3u8")
    assert fmp4 and duration == 4.5
    assert [(p.url, p.start, p.length) for p in pieces] == [
        ("http://h.test/v/init.mp4", 0, 800),
        ("http://h.test/v/media.mp4", 800, 1000),
        ("http://h.test/v/media.mp4", 1800, 500),
    ]


def test_parse_hls_refuses_live():
    with pytest.raises(UnsupportedURL):
        sources.parse_hls("#EXTM3U\n#EXTINF:1,\na.ts\n", "http://h.test/")


def test_no_ffmpeg_left_behind_in_process(client, media_server):
    # Read a little of a merged stream, then drop it: close() must reap ffmpeg.
    before = _children()
    resp = get(client, url=media_server.url("dash/manifest.mpd"))
    next(iter(resp.response))
    resp.close()
    assert _children() == before
    assert not [t for t in threading.enumerate() if t.name.startswith("nazzil-feed")]


def children_of(pid: int) -> list[tuple[int, str, str]]:
    """(pid, name, state) of every child process of pid, zombies included, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # the process ended while we looked
        name = text[text.index("(") + 1 : text.rindex(")")]
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid:
            found.append((int(stat.parent.name), name, state))
    return found


def _children() -> list[tuple[int, str, str]]:
    return children_of(os.getpid())


def test_ffmpeg_binary_is_found():
    assert Path(stream.ffmpeg_path("")).exists()
    assert stream.ffmpeg_path(ffmpeg_exe()) == ffmpeg_exe()
