"""SSRF matrix and raw options: no request can make nazzil reach inward or set yt-dlp options.

Every case runs against the `canary` (an untrusted server on 127.0.0.1) and, for ftp:, a raw
TCP listener; afterwards neither may have seen a single request or connection. The media
server is trusted by host:port, so it can host the hostile pages and playlists.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from tests import conftest
from tests.mediaserver import MediaServer, jsonld_page, og_page, video_page

from nazzil import extract, netguard
from nazzil.errors import BlockedAddress, NazzilError

HLS = "application/vnd.apple.mpegurl"
FINAL = ("finished", "failed", "cancelled")


class TcpListener:
    """A bare TCP port on 127.0.0.1 that counts connections (for ftp: and other non-HTTP)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()  # an ftp client then fails at once instead of waiting for a banner

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def listener() -> Iterator[TcpListener]:
    """A raw TCP listener nazzil must never connect to."""
    tcp = TcpListener()
    yield tcp
    tcp.close()


@pytest.fixture(autouse=True)
def _fresh_canary(canary: MediaServer, listener: TcpListener) -> Iterator[None]:
    """Start each test with empty logs; after it, nothing may have reached inward."""
    canary.clear()
    listener.connections = 0
    yield


def _seg_lines(base: str) -> str:
    return "".join(f"#EXTINF:1.0,\n{base}/hls/240/seg00{i}.ts\n" for i in range(4))


def media_playlist(segments_base: str, key: str = "") -> str:
    """An HLS media playlist whose segments (and optional key line) live at segments_base."""
    return (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXT-X-PLAYLIST-TYPE:VOD\n{key}{_seg_lines(segments_base)}#EXT-X-ENDLIST\n"
    )


def master_playlist(variant_url: str) -> str:
    """An HLS master playlist with one variant at variant_url."""
    return (
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=426x240,"
        f'CODECS="avc1.42c01e,mp4a.40.2"\n{variant_url}\n'
    )


@pytest.fixture(scope="module")
def hostile(media_server: MediaServer, canary: MediaServer, listener: TcpListener) -> dict:
    """Hostile pages and playlists on the trusted server, each leading to the canary."""
    s, c = media_server, canary
    conftest.FAKE_HOSTS["inward.example"] = "127.0.0.1"
    pages = {
        "redirect_inward": s.add_redirect("/ssrf/r-in", c.url("/secret"), 302),
        "redirect_inward_307": s.add_redirect("/ssrf/r-in-307", c.url("/secret"), 307),
        "redirect_chain": s.add_redirect("/ssrf/r-chain", s.url("/ssrf/r-in"), 301),
        "redirect_ftp": s.add_redirect("/ssrf/r-ftp", f"ftp://127.0.0.1:{listener.port}/x.mp4"),
        "redirect_file": s.add_redirect("/ssrf/r-file", "file:///etc/passwd"),
        "video_tag": s.add_page("/ssrf/video.html", video_page(c.url("/sample.mp4"), "v")),
        "og_video": s.add_page("/ssrf/og.html", og_page(c.url("/sample.mp4"), "og")),
        "jsonld": s.add_page("/ssrf/jsonld.html", jsonld_page(c.url("/sample.mp4"), "ld")),
        "video_tag_file": s.add_page("/ssrf/file.html", video_page("file:///etc/passwd", "f")),
        "video_tag_name": s.add_page(
            "/ssrf/name.html", video_page(f"http://inward.example:{c.port}/a.mp4", "n")
        ),
        "hls_variant": s.add_page(
            "/ssrf/master.m3u8", master_playlist(c.url("/hls/240/index.m3u8")), content_type=HLS
        ),
        "hls_segments": s.add_page("/ssrf/segments.m3u8", media_playlist(c.base), content_type=HLS),
        "hls_sample_aes": s.add_page(
            "/ssrf/sample-aes.m3u8",
            media_playlist(s.base, f'#EXT-X-KEY:METHOD=SAMPLE-AES,URI="{c.url("/k")}"\n'),
            content_type=HLS,
        ),
    }
    yield pages
    conftest.FAKE_HOSTS.pop("inward.example", None)


