"""The only module that imports yt_dlp: turn a URL into nazzil's MediaInfo, guarded and quiet."""

from __future__ import annotations

import functools
import http.client
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urljoin, urlsplit

from flask import Flask, current_app

from . import mediaprobe, netguard
from .cache import TTLCache
from .errors import (
    BlockedAddress,
    FormatUnavailable,
    NazzilError,
    UnsupportedURL,
    UpstreamError,
    UpstreamTimeout,
)
from .mediainfo import (
    from_html5,
    is_playlist,
    is_web_url,
    seconds,
    title_of,
    to_media_info,
    usable_formats,
)
from .state import once

log = logging.getLogger(__name__)

_lock = threading.Lock()
_yt_dlp: Any = None
_guarded_ydl_class: Any = None


def yt_dlp_module() -> Any:
    """Import yt_dlp on first use, with plugins off, and build the guarded YoutubeDL class."""
    global _yt_dlp, _guarded_ydl_class
    if _yt_dlp is None:
        with _lock:
            if _yt_dlp is None:
                # Plugins are arbitrary code found on disk; nazzil never loads them.
                os.environ["YTDLP_NO_PLUGINS"] = "1"
                import yt_dlp

                _guarded_ydl_class = _build_guarded_class(yt_dlp)
                _yt_dlp = yt_dlp
    return _yt_dlp


# Client TLS contexts shared by every YoutubeDL, keyed by (verify, legacy, system certs).
_TLS_CONTEXTS: dict[tuple[bool, bool, bool], Any] = {}
_TLS_LOCK = threading.Lock()

_UNGUARDED = (
    "This media would be fetched by ffmpeg or another program outside nazzil's address "
    "guard, which is not allowed."
)


def _refuse_unguarded(*args: Any, **kwargs: Any) -> Any:
    """Stand in for downloaders that open their own connections (ffmpeg, curl, rtmpdump)."""
    raise BlockedAddress(_UNGUARDED)


def _disable_unguarded_downloaders() -> None:
    """Make every yt-dlp downloader that bypasses netguard refuse to run."""
    from yt_dlp.downloader import external, rtmp, websocket

    # HlsFD hands AES-128/SAMPLE-AES or "unsupported" playlists to FFmpegFD on its own,
    # so refusing in dl() is not enough: the subprocess downloaders themselves must refuse.
    for cls in (external.ExternalFD, rtmp.RtmpFD, websocket.FFmpegSinkFD):
        cls.real_download = _refuse_unguarded
    # A few extractors run PhantomJS, a browser that loads pages with its own sockets.
    from yt_dlp.extractor import openload

    # Refused in __new__: an object whose __init__ failed would still run its __del__.
    openload.PhantomJSwrapper.__new__ = staticmethod(_refuse_unguarded)


def _guard_ffmpeg_args(args: Any) -> Any:
    """Put netguard's file-input options before every input of an ffmpeg/ffprobe command."""
    if not isinstance(args, (list, tuple)) or not args:
        return args
    exe = os.path.basename(str(args[0])).lower()
    guard = list(netguard.FFMPEG_FILE_INPUT)
    if "ffprobe" in exe:
        return [args[0], *guard, *args[1:]]
    out = [args[0]]
    for arg in args[1:]:
        if arg == "-i":
            out += guard
        out.append(arg)
    return out


def _guard_ffmpeg_runs() -> None:
    """Make yt-dlp's postprocessors (merge, audio, fixups) run ffmpeg on plain media only."""
    from yt_dlp.postprocessor import ffmpeg as pp_ffmpeg

    base = pp_ffmpeg.Popen
    if getattr(base, "nazzil_guarded", False):
        return

    class GuardedPopen(base):  # type: ignore[misc, valid-type]
        """yt-dlp's Popen with the inputs of ffmpeg limited to local, plain media files."""

        nazzil_guarded = True

        def __init__(self, args: Any, *remaining: Any, **kwargs: Any) -> None:
            super().__init__(_guard_ffmpeg_args(args), *remaining, **kwargs)

    pp_ffmpeg.Popen = GuardedPopen


