"""Attacks on the address guard beyond the SSRF matrix: rebinding in the full flow, odd
redirects, playlists that fan out to many hosts, programs that would fetch on their own.

Everything here connects only to 127.0.0.1; "public" names come from conftest.FAKE_HOSTS or
from a stubbed netguard.resolve, never from real DNS.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests import conftest
from tests.mediaserver import MediaServer, og_page

from nazzil import extract, netguard
from nazzil.errors import BlockedAddress, NazzilError

HLS = "application/vnd.apple.mpegurl"
# Treated as "public" by the tests below; nothing listens there (the servers bind 127.0.0.1).
FAKE_PUBLIC = "127.0.0.2"


@pytest.fixture(autouse=True)
def _fresh_canary(canary: MediaServer) -> Iterator[None]:
    canary.clear()
    yield


@pytest.fixture
def fake_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let 127.0.0.2 pass as a public address (a stand-in for a site on the internet)."""
    real = netguard.is_public
    fake = ipaddress.ip_address(FAKE_PUBLIC)
    monkeypatch.setattr(netguard, "is_public", lambda ip: ip == fake or real(ip))


def _answer(address: str, port: int) -> list[tuple]:
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]


# ------------------------------------------------------------------ DNS rebinding


@pytest.fixture
def rebinding(monkeypatch: pytest.MonkeyPatch, fake_public: None) -> dict[str, int]:
    """rebind.example answers "public" to the first lookup and loopback to every later one."""
    calls = {"n": 0}
    real = netguard.resolve

    def resolve(host: str, port: int) -> list[tuple]:
        if host.rstrip(".").lower() == "rebind.example":
            calls["n"] += 1
            return _answer(FAKE_PUBLIC if calls["n"] == 1 else "127.0.0.1", port)
        return real(host, port)

    monkeypatch.setattr(netguard, "resolve", resolve)
    return calls


@pytest.mark.parametrize("path", ["/api/v1/info", "/api/v1/stream"])
def test_rebinding_between_precheck_and_connect_is_refused(client, canary, rebinding, path):
    r = client.get(path, query_string={"url": f"http://rebind.example:{canary.port}/sample.mp4"})
    r.get_data()
    assert r.status_code == 403, r.get_data(as_text=True)
    assert r.get_json()["error"]["code"] == "blocked_address"
    assert rebinding["n"] >= 2  # the precheck passed; the connection itself was refused
    assert canary.requests == []


def test_rebinding_inside_yt_dlp_is_refused(app, canary, rebinding):
    policy = netguard.policy_for(app)
    url = f"http://rebind.example:{canary.port}/sample.mp4"
    netguard.precheck(url, policy)  # first answer: "public"
    with pytest.raises(NazzilError) as caught:
        extract.probe(url, app.config, policy)
    assert caught.value.code == "blocked_address"
    assert canary.requests == []


# ------------------------------------------------------------------ odd redirects


def _odd_locations(canary: MediaServer) -> list[str]:
    hostport = f"127.0.0.1:{canary.port}"
    return [
        f"//{hostport}/sample.mp4",  # scheme-relative
        f"http:/\\{hostport}/sample.mp4",  # browsers read \ as /
        f"http:\\\\{hostport}/sample.mp4",
        f"HTTP://{hostport}/sample.mp4",
        f"http://{hostport}#@example.com/",
        f"http://example.com@{hostport}/sample.mp4",
        f" http://{hostport}/sample.mp4",
        f"http://[::ffff:127.0.0.1]:{canary.port}/sample.mp4",
        f"http://0x7f.1:{canary.port}/sample.mp4",
        f"http://localhost.:{canary.port}/sample.mp4",
        f"http://LOCALHOST:{canary.port}/sample.mp4",
    ]


def test_odd_redirects_never_reach_inward(app, client, media_server, canary):
    policy = netguard.policy_for(app)
    for i, location in enumerate(_odd_locations(canary)):
        url = media_server.add_redirect(f"/atk/odd-{i}", location)
        with contextlib.suppress(NazzilError):
            netguard.fetch(url, policy, timeout=2).close()
        r = client.get("/api/v1/info", query_string={"url": url})
        assert r.status_code >= 400, (location, r.get_json())
        assert canary.requests == [], location