# ------------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    """One API entry point that takes a URL from the user."""

    name: str
    method: str
    rule: str


ROUTES = [
    Route("preview-get", "GET", "/api/v1/info"),
    Route("preview-post", "POST", "/api/v1/info"),
    Route("jobs", "POST", "/api/v1/jobs"),
    Route("stream", "GET", "/api/v1/stream"),
]


def _has_route(app: Any, route: Route) -> bool:
    return any(r.rule == route.rule and route.method in r.methods for r in app.url_map.iter_rules())


def require_route(app: Any, route: Route) -> None:
    """Skip when a route this test covers is not part of the app (yet)."""
    if not _has_route(app, route):
        pytest.skip(f"{route.method} {route.rule} does not exist in this build")


@dataclass
class Outcome:
    """What became of a request: the HTTP answer, and for a job its final state."""

    status: int
    code: str | None
    job_status: str | None = None

    @property
    def refused(self) -> bool:
        """True when nazzil answered with an error or the job failed."""
        if self.job_status is not None:
            return self.job_status == "failed"
        return self.status >= 400


def _code(response: Any) -> str | None:
    try:
        return (response.get_json(silent=True) or {}).get("error", {}).get("code")
    except (AttributeError, ValueError):
        return None


def wait_for_job(client: Any, job_id: str, timeout: float = 60) -> dict:
    """Poll a job until it reaches a final state."""
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = client.get(f"/api/v1/jobs/{job_id}").get_json()
        if job.get("status") in FINAL:
            return job
        time.sleep(0.05)
    pytest.fail(f"job {job_id} did not finish in {timeout} s (last: {job.get('status')})")


def attempt(
    client: Any, route: Route, url: str, extra: dict | None = None, query: dict | None = None
) -> Outcome:
    """Hand url to a route the way a user would, and wait for what it leads to."""
    extra, query = extra or {}, query or {}
    if route.method == "GET":
        r = client.get(route.rule, query_string={**query, **extra, "url": url})
        r.get_data()  # drain a (possibly streamed) body so every fetch has happened
        r.close()
    else:
        r = client.post(route.rule, query_string=query, json={**extra, "url": url})
        if route.name == "jobs" and r.status_code == 202:
            job = wait_for_job(client, r.get_json()["id"])
            error = job.get("error") or {}
            return Outcome(r.status_code, error.get("code"), job["status"])
    return Outcome(r.status_code, _code(r))