# Largest body yt-dlp may read whole (a page, a manifest, a playlist, decompressed or not);
# media is read in blocks and is not affected.
MAX_WHOLE_READ = 32 * 1024 * 1024


def _too_large() -> UpstreamError:
    return UpstreamError("The site sent a page or playlist that is too large.")


def _bound_whole_reads(resp: Any, limit: int = MAX_WHOLE_READ) -> None:
    """Make resp.read() without a size stop at limit bytes instead of reading forever."""
    read = resp.read

    def bounded(amt: int | None = None) -> bytes:
        if amt is not None and amt >= 0:
            return read(amt)
        data = read(limit + 1)
        if len(data) > limit:
            raise _too_large()
        return data

    resp.read = bounded


def _inflate(data: bytes, wbits: int, limit: int = MAX_WHOLE_READ) -> bytes:
    """Decompress zlib/gzip data, refusing output over limit bytes (a compression bomb)."""
    if not data:
        return data
    out = zlib.decompressobj(wbits).decompress(data, limit + 1)
    if len(out) > limit:
        raise _too_large()
    return out


def _build_guarded_class(yt_dlp: Any) -> Any:
    """Subclass YoutubeDL so every request goes through one handler that asks netguard."""
    import urllib.request

    from yt_dlp.downloader import DashSegmentsFD, HlsFD, HttpFD, get_suitable_downloader
    from yt_dlp.networking import _urllib

    _disable_unguarded_downloaders()
    _guard_ffmpeg_runs()
    native_downloaders = (HttpFD, HlsFD, DashSegmentsFD)

    class GuardedHTTPHandler(_urllib.HTTPHandler):
        """yt-dlp's HTTP handler with its connections made by netguard."""

        policy: netguard.Policy

        def _factory(self, base: type) -> Any:
            policy = self.policy

            def make(*args: Any, **kwargs: Any) -> Any:
                conn = base(*args, **kwargs)
                conn._create_connection = policy.create_connection
                return conn

            return make

        def http_response(self, req: Any, resp: Any) -> Any:
            # Pages, manifests and playlists are read whole into memory: bound that, and the
            # decompression below, so an endless body or a gzip bomb cannot exhaust it.
            _bound_whole_reads(resp)
            return super().http_response(req, resp)

        https_response = http_response

        @staticmethod
        def gz(data: bytes) -> bytes:
            return _inflate(data, zlib.MAX_WBITS | 16)

        @staticmethod
        def deflate(data: bytes) -> bytes:
            try:
                return _inflate(data, -zlib.MAX_WBITS)
            except zlib.error:
                return _inflate(data, zlib.MAX_WBITS)

        def http_open(self, req: Any) -> Any:
            req.headers.pop("Ytdl-socks-proxy", None)  # proxies would bypass the guard
            return self.do_open(self._factory(http.client.HTTPConnection), req)

        def https_open(self, req: Any) -> Any:
            req.headers.pop("Ytdl-socks-proxy", None)
            return self.do_open(
                self._factory(http.client.HTTPSConnection), req, context=self._context
            )

    class GuardedRedirectHandler(_urllib.RedirectHandler):
        """Follow redirects only to http(s)."""

        def http_error_302(self, req, fp, code, msg, headers):  # noqa: ANN001, ANN201
            # Checked before urllib's own scheme test, so file:/ftp: are refused as blocked.
            location = headers.get("location") or headers.get("uri")
            if location:
                scheme = urlsplit(urljoin(req.full_url, location.strip())).scheme.lower()
                if scheme not in netguard.ALLOWED_SCHEMES:
                    fp.close()
                    raise netguard.AddressBlocked(f"redirect to a {scheme}: URL refused")
            return super().http_error_302(req, fp, code, msg, headers)

        http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

        def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
            scheme = newurl.split(":", 1)[0].lower()
            if scheme not in netguard.ALLOWED_SCHEMES:
                raise netguard.AddressBlocked(f"redirect to a {scheme}: URL refused")
            return super().redirect_request(req, fp, code, msg, headers, newurl)

    class GuardedRH(_urllib.UrllibRH):
        """The only request handler nazzil's YoutubeDL uses: http(s), no proxy, no ftp/file."""

        _SUPPORTED_URL_SCHEMES = ("http", "https")
        _SUPPORTED_PROXY_SCHEMES = ()
        RH_NAME = "nazzil"
        policy: netguard.Policy = netguard.Policy()

        def __init__(self, **kwargs: Any) -> None:
            kwargs["enable_file_urls"] = False
            super().__init__(**kwargs)

        def _make_sslcontext(self, legacy_ssl_support: Any = None) -> Any:
            # yt-dlp builds a context, and reads the whole CA bundle (~15 ms), for every
            # YoutubeDL: share one per configuration, as contexts are thread-safe.
            legacy = self.legacy_ssl_support if legacy_ssl_support is None else legacy_ssl_support
            if self._client_cert:
                return super()._make_sslcontext(legacy_ssl_support=legacy)
            key = (bool(self.verify), bool(legacy), bool(self.prefer_system_certs))
            with _TLS_LOCK:
                if key not in _TLS_CONTEXTS:
                    _TLS_CONTEXTS[key] = super()._make_sslcontext(legacy_ssl_support=legacy)
                return _TLS_CONTEXTS[key]

        def _create_instance(self, proxies: Any, cookiejar: Any, legacy_ssl_support=None):  # noqa: ANN001
            opener = urllib.request.OpenerDirector()
            http_handler = GuardedHTTPHandler(
                context=self._make_sslcontext(legacy_ssl_support=legacy_ssl_support),
                source_address=self.source_address,
            )
            http_handler.policy = self.policy
            for handler in (
                http_handler,
                urllib.request.HTTPCookieProcessor(cookiejar),
                urllib.request.UnknownHandler(),
                urllib.request.HTTPDefaultErrorHandler(),
                urllib.request.HTTPErrorProcessor(),
                GuardedRedirectHandler(),
            ):
                opener.add_handler(handler)
            opener.addheaders = []
            return opener

    class GuardedYoutubeDL(yt_dlp.YoutubeDL):
        """YoutubeDL whose network layer is netguard's."""

        nazzil_policy: netguard.Policy = netguard.Policy()

        @functools.cached_property
        def _nazzil_verdicts(self) -> dict[tuple[str, int], bool]:
            # Shared by every video of one extraction, so a playlist shares one lookup budget.
            return {}

        @functools.cached_property
        def _request_director(self) -> Any:
            director = self.build_request_director([GuardedRH])
            for handler in director.handlers.values():
                handler.policy = self.nazzil_policy
            return director

        def process_video_result(self, info_dict: dict, download: bool = True) -> Any:
            """Drop formats the guard would refuse before any is chosen or fetched."""
            _drop_blocked_formats(info_dict, self.nazzil_policy, self._nazzil_verdicts)
            return super().process_video_result(info_dict, download=download)

        def _forceprint(self, key: str, info_dict: Any) -> Any:
            # yt-dlp renders format tables and a file name for --print on every extraction,
            # printing or not (~1 ms each time); nazzil never prints.
            if self.params.get("forceprint") or self.params.get("print_to_file"):
                return super()._forceprint(key, info_dict)
            return None if info_dict is None else {}

        def dl(self, name: str, info: dict, subtitle: bool = False, test: bool = False) -> Any:
            """Download with yt-dlp's own (guarded) downloaders only, never a subprocess."""
            chosen = get_suitable_downloader(dict(info), self.params, to_stdout=(name == "-"))
            if chosen not in native_downloaders:
                raise BlockedAddress(_UNGUARDED)
            return super().dl(name, info, subtitle=subtitle, test=test)

    return GuardedYoutubeDL