# ------------------------------------------------------------------ HLS / DASH corners


def _master(variants: list[str], extra: str = "") -> str:
    lines = ["#EXTM3U", extra] if extra else ["#EXTM3U"]
    for i, url in enumerate(variants):
        lines += [f"#EXT-X-STREAM-INF:BANDWIDTH={100000 + i},RESOLUTION=426x240", url]
    return "\n".join(lines) + "\n"


def test_hls_side_tracks_pointing_inward_are_never_fetched(app, media_server, canary, tmp_path):
    c = canary.url
    extra = "\n".join(
        (
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="a",NAME="x",DEFAULT=YES,URI="{c("/a.m3u8")}"',
            f'#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=1,URI="{c("/iframe.m3u8")}"',
            f'#EXT-X-SESSION-KEY:METHOD=AES-128,URI="{c("/key")}"',
        )
    )
    url = media_server.add_page(
        "/atk/side.m3u8",
        _master([media_server.url("/hls/240/index.m3u8")], extra),
        content_type=HLS,
    )
    policy = netguard.policy_for(app)
    info = extract.probe(url, app.config, policy)
    assert info["formats"]
    picked = extract.resolve(url, "bv*+ba/b", app.config, policy)
    assert all(str(canary.port) not in str(f["url"]) for f in picked["formats"])
    assert canary.requests == []


def test_hls_init_section_pointing_inward_is_refused_in_a_stream(client, media_server, canary):
    body = (
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:1\n#EXT-X-PLAYLIST-TYPE:VOD\n"
        f'#EXT-X-MAP:URI="{canary.url("/init.mp4")}"\n'
        f"#EXTINF:1.0,\n{media_server.url('/hls/240/seg000.ts')}\n#EXT-X-ENDLIST\n"
    )
    url = media_server.add_page("/atk/map.m3u8", body, content_type=HLS)
    r = client.get("/api/v1/stream", query_string={"url": url})
    r.get_data()
    assert r.status_code >= 400
    assert canary.requests == []


def test_dash_base_url_pointing_inward_is_refused(client, media_server, canary):
    mpd = (
        '<?xml version="1.0"?>\n'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT4S" minBufferTime="PT1S" '
        'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011">\n'
        f"<BaseURL>{canary.url('/')}</BaseURL>\n"
        '<Period><AdaptationSet mimeType="video/mp4" contentType="video">'
        '<Representation id="v" bandwidth="100000" width="320" height="240" codecs="avc1.42c01e">'
        "<BaseURL>sample.mp4</BaseURL></Representation></AdaptationSet></Period></MPD>\n"
    )
    url = media_server.add_page("/atk/base.mpd", mpd, content_type="application/dash+xml")
    for path in ("/api/v1/info", "/api/v1/stream"):
        r = client.get(path, query_string={"url": url})
        r.get_data()
        assert r.status_code == 403, (path, r.get_data(as_text=True)[:300])
    assert canary.requests == []


# ------------------------------------------------------- fan-out to many host names