@pytest.fixture
def api(app: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A client of the app; for the jobs route, with a download worker in this process."""
    route = getattr(request.node, "callspec", None) and request.node.callspec.params.get("route")
    runner = None
    if route is not None and route.name == "jobs" and _has_route(app, route):
        from nazzil import queue

        runner = queue.Runner(app, 1).start()
    yield app.test_client()
    if runner is not None:
        from nazzil import db

        runner.stop(10)
        db.dispose(app)


# ------------------------------------------------------------------------- the matrix


def literal(spelling: str) -> Callable[[MediaServer, TcpListener, dict], str]:
    """A URL to the canary's port with the host spelled as given."""
    return lambda canary, listener, pages: f"http://{spelling}:{canary.port}/secret"


DIRECT = {
    "decimal": literal("2130706433"),
    "hex": literal("0x7f000001"),
    "octal": literal("0177.0.0.1"),
    "short": literal("127.1"),
    "dotted": literal("127.0.0.1"),
    "zero": literal("0.0.0.0"),
    "ipv6-loopback": literal("[::1]"),
    "ipv4-mapped": literal("[::ffff:127.0.0.1]"),
    "ipv4-mapped-hex": literal("[::ffff:7f00:1]"),
    "nat64": literal("[64:ff9b::7f00:1]"),
    "6to4": literal("[2002:7f00:1::]"),
    "localhost": literal("localhost"),
    "localhost-dot": literal("localhost."),
    "name-to-loopback": literal("inward.example"),
}
INVALID = {
    "userinfo": lambda c, ls, p: f"http://user:pw@127.0.0.1:{c.port}/secret",
    "userinfo-trusted-lookalike": lambda c, ls, p: f"http://127.0.0.1:1@127.0.0.1:{c.port}/x",
    "file": lambda c, ls, p: "file:///etc/passwd",
    "data": lambda c, ls, p: f"data:text/html,<video src='http://127.0.0.1:{c.port}/x.mp4'>",
    "ftp": lambda c, ls, p: f"ftp://127.0.0.1:{ls.port}/x.mp4",
}
INDIRECT = {
    name: (lambda c, ls, p, name=name: p[name])
    for name in (
        "redirect_inward", "redirect_inward_307", "redirect_chain", "redirect_ftp",
        "redirect_file", "video_tag", "og_video", "jsonld", "video_tag_file", "video_tag_name",
        "hls_variant",
    )
}  # fmt: skip
# Pages whose hostile part only shows when the media itself is fetched (not at preview).
AT_DOWNLOAD = {
    name: (lambda c, ls, p, name=name: p[name]) for name in ("hls_segments", "hls_sample_aes")
}


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("case", list(DIRECT), ids=str)
def test_ip_literals_and_names_reaching_inward(app, api, canary, listener, hostile, route, case):
    require_route(app, route)
    outcome = attempt(api, route, DIRECT[case](canary, listener, hostile))
    assert outcome.refused and outcome.code == "blocked_address", outcome
    assert canary.requests == []


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("case", list(INVALID), ids=str)
def test_userinfo_and_other_schemes_are_invalid(app, api, canary, listener, hostile, route, case):
    require_route(app, route)
    outcome = attempt(api, route, INVALID[case](canary, listener, hostile))
    assert outcome.refused and outcome.code == "invalid_url", outcome
    assert canary.requests == [] and listener.connections == 0


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("case", list(INDIRECT), ids=str)
def test_trusted_pages_leading_inward(app, api, canary, listener, hostile, route, case):
    require_route(app, route)
    outcome = attempt(api, route, INDIRECT[case](canary, listener, hostile))
    assert outcome.refused and outcome.code == "blocked_address", outcome
    assert canary.requests == [] and listener.connections == 0


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
@pytest.mark.parametrize("case", list(AT_DOWNLOAD), ids=str)
def test_playlists_whose_segments_lead_inward(app, api, canary, listener, hostile, route, case):
    require_route(app, route)
    outcome = attempt(api, route, AT_DOWNLOAD[case](canary, listener, hostile))
    if route.name.startswith("preview"):
        # The playlist itself is trusted; its segments are only fetched by a download.
        assert outcome.status == 200, outcome
    else:
        assert outcome.refused, outcome
    assert canary.requests == [] and listener.connections == 0


# ------------------------------------------- the guard inside yt-dlp, below any route


def guarded_download(url: str, app: Any, tmp_path: Any, **extra: Any) -> None:
    """Download url with nazzil's guarded YoutubeDL into tmp_path (what jobs build upon)."""
    import imageio_ffmpeg

    params = extract.base_params(app.config)
    params.pop("simulate", None)
    params.update(
        outtmpl={"default": "media.%(ext)s"},
        paths={"home": str(tmp_path), "temp": str(tmp_path)},
        ffmpeg_location=imageio_ffmpeg.get_ffmpeg_exe(),
        format="best",
        **extra,
    )
    ydl = extract.new_ydl(params, netguard.policy_for(app))
    try:
        with ydl:
            ydl.extract_info(url, download=True)
    except BlockedAddress:
        raise
    except Exception as exc:  # noqa: BLE001 - classified like every yt-dlp failure
        raise extract.classify(exc) from None


def test_segments_pointing_inward_are_blocked_when_downloading(app, hostile, canary, tmp_path):
    # yt-dlp skips fragments it cannot fetch, so this ends as "empty file", never as a leak.
    with pytest.raises(NazzilError):
        guarded_download(hostile["hls_segments"], app, tmp_path)
    assert canary.requests == []


def test_hls_that_yt_dlp_would_hand_to_ffmpeg_is_refused(app, hostile, canary, tmp_path):
    # SAMPLE-AES is beyond yt-dlp's native HLS downloader: it delegates to ffmpeg, which would
    # open its own connections (to the key on the canary) outside the guard.
    with pytest.raises(BlockedAddress, match="outside nazzil's address guard"):
        guarded_download(hostile["hls_sample_aes"], app, tmp_path)
    assert canary.requests == []
    assert not list(tmp_path.glob("media.*"))


@pytest.fixture
def ffmpeg_on_path(monkeypatch) -> None:
    """Make yt-dlp believe ffmpeg is on PATH, as on most servers (it picks FFmpegFD then)."""
    extract.yt_dlp_module()
    from yt_dlp.downloader import external

    monkeypatch.setattr(external.FFmpegFD, "available", classmethod(lambda cls, path=None: True))


def test_aes_hls_is_not_handed_to_ffmpeg(app, media_server, canary, ffmpeg_on_path, tmp_path):
    # Without pycryptodomex yt-dlp gives AES-128 playlists to ffmpeg when it finds one.
    key = f'#EXT-X-KEY:METHOD=AES-128,URI="{canary.url("/k")}"\n'
    url = media_server.add_page(
        "/ssrf/aes.m3u8", media_playlist(media_server.base, key), content_type=HLS
    )
    with pytest.raises(BlockedAddress):
        guarded_download(url, app, tmp_path)
    assert canary.requests == []


def test_download_ranges_never_run_ffmpeg_as_downloader(
    app, media_server, ffmpeg_on_path, tmp_path
):
    # Sections are cut by ffmpeg reading the URL itself: nazzil cuts local files instead.
    yt_dlp = extract.yt_dlp_module()
    ranges = yt_dlp.utils.download_range_func(None, [(0, 1)])
    with pytest.raises(BlockedAddress, match="outside nazzil's address guard"):
        guarded_download(media_server.url("/sample.mp4"), app, tmp_path, download_ranges=ranges)


@pytest.mark.parametrize("downloader", ["ExternalFD", "FFmpegFD", "CurlFD", "Aria2cFD"])
def test_subprocess_downloaders_refuse_to_run(downloader) -> None:
    extract.yt_dlp_module()
    from yt_dlp.downloader import external

    fd = getattr(external, downloader).__new__(getattr(external, downloader))
    with pytest.raises(BlockedAddress):
        fd.real_download("out.mp4", {"url": "http://127.0.0.1:1/x"})


def test_guarded_handler_has_no_ftp_file_or_data_handlers(app) -> None:
    ydl = extract.new_ydl(extract.base_params(app.config), netguard.policy_for(app))
    with ydl:
        handlers = list(ydl._request_director.handlers.values())
        assert [h.RH_NAME for h in handlers] == ["nazzil"]
        opener = handlers[0]._get_instance(cookiejar=ydl.cookiejar, proxies={})
        kinds = {type(h).__name__ for h in opener.handlers}
    assert not kinds & {"FTPHandler", "FileHandler", "DataHandler", "ProxyHandler"}
    assert {"GuardedHTTPHandler", "GuardedRedirectHandler"} <= kinds


# ----------------------------------------------------- proxies from the environment

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture
def proxy_env(monkeypatch, canary) -> None:
    """Point every proxy variable at the canary."""
    for name in PROXY_VARS:
        monkeypatch.setenv(name, canary.base)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_proxy_variables_are_ignored_by_previews(client, media_server, canary, proxy_env):
    page = media_server.add_page("/ssrf/proxy.html", video_page("/sample.mp4", "Proxied?"))
    response = client.post("/api/v1/info", json={"url": page})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["duration"] == pytest.approx(4, abs=0.2)  # netguard.fetch too
    assert canary.requests == []


def test_proxy_variables_are_ignored_by_downloads(app, media_server, canary, proxy_env, tmp_path):
    guarded_download(media_server.url("/hls/240/index.m3u8"), app, tmp_path)
    assert list(tmp_path.glob("media.*"))
    assert canary.requests == []


# --------------------------------------------------- controls: the traps do catch leaks


def test_control_stock_yt_dlp_uses_proxy_variables(media_server, canary, proxy_env) -> None:
    yt_dlp = extract.yt_dlp_module()
    with (
        yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True}) as ydl,
        pytest.raises(yt_dlp.networking.exceptions.HTTPError),  # the canary answers 404
    ):
        ydl.urlopen(media_server.url("/thumb.jpg")).read()
    assert canary.requests, "the canary must notice a proxied request"