class _Logger:
    """Route yt-dlp's messages to our log instead of the terminal."""

    def debug(self, msg: str) -> None:
        if not msg.startswith("[debug] "):
            log.debug("%s", msg)

    def info(self, msg: str) -> None:
        log.debug("%s", msg)

    def warning(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        log.info("yt-dlp: %s", msg)


def _fetch_timeout(config: dict[str, Any]) -> float:
    return float(config.get("NAZZIL_FETCH_TIMEOUT") or 15)


def base_params(config: dict[str, Any]) -> dict[str, Any]:
    """The yt-dlp options nazzil always sets; nothing from a request is ever merged raw."""
    return {
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _Logger(),
        "color": {"stdout": "no_color", "stderr": "no_color"},
        "cachedir": False,
        "proxy": "",
        "socket_timeout": _fetch_timeout(config),
        "retries": 0,
        "extractor_retries": 0,
        "fragment_retries": 3,
        "check_formats": False,
        "hls_prefer_native": True,
        # "native" for every protocol: never curl/aria2c/ffmpeg as downloader (own sockets).
        "external_downloader": {"default": "native"},
        "enable_file_urls": False,
        "usenetrc": False,
        "noplaylist": False,
        "playlistend": int(config.get("NAZZIL_PLAYLIST_LIMIT") or 50),
        "lazy_playlist": False,
        "extract_flat": False,
        "simulate": True,
    }


_extractor_classes: list[Any] | None = None


def _default_extractors() -> list[Any]:
    """List yt-dlp's default extractor classes once; YoutubeDL would redo it (~70 ms) each time."""
    global _extractor_classes
    if _extractor_classes is None:
        template = _guarded_ydl_class({"quiet": True, "logger": _Logger()})
        _extractor_classes = [ie for ie in template._ies.values() if isinstance(ie, type)]
    return _extractor_classes


def new_ydl(params: dict[str, Any], policy: netguard.Policy) -> Any:
    """Create a guarded YoutubeDL with the given options."""
    yt_dlp_module()
    from yt_dlp.extractor.common import UnsupportedURLIE

    classes = _default_extractors()
    ydl = _guarded_ydl_class(params, auto_init=False)
    for ie in classes:
        ydl._ies[ie.ie_key()] = ie
    # The catch-all must come last and be an instance bound to this YoutubeDL.
    ydl.add_info_extractor(UnsupportedURLIE())
    ydl.nazzil_policy = policy
    return ydl


def classify(exc: BaseException) -> NazzilError:
    """Turn a yt-dlp (or network) failure into the right coded error."""
    yt_dlp = yt_dlp_module()
    from yt_dlp.networking import exceptions as net_exc

    seen: set[int] = set()
    chain: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        chain.append(item)
        exc_info = getattr(item, "exc_info", None)
        todo += [
            item.__cause__,
            item.__context__,
            getattr(item, "cause", None),
            getattr(item, "orig_msg", None)
            if isinstance(getattr(item, "orig_msg", None), BaseException)
            else None,
            exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None,
            getattr(item, "reason", None)
            if isinstance(getattr(item, "reason", None), BaseException)
            else None,
        ]
    for item in chain:
        if isinstance(item, NazzilError):
            return item
        if isinstance(item, netguard.AddressBlocked):
            return BlockedAddress()
    for item in chain:
        if isinstance(item, (TimeoutError, socket.timeout)):
            return UpstreamTimeout()
        if isinstance(item, net_exc.HTTPError):
            if 300 <= item.status < 400:  # urllib gives up on a long chain with the last 3xx
                return UpstreamError("The site redirected too many times.")
            return UpstreamError(f"The site answered HTTP {item.status}.")
        if isinstance(item, yt_dlp.utils.UnsupportedError):
            return UnsupportedURL()
    text = " ".join(str(item) for item in chain).lower()
    if netguard.AddressBlocked.MARK.lower() in text:
        return BlockedAddress()
    if "requested format is not available" in text:
        return FormatUnavailable()
    if "unable to obtain file audio codec" in text:
        # Only audio extraction asks; without ffprobe it means the file has no audio at all.
        return FormatUnavailable("The media has no audio track.")
    if "timed out" in text or "timeout" in text:
        return UpstreamTimeout()
    if "unsupported url" in text or "no video formats" in text or "no media" in text:
        return UnsupportedURL()
    for item in chain:
        if isinstance(item, (net_exc.TransportError, OSError)):
            return UpstreamError("Could not reach the site.")
    return UpstreamError("The site sent something nazzil could not read.")


def _fill_durations(info: dict[str, Any], policy: netguard.Policy, timeout: float) -> None:
    """Read durations yt-dlp did not report (html5 pages, direct links, DASH)."""
    videos = (info.get("entries") or []) if is_playlist(info) else [info]
    for video in videos:
        if not video or video.get("duration"):
            continue
        formats = usable_formats(video)
        if formats:
            video["duration"] = mediaprobe.duration_of(formats[-1], policy, timeout)


# Distinct host names looked up in DNS to sort formats, per extraction. A manifest naming
# hundreds of hosts would otherwise turn one preview into hundreds of (slow, attacker-seen)
# DNS queries; hosts past the budget are left to the connect-time check, which still holds.
FORMAT_LOOKUP_BUDGET = 8


def _drop_blocked_formats(
    video: dict[str, Any],
    policy: netguard.Policy,
    verdicts: dict[tuple[str, int], bool] | None = None,
) -> None:
    """Drop a video's formats that lead where nazzil may not go; refuse when none is left."""
    verdicts = {} if verdicts is None else verdicts

    def allowed(url: Any) -> bool:
        if url is None:
            return True
        if not is_web_url(url):
            return False  # file:, data:, rtmp: ... are never fetched
        try:
            key = netguard.host_port(url)
        except ValueError:
            return False
        if key not in verdicts:
            if len(verdicts) >= FORMAT_LOOKUP_BUDGET and not netguard.is_literal(key[0]):
                return True  # no more DNS for sorting; the connection is still checked
            try:
                policy.check_host(*key)
                verdicts[key] = True
            except BlockedAddress:
                verdicts[key] = False
        return verdicts[key]

    def reachable(fmt: dict[str, Any]) -> bool:
        urls = [fmt.get("url"), fmt.get("manifest_url"), fmt.get("fragment_base_url")]
        fragments = fmt.get("fragments")
        if isinstance(fragments, list):
            urls += [f.get("url") for f in fragments if isinstance(f, dict)]
        return all(allowed(url) for url in urls)

    formats = video.get("formats")
    if formats:
        video["formats"] = [f for f in formats if reachable(f)]
        if not video["formats"]:
            raise BlockedAddress()
    elif not reachable(video):
        raise BlockedAddress()


def _check_direct(info: dict[str, Any], policy: netguard.Policy, timeout: float) -> None:
    """Refuse a 'direct link' whose bytes are not media (yt-dlp accepts any 200)."""
    if info.get("direct"):
        mediaprobe.require_media(info["url"], policy, timeout)


def within_deadline(
    config: dict[str, Any], policy: netguard.Policy, work: Callable[[netguard.Policy], Any]
) -> Any:
    """Run work(policy) under the overall PREVIEW_TIMEOUT; a cut is upstream_timeout."""
    with netguard.Deadline(float(config.get("NAZZIL_PREVIEW_TIMEOUT") or 0)) as deadline:
        try:
            return work(deadline.bind(policy))
        except NazzilError:
            if deadline.expired:
                raise UpstreamTimeout("The site took too long to answer.") from None
            raise


def _extract(
    url: str, params: dict[str, Any], policy: netguard.Policy, *, sanitize: bool = False
) -> dict[str, Any]:
    """yt-dlp's info dict for url (no download); every failure comes out classified."""
    ydl = new_ydl(params, policy)
    try:
        with ydl:
            info = ydl.extract_info(url, download=False)
            if sanitize:
                info = ydl.sanitize_info(info)
    except NazzilError:
        raise
    except Exception as exc:  # noqa: BLE001 - every yt-dlp failure is classified
        raise classify(exc) from None
    if not info:
        raise UnsupportedURL()
    return info


def probe(url: str, config: dict[str, Any], policy: netguard.Policy) -> dict[str, Any]:
    """Ask yt-dlp what is at url and return the MediaInfo, within PREVIEW_TIMEOUT."""
    return within_deadline(config, policy, lambda bound: _probe(url, config, bound))


def _probe(url: str, config: dict[str, Any], policy: netguard.Policy) -> dict[str, Any]:
    timeout = _fetch_timeout(config)
    info = _extract(url, base_params(config), policy, sanitize=True)
    _check_direct(info, policy, timeout)
    _fill_durations(info, policy, timeout)
    return to_media_info(info, single_html5=from_html5(info), policy=policy)


def get_info(url: str, app: Flask | None = None) -> dict[str, Any]:
    """Validate, guard and probe a user's URL, answering repeats from a short-lived cache."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    config = app.config
    policy = netguard.policy_for(app)
    url = netguard.precheck(url, policy, int(config["NAZZIL_MAX_URL_LENGTH"]))
    cache = once(app, "preview_cache", lambda: TTLCache.for_previews(config))
    cached = cache.get(url)
    if cached is not None:
        return cached
    started = time.perf_counter()
    info = probe(url, config, policy)
    log.info(
        "previewed %s in %.0f ms", info.get("extractor"), (time.perf_counter() - started) * 1000
    )
    cache.put(url, info)
    return info


# Fields of a selected format the stream engine needs to fetch it itself.
_STREAM_FIELDS = (
    "format_id",
    "url",
    "protocol",
    "ext",
    "container",
    "vcodec",
    "acodec",
    "filesize",
    "filesize_approx",
    "http_headers",
    "manifest_url",
    "fragment_base_url",
    "has_drm",
)


def _stream_format(fmt: dict[str, Any]) -> dict[str, Any]:
    out = {key: fmt.get(key) for key in _STREAM_FIELDS}
    fragments = fmt.get("fragments")
    if fragments is not None and not isinstance(fragments, list):
        # A generator of fragments means a live stream that is still being written.
        raise UnsupportedURL("Live streams cannot be downloaded.")
    out["fragments"] = [
        {"url": f.get("url"), "path": f.get("path"), "duration": f.get("duration")}
        for f in fragments or []
    ]
    return out


def _one_video(info: dict[str, Any], *, first_of_many: bool) -> dict[str, Any]:
    """Return the single video a download is about; refuse live streams and DRM."""
    if is_playlist(info):
        entries = [entry for entry in info.get("entries") or [] if entry]
        if not entries or (len(entries) > 1 and not first_of_many):
            raise UnsupportedURL("The link holds several videos; choose one of them.")
        info = entries[0]
    if info.get("is_live") or info.get("live_status") in ("is_live", "is_upcoming"):
        raise UnsupportedURL("Live streams cannot be downloaded.")
    if any(fmt.get("has_drm") for fmt in info.get("requested_formats") or [info]):
        raise UnsupportedURL("That video is protected by DRM and cannot be downloaded.")
    return info


def resolve(
    url: str, selector: str, config: dict[str, Any], policy: netguard.Policy
) -> dict[str, Any]:
    """Pick formats with a selector from formats.choose(); return their fetchable URLs."""
    return within_deadline(config, policy, lambda bound: _resolve(url, selector, config, bound))


def _resolve(
    url: str, selector: str, config: dict[str, Any], policy: netguard.Policy
) -> dict[str, Any]:
    info = _extract(url, {**base_params(config), "format": selector}, policy)
    info = _one_video(info, first_of_many=False)
    timeout = _fetch_timeout(config)
    # A direct link's first bytes are checked by the stream itself (stream.open_stream),
    # from the response it sends on: no extra request before the first byte.
    if not info.get("duration") and config.get("NAZZIL_MAX_DURATION"):
        # Direct files and html5 pages carry no duration: read it, or the limit is skipped.
        _fill_durations(info, policy, timeout)
    chosen = info.get("requested_formats") or [info]
    duration = info.get("duration")
    return {
        "id": str(info.get("id") or ""),
        "title": title_of(info, from_html5(info)),
        "duration": seconds(duration),
        "direct": bool(info.get("direct")),
        "formats": [_stream_format(fmt) for fmt in chosen],
    }


def download(
    url: str,
    choice: Any,
    out_dir: Any,
    *,
    config: dict[str, Any],
    policy: netguard.Policy,
    ffmpeg: str,
    on_info: Any = None,
    on_progress: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Download url in a formats.choose() Choice into out_dir; return the file and its facts.

    on_info(facts) runs once the formats are chosen and before any media byte is fetched;
    on_progress(d) gets yt-dlp's progress dicts. An exception raised by either stops the
    download and comes out of this function unchanged. Partial files stay in out_dir.
    """
    from pathlib import Path

    from yt_dlp.postprocessor.common import PostProcessor

    yt_dlp = yt_dlp_module()
    out_dir = Path(out_dir)
    timeout = _fetch_timeout(config)
    raised: list[BaseException] = []

    def relay(callback: Any) -> Any:
        # yt-dlp stops cleanly on DownloadCancelled; the caller's own exception is kept aside.
        def call(arg: Any) -> None:
            try:
                callback(arg)
            except BaseException as exc:
                raised.append(exc)
                raise yt_dlp.utils.DownloadCancelled(str(exc)) from exc

        return call

    facts: dict[str, Any] = {}

    class _BeforeDownload(PostProcessor):
        def run(self, info: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
            chosen = info.get("requested_formats") or [info]
            sizes = [f.get("filesize") or f.get("filesize_approx") for f in chosen]
            duration = info.get("duration")
            facts.update(
                duration=seconds(duration),
                filesize=sum(sizes) if sizes and all(sizes) else None,
                ext=info.get("ext"),
            )
            if on_info is not None:
                relay(on_info)(dict(facts))
            return [], info

    params = base_params(config)
    params.pop("simulate", None)
    params.update(
        {
            "format": choice.selector,
            "outtmpl": {"default": "media.%(ext)s"},
            "paths": {"home": str(out_dir), "temp": str(out_dir)},
            "ffmpeg_location": ffmpeg,
            "merge_output_format": "mp4",
            # Retries with continuedl make a dropped connection resume with a Range request.
            "retries": 10,
            "fragment_retries": 10,
            "file_access_retries": 3,
            "continuedl": True,
            "overwrites": True,
            "playlist_items": "1",
            "progress_hooks": [relay(on_progress)] if on_progress is not None else [],
        }
    )
    if choice.audio_format:
        params["postprocessors"] = [
            {"key": "FFmpegExtractAudio", "preferredcodec": choice.audio_format}
        ]
    ydl = new_ydl(params, policy)
    ydl.add_post_processor(_BeforeDownload(), when="before_dl")
    try:
        with ydl:
            info = ydl.extract_info(url, download=False)
            if not info:
                raise UnsupportedURL()
            info = _one_video(info, first_of_many=True)
            _check_direct(info, policy, timeout)
            if not info.get("duration") and config.get("NAZZIL_MAX_DURATION"):
                _fill_durations(info, policy, timeout)
            facts["title"] = title_of(info, from_html5(info))
            info = ydl.process_ie_result(info, download=True)
    except BaseException as exc:
        if raised:
            raise raised[0] from None
        if isinstance(exc, NazzilError) or not isinstance(exc, Exception):
            raise
        raise classify(exc) from None
    downloads = info.get("requested_downloads") or [] if info else []
    path = Path(downloads[0]["filepath"]) if downloads and downloads[0].get("filepath") else None
    if path is None or not path.is_file() or path.parent.resolve() != out_dir.resolve():
        raise UpstreamError("The download produced no file.")
    facts["ext"] = path.suffix.lstrip(".")
    return path, facts