@pytest.fixture
def counted_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every name netguard resolves."""
    seen: list[str] = []
    real = netguard.resolve

    def resolve(host: str, port: int) -> list[tuple]:
        seen.append(host)
        return real(host, port)

    monkeypatch.setattr(netguard, "resolve", resolve)
    return seen


def test_a_playlist_cannot_make_nazzil_resolve_hundreds_of_names(
    app, media_server, counted_lookups
):
    # Each lookup can take seconds and lands at a name server the attacker may run: a preview
    # must not turn one request into hundreds of DNS queries.
    variants = [f"http://v{i}.fanout.invalid/index.m3u8" for i in range(300)]
    url = media_server.add_page("/atk/fanout.m3u8", _master(variants), content_type=HLS)
    policy = netguard.policy_for(app)
    with contextlib.suppress(NazzilError):
        extract.probe(url, app.config, policy)
    assert len([h for h in counted_lookups if h.endswith(".fanout.invalid")]) <= 10


def test_a_dash_segment_list_cannot_make_nazzil_resolve_hundreds_of_names(
    app, media_server, counted_lookups
):
    segments = "".join(
        f'<SegmentURL media="http://s{i}.fanout.invalid/seg.m4s"/>' for i in range(300)
    )
    mpd = (
        '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT300S" minBufferTime="PT1S" '
        'profiles="urn:mpeg:dash:profile:isoff-live:2011"><Period>'
        '<AdaptationSet mimeType="video/mp4" contentType="video">'
        '<Representation id="v" bandwidth="100000" width="320" height="240" codecs="avc1.42c01e">'
        '<SegmentList duration="1" timescale="1">'
        f'<Initialization sourceURL="{media_server.url("/x")}"/>'
        f"{segments}</SegmentList></Representation></AdaptationSet></Period></MPD>\n"
    )
    url = media_server.add_page("/atk/fanout.mpd", mpd, content_type="application/dash+xml")
    with contextlib.suppress(NazzilError):
        extract.probe(url, app.config, netguard.policy_for(app))
    assert len([h for h in counted_lookups if h.endswith(".fanout.invalid")]) <= 10


# ------------------------------------------------- programs that would fetch by themselves


def test_phantomjs_is_never_run(app) -> None:
    extract.yt_dlp_module()
    from yt_dlp.extractor.openload import PhantomJSwrapper

    with pytest.raises(BlockedAddress):
        PhantomJSwrapper(object())


def test_a_mixed_answer_never_falls_back_to_the_blocked_address(monkeypatch, canary, fake_public):
    # The "public" address refuses the connection; the loopback one must not be tried instead.
    monkeypatch.setattr(
        netguard,
        "resolve",
        lambda host, port: _answer(FAKE_PUBLIC, port) + _answer("127.0.0.1", port),
    )
    conftest.FAKE_HOSTS["mixed.example"] = "127.0.0.1"
    try:
        with pytest.raises(NazzilError):
            netguard.fetch(f"http://mixed.example:{canary.port}/x", netguard.Policy(), timeout=2)
    finally:
        conftest.FAKE_HOSTS.pop("mixed.example", None)
    assert canary.requests == []


# ------------------------------------------------- upstream headers into our answers


def test_folded_upstream_headers_are_unfolded_not_passed_on(client, media_server, media_root):
    # obs-fold: http.client keeps the CR LF inside the value. Copied into nazzil's answer it
    # would split the response (or make it a 500); RFC 9112 says to replace it with spaces.
    folded = {"ETag": '"a"\r\n\tX-Injected: 1', "Last-Modified": "Mon\r\n Set-Cookie: x=1"}
    url = media_server.add_page(
        "/atk/folded.mp4",
        (media_root / "sample.mp4").read_bytes(),
        headers=folded,
        content_type="video/mp4",
    )
    r = client.get("/api/v1/stream", query_string={"url": url})
    r.get_data()
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    assert "X-Injected" not in r.headers and "Set-Cookie" not in r.headers
    assert all("\r" not in v and "\n" not in v for v in r.headers.values())
    assert r.headers.get("ETag") == '"a" X-Injected: 1'


# ------------------------------------------------- ffmpeg reading a crafted local file


def _secret_audio(tmp_path: Any) -> Any:
    """A media file outside every download directory that must never be read."""
    import subprocess

    import imageio_ffmpeg

    secret = tmp_path / "elsewhere" / "secret.m4a"
    secret.parent.mkdir()
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=d=1",
         "-c:a", "aac", str(secret)],
        check=True,
    )  # fmt: skip
    return secret


def _playlist_naming(path: Any) -> str:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:1,\n{path}\n#EXT-X-ENDLIST\n"


def test_a_downloaded_playlist_never_makes_ffmpeg_read_local_files(app, media_server, tmp_path):
    # A DASH track typed application/x-mpegurl is saved (its segments joined) as media.m3u8;
    # ffmpeg (converting the audio) would read it as HLS and pull in any local file it names.
    from nazzil import formats

    secret = _secret_audio(tmp_path)
    media_server.add_page("/atk/leak.m3u8", _playlist_naming(secret), content_type="text/plain")
    mpd = (
        '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT1S" minBufferTime="PT1S" '
        'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period>'
        '<AdaptationSet mimeType="application/x-mpegurl" contentType="audio">'
        '<Representation id="a" bandwidth="64000" codecs="mp4a.40.2">'
        '<SegmentList duration="1" timescale="1">'
        f'<SegmentURL media="{media_server.url("/atk/leak.m3u8")}"/></SegmentList>'
        "</Representation></AdaptationSet></Period></MPD>\n"
    )
    url = media_server.add_page("/atk/leak.mpd", mpd, content_type="application/dash+xml")
    out = tmp_path / "job"
    out.mkdir()
    import imageio_ffmpeg

    try:
        path, _ = extract.download(
            url,
            formats.choose("audio", "m4a"),
            out,
            config=app.config,
            policy=netguard.policy_for(app),
            ffmpeg=imageio_ffmpeg.get_ffmpeg_exe(),
        )
    except NazzilError:
        path = None
    made = [p for p in out.iterdir() if p.suffix in (".m4a", ".mp3", ".opus", ".mp4")]
    assert path is None and not made, (path, made)


def _mpd_naming(path: Any) -> str:
    return (
        '<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        'mediaPresentationDuration="PT1S" minBufferTime="PT1S" '
        'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period>'
        '<AdaptationSet mimeType="audio/mp4"><Representation id="a" bandwidth="64000" '
        f'codecs="mp4a.40.2"><BaseURL>{path}</BaseURL></Representation></AdaptationSet>'
        "</Period></MPD>\n"
    )


def test_cutting_a_file_that_is_a_manifest_reads_nothing_else(tmp_path):
    # ffmpeg finds an MPD by its content, whatever the file is called.
    import imageio_ffmpeg

    from nazzil import download
    from nazzil.errors import UpstreamError

    secret = _secret_audio(tmp_path)
    src = tmp_path / "media.m4a"
    src.write_text(_mpd_naming(secret))
    with pytest.raises(UpstreamError):
        download.trim(src, 0.1, 0.5, imageio_ffmpeg.get_ffmpeg_exe())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "media.m4a"]


def test_every_ffmpeg_run_of_yt_dlp_reads_plain_local_media_only(app) -> None:
    extract.yt_dlp_module()
    from yt_dlp.postprocessor import ffmpeg as pp_ffmpeg

    guard = list(netguard.FFMPEG_FILE_INPUT)
    args = extract._guard_ffmpeg_args(["/x/ffmpeg", "-y", "-i", "file:a", "-i", "file:b", "o"])
    assert args == ["/x/ffmpeg", "-y", *guard, "-i", "file:a", *guard, "-i", "file:b", "o"]
    assert extract._guard_ffmpeg_args(["/x/ffprobe", "-show_streams", "file:a"]) == [
        "/x/ffprobe", *guard, "-show_streams", "file:a",
    ]  # fmt: skip
    assert getattr(pp_ffmpeg.Popen, "nazzil_guarded", False)


# ------------------------------------------------------------- memory exhaustion


def test_a_gzip_bomb_page_is_refused(client, media_server):
    import zlib

    compressor = zlib.compressobj(1, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = b"\0" * (1 << 20)
    body = b"".join(
        compressor.compress(zeros) for _ in range(extract.MAX_WHOLE_READ // len(zeros) + 8)
    )
    body += compressor.flush()
    url = media_server.add_page("/atk/bomb.html", body, headers={"Content-Encoding": "gzip"})
    r = client.get("/api/v1/info", query_string={"url": url})
    assert r.get_json()["error"]["code"] == "upstream_error", r.get_json()


def test_an_endless_page_is_not_read_whole(app, monkeypatch, media_server):
    # A smaller bound stands in for the real one, so the test serves a few MB, not 32.
    monkeypatch.setattr(extract, "MAX_WHOLE_READ", 1 << 20)
    monkeypatch.setattr(extract._bound_whole_reads, "__defaults__", (1 << 20,))
    url = media_server.add_page("/atk/huge.html", b"<html>" + b" " * (3 << 20))
    with pytest.raises(NazzilError) as caught:
        extract.probe(url, app.config, netguard.policy_for(app))
    assert caught.value.code == "upstream_error"
    assert "too large" in str(caught.value)


# ------------------------------------------------------------------- log forging


def test_a_request_cannot_forge_log_lines(client, nazzil_log):
    fake = "\r\n2026-01-01 00:00:00,000 WARNING nazzil.auth [x] token accepted\u2028"
    client.get("/nowhere" + fake.replace("\r", "%0d").replace("\n", "%0a"))
    lines = nazzil_log.getvalue().splitlines()
    assert lines and not any(line.startswith("2026-01-01") for line in lines), lines
    assert any("token accepted" in line for line in lines)  # kept, but on its own line


def test_a_job_cannot_read_local_files_through_a_manifest_in_disguise(app, media_server, tmp_path):
    # End to end: a <video> whose "mp4" is an MPD naming a local file, cut to a section (so
    # ffmpeg runs on it), must fail instead of handing the local file's content back.
    from tests.mediaserver import video_page

    from nazzil import db, queue

    secret = _secret_audio(tmp_path)
    media_server.add_page("/atk/disguised.mp4", _mpd_naming(secret), content_type="video/mp4")
    page = media_server.add_page(
        "/atk/disguised.html", video_page(media_server.url("/atk/disguised.mp4"), "d")
    )
    runner = queue.Runner(app, 1).start()
    try:
        client = app.test_client()
        r = client.post("/api/v1/jobs", json={"url": page, "start": 0.1, "end": 0.5})
        assert r.status_code == 202, r.get_json()
        job_id = r.get_json()["id"]
        deadline = time.monotonic() + 60
        job = {}
        while time.monotonic() < deadline:
            job = client.get(f"/api/v1/jobs/{job_id}").get_json()
            if job["status"] in ("finished", "failed", "cancelled"):
                break
            time.sleep(0.05)
    finally:
        runner.stop(10)
        db.dispose(app)
    assert job["status"] == "failed", job
    assert job["file"] is None


def _media_playlist(lines: str) -> str:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PLAYLIST-TYPE:VOD\n{lines}#EXT-X-ENDLIST\n"


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        ("#EXT-X-BYTERANGE:abc\n#EXTINF:1,\n{seg}\n", "upstream_error"),
        ("#EXT-X-BYTERANGE:-5@-3\n#EXTINF:1,\n{seg}\n", "upstream_error"),
        ('#EXT-X-MAP:URI="{seg}",BYTERANGE="x@y"\n#EXTINF:1,\n{seg}\n', "upstream_error"),
        ("#EXTINF:1,\nftp://127.0.0.1:{canary}/x.ts\n", "blocked_address"),
        ("#EXTINF:1,\nfile:///etc/passwd\n", "blocked_address"),
        ('#EXT-X-MAP:URI="data:video/mp4;base64,AAAA"\n#EXTINF:1,\n{seg}\n', "blocked_address"),
    ],
    ids=["byterange-text", "byterange-negative", "map-byterange", "ftp", "file", "data-map"],
)
def test_hostile_media_playlists_are_refused_cleanly(client, media_server, canary, lines, code):
    body = _media_playlist(
        lines.format(seg=media_server.url("/hls/240/seg000.ts"), canary=canary.port)
    )
    url = media_server.add_page(f"/atk/bad-{abs(hash(lines))}.m3u8", body, content_type=HLS)
    r = client.get("/api/v1/stream", query_string={"url": url})
    r.get_data()
    assert (r.status_code, r.get_json()["error"]["code"]) == (
        {"upstream_error": 502, "blocked_address": 403}[code],
        code,
    )
    assert canary.requests == []


def test_a_thumbnail_on_a_private_address_is_not_shown(client, media_server) -> None:
    """A site must not make viewers' browsers fetch images from their own network."""
    inward = media_server.add_page(
        "/attacks/inward-thumb.html",
        og_page(media_server.url("/sample.mp4"), "Inward thumb", image="http://192.168.1.1/x.jpg"),
    )
    trusted = media_server.add_page(
        "/attacks/trusted-thumb.html",
        og_page(media_server.url("/sample.mp4"), "Trusted thumb", image="/thumb.jpg"),
    )
    assert client.post("/api/v1/info", json={"url": inward}).get_json()["thumbnail"] is None
    shown = client.post("/api/v1/info", json={"url": trusted}).get_json()["thumbnail"]
    assert shown == media_server.url("/thumb.jpg")