def test_control_stock_yt_dlp_follows_redirects_to_ftp(media_server, listener) -> None:
    yt_dlp = extract.yt_dlp_module()
    url = media_server.add_redirect("/ssrf/r-ftp-control", f"ftp://127.0.0.1:{listener.port}/")
    with (
        # yt-dlp's urllib handler (preferred over requests here) is the one that uses ftplib.
        yt_dlp.YoutubeDL(
            {
                "quiet": True,
                "no_warnings": True,
                "proxy": "",
                "compat_opts": ["prefer-legacy-http-handler"],
            }
        ) as ydl,
        pytest.raises(yt_dlp.networking.exceptions.RequestError),
    ):
        ydl.urlopen(url)
    deadline = time.monotonic() + 2
    while not listener.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert listener.connections == 1, "ftplib must reach the listener without the guard"


def test_guarded_yt_dlp_refuses_redirects_to_ftp(app, media_server, listener) -> None:
    url = media_server.add_redirect("/ssrf/r-ftp-guarded", f"ftp://127.0.0.1:{listener.port}/")
    ydl = extract.new_ydl(extract.base_params(app.config), netguard.policy_for(app))
    with ydl, pytest.raises(Exception) as caught:  # noqa: PT011 - classified below
        ydl.urlopen(url)
    assert extract.classify(caught.value).code == "blocked_address"
    assert listener.connections == 0


# ----------------------------------------------------------------- no raw yt-dlp options

MARK = "PWNED"
JUNK: dict[str, Any] = {
    "exec": f"touch /tmp/{MARK}",
    "exec_cmd": f"touch /tmp/{MARK}",
    "postprocessors": [{"key": "Exec", "exec_cmd": f"touch /tmp/{MARK}"}],
    "postprocessor_args": {"default": [MARK]},
    "outtmpl": f"/tmp/{MARK}/%(id)s",
    "paths": {"home": f"/tmp/{MARK}"},
    "output": f"../../{MARK}",
    "cookiefile": f"/tmp/{MARK}.txt",
    "cookiesfrombrowser": [MARK],
    "external_downloader": {"default": "curl"},
    "external_downloader_args": {"default": [MARK]},
    "ffmpeg_location": f"/tmp/{MARK}/ffmpeg",
    "proxy": f"http://{MARK}:1",
    "enable_file_urls": True,
    "netrc_cmd": MARK,
    "usenetrc": True,
    "download_archive": f"/tmp/{MARK}",
    "load_info_filename": f"/tmp/{MARK}",
    "print_to_file": {"video": [(MARK, f"/tmp/{MARK}")]},
    "writeinfojson": True,
    "plugin_dirs": [f"/tmp/{MARK}"],
    "download_ranges": MARK,
    "http_headers": {"X-Mark": MARK},
    "username": MARK,
    "password": MARK,
    "source_address": MARK,
    "playlistend": 100000,
    "playlist_items": MARK,
    "extractor_args": {"generic": {"impersonate": [MARK]}},
    "compat_opts": [MARK],
    "format_sort": [MARK],
    "params": {"exec": MARK},
    "ydl_opts": {"exec": MARK},
    "options": {"outtmpl": MARK},
}
# Query parameters are strings; every name is tried.
JUNK_QUERY = {key: MARK for key in JUNK}
TYPED = {
    "preview-get": {},
    "preview-post": {},
    "jobs": {"format": "best"},
    "stream": {"format": "best"},
}


@pytest.fixture
def recorded(monkeypatch) -> list[dict]:
    """Record the params of every guarded YoutubeDL nazzil creates."""
    extract.yt_dlp_module()
    extract._default_extractors()
    cls = extract._guarded_ydl_class
    original = cls.__init__
    seen: list[dict] = []

    def spy(self, params=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(dict(params or {}))
        original(self, params, *args, **kwargs)

    monkeypatch.setattr(cls, "__init__", spy)
    return seen


def contains_mark(value: Any) -> bool:
    """Search the mark in every key, value and (for callables) name of a params structure."""
    if isinstance(value, dict):
        return any(contains_mark(k) or contains_mark(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return any(contains_mark(v) for v in value)
    return MARK in str(value)


def normal(value: Any, data_dir: str) -> Any:
    """Make params comparable: objects by type, per-job paths by a placeholder."""
    if isinstance(value, dict):
        return {str(k): normal(v, data_dir) for k, v in sorted(value.items(), key=str)}
    if isinstance(value, (list, tuple)):
        return [normal(v, data_dir) for v in value]
    if isinstance(value, str):
        return "<data>" if data_dir and value.startswith(data_dir) else value
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return f"<{type(value).__name__}>"


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_no_request_sets_a_yt_dlp_option(app, api, config, media_server, recorded, route):
    require_route(app, route)
    app.config["NAZZIL_PREVIEW_CACHE_TTL"] = 0.0
    url = media_server.url("/sample.mp4")
    typed = TYPED[route.name]
    data_dir = str(app.config["NAZZIL_DATA_DIR"])

    clean = attempt(api, route, url, typed)
    clean_params = [normal(p, data_dir) for p in recorded]
    assert clean_params, "no YoutubeDL was created"
    recorded.clear()

    if route.method == "GET":
        dirty = attempt(api, route, url, typed, query=JUNK_QUERY)
    else:
        dirty = attempt(api, route, url, {**JUNK, **typed}, query=JUNK_QUERY)
    dirty_params = [normal(p, data_dir) for p in recorded]

    assert (clean.status, clean.job_status) == (dirty.status, dirty.job_status)
    assert not any(contains_mark(p) for p in recorded)
    assert dirty_params == clean_params
    for params in recorded:
        assert params.get("proxy") == ""
        assert params.get("external_downloader") == {"default": "native"}
        assert params.get("enable_file_urls") is False
        assert params.get("cookiefile") is None and not params.get("cookiesfrombrowser")
        assert not params.get("download_ranges") and not params.get("netrc_cmd")
        keys = {pp.get("key") for pp in params.get("postprocessors") or []}
        assert keys <= {"FFmpegExtractAudio", "FFmpegVideoConvertor", "FFmpegVideoRemuxer"}
    if route.name.startswith("preview"):
        assert clean_params == [normal(extract.base_params(app.config), data_dir)]


def test_no_query_parameter_sets_an_option_on_the_page(app, client, media_server, recorded):
    app.config["NAZZIL_PREVIEW_CACHE_TTL"] = 0.0
    url = media_server.url("/sample.mp4")
    response = client.get("/", query_string={"url": url, **JUNK_QUERY})
    assert response.status_code == 200
    assert recorded and not any(contains_mark(p) for p in recorded)
    base = normal(extract.base_params(app.config), "")
    assert [normal(p, "") for p in recorded] == [base]


def test_json_body_is_parsed_only_as_typed_fields(client) -> None:
    # A URL hidden in a nested object or an array is not a URL field.
    for body in ({"url": {"url": "http://x"}}, {"url": ["http://x"]}, {"url": 42}):
        response = client.post(
            "/api/v1/info", data=json.dumps(body), content_type="application/json"
        )
        assert response.status_code == 400
        assert response.get_json()["error"]["code"] == "invalid_request"


def test_yt_dlp_runs_without_plugins(app) -> None:
    import os

    extract.yt_dlp_module()
    assert os.environ.get("YTDLP_NO_PLUGINS") == "1"
    ydl = extract.new_ydl(extract.base_params(app.config), netguard.policy_for(app))
    with ydl:
        modules = {getattr(ie, "__module__", "") for ie in ydl._ies.values()}
    assert not [m for m in modules if not m.startswith("yt_dlp.")]
