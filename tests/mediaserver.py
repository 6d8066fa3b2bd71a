"""A tiny threaded HTTP/1.1 media server on 127.0.0.1 for download and SSRF tests."""

from __future__ import annotations

import contextlib
import email.utils
import html
import json
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NamedTuple

__all__ = [
    "CONTENT_TYPES",
    "HeaderDict",
    "MediaServer",
    "RequestRecord",
    "content_type_for",
    "jsonld_page",
    "multi_video_page",
    "no_video_page",
    "og_page",
    "video_page",
]

# Explicit table instead of mimetypes: the system mime database differs between
# machines (e.g. .ts is "text/vnd.trolltech.linguist" on some), tests need stable answers.
CONTENT_TYPES: dict[str, str] = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".m4a": "audio/mp4",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".vtt": "text/vtt; charset=utf-8",
    ".srt": "application/x-subrip",
    ".json": "application/json",
    ".xml": "application/xml",
    ".bin": "application/octet-stream",
}
_DEFAULT_TYPE = "application/octet-stream"
_HTML = "text/html; charset=utf-8"
_CHUNK = 64 * 1024


def content_type_for(name: str | Path) -> str:
    """Return the Content-Type this server uses for a file name."""
    return CONTENT_TYPES.get(Path(str(name)).suffix.lower(), _DEFAULT_TYPE)


class HeaderDict(dict[str, str]):
    """A plain dict of request headers whose lookups ignore the header name's case."""

    def _real_key(self, name: object) -> object:
        # Keep the client's spelling as the stored key (nice in failure output) but let
        # tests write headers["user-agent"] or headers["User-Agent"] interchangeably.
        if isinstance(name, str):
            lowered = name.lower()
            for key in self.keys():
                if key.lower() == lowered:
                    return key
        return name

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(self._real_key(name))  # type: ignore[index]

    def __contains__(self, name: object) -> bool:
        return super().__contains__(self._real_key(name))

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(self._real_key(name), default)  # type: ignore[call-overload]


class RequestRecord(NamedTuple):
    """One seen request; unpacks as (method, path, headers)."""

    method: str
    # Raw request target as sent, including any query string.
    path: str
    headers: HeaderDict


@dataclass
class _Page:
    """An in-memory response registered with add_page / add_redirect."""

    body: bytes
    status: int
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


class _Disconnected(Exception):
    """Raised internally when the client went away or the server is stopping."""


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer tuned so that stop() never waits on stuck handler threads."""

    daemon_threads = True
    # server_close() would otherwise join every handler thread, including /hang ones.
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128
    owner: MediaServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Record unexpected handler errors instead of printing tracebacks to stderr."""
        exc = sys.exc_info()[1]
        # Clients hanging up mid-body is routine (cancel tests, drop route); not an error.
        if isinstance(exc, (ConnectionError, TimeoutError, _Disconnected)):
            return
        self.owner._record_error("".join(traceback.format_exc()))


class _Handler(BaseHTTPRequestHandler):
    """Request handler; all routing logic lives in MediaServer so it can see shared state."""

    protocol_version = "HTTP/1.1"
    server_version = "nazzil-test-media/1.0"
    sys_version = ""
    # Idle keep-alive connections give up eventually even if stop() is never called.
    timeout = 60
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def version_string(self) -> str:
        """Server header without the Python version (sys_version is blank)."""
        return self.server_version

    def log_message(self, format: str, *args: object) -> None:
        """Silence per-request logging (tests must keep stderr clean)."""

    def _dispatch(self) -> None:
        try:
            self.server.owner._handle(self)
        except (ConnectionError, TimeoutError, _Disconnected):
            self.close_connection = True

    do_GET = _dispatch
    do_HEAD = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_DELETE = _dispatch
    do_OPTIONS = _dispatch
    do_PATCH = _dispatch


class MediaServer:
    """Serve files under root (plus in-memory pages and fault routes) on 127.0.0.1."""

    def __init__(self, root: Path | str) -> None:
        """Prepare a server for root; nothing listens until start()."""
        self.root = Path(root).resolve()
        # Trickle speed of /slow/ responses in bytes per second; tests may change it live.
        self.slow_rate: int = 64 * 1024
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._pages: dict[str, _Page] = {}
        # Plain (no Range) GETs of a /drop/ path served in full before the one that is cut.
        # yt-dlp's generic extractor probes a direct media URL with its own plain GET, so
        # tests that extract then download set this to 1 to cut the download, not the probe.
        self.drop_skip: int = 0
        self._dropped: dict[str, int] = {}
        self._drop_seen: dict[str, int] = {}
        # Open client connections and the handler thread serving each.
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> MediaServer:
        """Bind 127.0.0.1 on a free port and serve in a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        # A short poll interval makes shutdown() return quickly.
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"MediaServer:{httpd.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and abort in-flight connections; returns within ~2 s."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        # Wake /hang and /slow handlers first so they unwind on their own.
        self._stopping.set()
        httpd.shutdown()
        with self._lock:
            conns = list(self._conns.items())
        # Keep-alive handlers block in recv(); shutting the socket down unblocks them.
        for conn, _ in conns:
            _hard_close(conn)
        httpd.server_close()
        # Give handler threads a moment to unwind so tests do not see stray threads; they
        # are daemons, so one stuck in a slow client write cannot block interpreter exit.
        deadline = time.monotonic() + 1.0
        for _, handler in conns:
            handler.join(timeout=max(0.0, deadline - time.monotonic()))
        if thread is not None:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._httpd = None
        self._thread = None

    def __enter__(self) -> MediaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._httpd is not None

    @property
    def port(self) -> int:
        """The bound TCP port (only valid after start())."""
        if self._httpd is None:
            raise RuntimeError("MediaServer is not started")
        return int(self._httpd.server_address[1])

    @property
    def base(self) -> str:
        """Base URL, e.g. "http://127.0.0.1:PORT"."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        """Absolute URL for a server path; the path is used verbatim (quote it yourself)."""
        return self.base + "/" + path.lstrip("/")

    # ------------------------------------------------------------ observability

    @property
    def requests(self) -> list[RequestRecord]:
        """Snapshot of every request seen so far as (method, path, headers) tuples."""
        with self._lock:
            return list(self._requests)

    def paths(self, method: str | None = None) -> list[str]:
        """Request paths seen so far, optionally only for one method."""
        return [r.path for r in self.requests if method is None or r.method == method]

    def clear(self) -> None:
        """Forget recorded requests (pages, redirects and drop state are kept)."""
        with self._lock:
            self._requests.clear()

    @property
    def drop_count(self) -> int:
        """How many responses the /drop/ route has cut short so far."""
        with self._lock:
            return sum(self._dropped.values())

    @property
    def drop_counts(self) -> dict[str, int]:
        """Per-path count of /drop/ responses cut short."""
        with self._lock:
            return dict(self._dropped)

    def reset_drops(self) -> None:
        """Re-arm the /drop/ route so every path is cut again (and zero drop_count)."""
        with self._lock:
            self._dropped.clear()
            self._drop_seen.clear()

    # ------------------------------------------------------------ configuration

    def add_page(
        self,
        path: str,
        body: str | bytes,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_type: str = _HTML,
    ) -> str:
        """Register an in-memory response at an exact path; returns its URL once started."""
        data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        page = _Page(data, int(status), content_type, dict(headers or {}))
        with self._lock:
            self._pages[_norm_page_key(path)] = page
        return self.url(path) if self.running else path

    def add_redirect(self, path: str, location: str, status: int = 302) -> str:
        """Register a redirect from path to location; returns its URL once started."""
        body = f'<a href="{html.escape(location)}">moved</a>'
        return self.add_page(path, body, status=status, headers={"Location": location})

    def remove_page(self, path: str) -> None:
        """Unregister a page or redirect (missing paths are ignored)."""
        with self._lock:
            self._pages.pop(_norm_page_key(path), None)

    # ------------------------------------------------------------- internals

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns[conn] = threading.current_thread()
            else:
                self._conns.pop(conn, None)

    def _record_error(self, text: str) -> None:
        with self._lock:
            self.errors.append(text)

    def _handle(self, h: _Handler) -> None:
        headers = HeaderDict(h.headers.items())
        with self._lock:
            self._requests.append(RequestRecord(h.command, h.path, headers))
        _discard_request_body(h)

        raw = h.path
        # Absolute-form targets ("GET http://host/x") only come from proxies; keep the path.
        if "://" in raw.split("?", 1)[0]:
            raw = urllib.parse.urlsplit(raw).path or "/"
        path_only = raw.split("?", 1)[0].split("#", 1)[0]

        page = self._find_page(raw, path_only)
        if page is not None:
            self._send_page(h, page)
            return

        parts = path_only.split("/")  # ["", "drop", "N", ...]
        route = parts[1] if len(parts) > 1 else ""
        if route == "hang":
            self._hang(h)
        elif route == "status" and len(parts) >= 3:
            self._status(h, parts[2])
        elif route == "drop" and len(parts) >= 4 and parts[2].isdigit():
            self._file(h, "/" + "/".join(parts[3:]), mode="drop", drop_after=int(parts[2]))
        elif route == "nolength" and len(parts) >= 3:
            self._file(h, "/" + "/".join(parts[2:]), mode="nolength")
        elif route == "slow" and len(parts) >= 3:
            self._file(h, "/" + "/".join(parts[2:]), mode="slow")
        else:
            self._file(h, path_only, mode="plain")

    def _find_page(self, raw: str, path_only: str) -> _Page | None:
        with self._lock:
            # A registered key with '?' must match the full target; others ignore the query.
            if "?" in raw and raw in self._pages:
                return self._pages[raw]
            return self._pages.get(path_only)

    def _send_page(self, h: _Handler, page: _Page) -> None:
        extra = dict(page.headers)
        _send_simple(h, page.status, page.body, page.content_type, extra)

    def _status(self, h: _Handler, code_text: str) -> None:
        try:
            code = int(code_text)
        except ValueError:
            code = 0
        if not 200 <= code <= 599:
            _send_simple(h, 400, b"<h1>bad status code</h1>")
            return
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Status"
        body = f"<!doctype html><title>{code}</title><h1>{code} {phrase}</h1>".encode()
        _send_simple(h, code, body)

    def _hang(self, h: _Handler) -> None:
        # Never answer; wake only when the server stops so stop() is not held up.
        self._stopping.wait()
        h.close_connection = True
        raise _Disconnected

    def _resolve(self, url_path: str) -> Path | None:
        rel = urllib.parse.unquote(url_path)
        if "\x00" in rel or "\\" in rel:
            return None
        candidate = (self.root / rel.lstrip("/")).resolve()
        # resolve() collapses "..", "%2e%2e" (already unquoted) and symlinks; then the
        # containment check refuses anything that ended up outside root.
        if candidate != self.root and self.root not in candidate.parents:
            return None
        if candidate.is_dir():
            candidate = candidate / "index.html"
        return candidate if candidate.is_file() else None

    def _file(self, h: _Handler, url_path: str, *, mode: str, drop_after: int = 0) -> None:
        fs_path = self._resolve(url_path)
        if fs_path is None:
            _send_simple(h, 404, b"<!doctype html><title>404</title><h1>404 Not Found</h1>")
            return
        size = fs_path.stat().st_size
        ctype = content_type_for(fs_path)
        head = h.command == "HEAD"
        last_modified = email.utils.formatdate(fs_path.stat().st_mtime, usegmt=True)

        if mode == "nolength":
            # Close-delimited body: no Content-Length, no ranges, connection closes after.
            h.send_response(200)
            h.send_header("Content-Type", ctype)
            h.send_header("Accept-Ranges", "none")
            h.send_header("Connection", "close")
            h.end_headers()
            h.close_connection = True
            if not head:
                self._stream(h, fs_path, 0, size)
            return

        range_header = h.headers.get("Range")
        rng = _parse_range(range_header, size)
        if rng == "unsatisfiable":
            _send_simple(h, 416, b"", "text/plain", {"Content-Range": f"bytes */{size}"})
            return
        start, end = rng if isinstance(rng, tuple) else (0, size - 1)
        length = end - start + 1 if size else 0

        h.send_response(206 if isinstance(rng, tuple) else 200)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(length))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("Last-Modified", last_modified)
        if isinstance(rng, tuple):
            h.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        h.end_headers()
        if head or length == 0:
            return

        if mode == "drop" and range_header is None and self._claim_drop(h.path):
            # Promise the full length, deliver drop_after bytes, then hang up: the client
            # sees a short read and must resume with Range to finish.
            self._stream(h, fs_path, start, min(drop_after, length))
            h.close_connection = True
            _hard_close(h.connection)
            return
        rate = self.slow_rate if mode == "slow" else None
        self._stream(h, fs_path, start, length, rate=rate)

    def _claim_drop(self, key: str) -> bool:
        with self._lock:
            seen = self._drop_seen.get(key, 0)
            self._drop_seen[key] = seen + 1
            # Cut exactly one plain GET per path: the (drop_skip+1)-th one.
            if seen != self.drop_skip:
                return False
            self._dropped[key] = self._dropped.get(key, 0) + 1
            return True

    def _stream(
        self, h: _Handler, fs_path: Path, start: int, length: int, rate: int | None = None
    ) -> None:
        with fs_path.open("rb") as fh:
            fh.seek(start)
            if rate is None:
                _copy(fh, h, length, self._stopping)
            else:
                self._trickle(fh, h, length)

    def _trickle(self, fh: BinaryIO, h: _Handler, length: int) -> None:
        # Small pieces ~20 times a second so cancellation is observed promptly, and
        # slow_rate is re-read each step so a test can speed up a transfer mid-way.
        remaining = length
        while remaining > 0:
            rate = max(1, int(self.slow_rate))
            piece = max(1, min(remaining, rate // 20 or 1, _CHUNK))
            t0 = time.monotonic()
            data = fh.read(piece)
            if not data:
                break
            h.wfile.write(data)
            remaining -= len(data)
            delay = len(data) / rate - (time.monotonic() - t0)
            if self._stopping.wait(max(0.0, delay)):
                raise _Disconnected


def _norm_page_key(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def _discard_request_body(h: _Handler) -> None:
    # Read any request body so keep-alive framing stays intact (POST tests).
    length = h.headers.get("Content-Length")
    if length and length.isdigit():
        remaining = int(length)
        while remaining > 0:
            data = h.rfile.read(min(remaining, _CHUNK))
            if not data:
                break
            remaining -= len(data)


def _send_simple(
    h: _Handler,
    status: int,
    body: bytes,
    content_type: str = _HTML,
    headers: Mapping[str, str] | None = None,
) -> None:
    h.send_response(status)
    no_body = status in (204, 304) or 100 <= status < 200
    h.send_header("Content-Type", content_type)
    if not no_body:
        h.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    h.end_headers()
    if h.command != "HEAD" and not no_body and body:
        h.wfile.write(body)


def _copy(fh: BinaryIO, h: _Handler, length: int, stopping: threading.Event) -> None:
    # Fixed-size chunks so a 300 MB benchmark file never sits in memory.
    remaining = length
    while remaining > 0:
        if stopping.is_set():
            raise _Disconnected
        data = fh.read(min(_CHUNK, remaining))
        if not data:
            break
        h.wfile.write(data)
        remaining -= len(data)


def _hard_close(conn: socket.socket) -> None:
    # shutdown() (not close()) so the handler thread still owning the socket sees EOF.
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


def _parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """Parse a single "bytes=" range: (start, end), "unsatisfiable", or None to ignore."""
    if not header:
        return None
    unit, _, spec = header.strip().partition("=")
    # RFC 9110: ignore ranges we do not understand (multi-range, other units, junk).
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, sep, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not sep or (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


# ------------------------------------------------------------------ page builders


def _esc(value: str) -> str:
    return html.escape(value, quote=True)


def _source_type(src: str) -> str:
    ext = Path(urllib.parse.urlsplit(src).path).suffix.lower()
    if ext == ".m3u8":
        return "application/x-mpegURL"
    return CONTENT_TYPES.get(ext, "video/mp4")


def _doc(title: str, head: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )


def video_page(src: str, title: str, poster: str | None = None) -> str:
    """HTML page with one <video> element holding a <source> for src."""
    poster_attr = f' poster="{_esc(poster)}"' if poster else ""
    body = (
        f"<h1>{_esc(title)}</h1>\n"
        f'<video controls preload="metadata"{poster_attr}>\n'
        f'  <source src="{_esc(src)}" type="{_esc(_source_type(src))}">\n'
        "</video>\n"
    )
    return _doc(title, "", body)


def og_page(video_url: str, title: str, image: str | None = None) -> str:
    """HTML page announcing a video only through Open Graph meta tags."""
    # yt-dlp's generic extractor matches each tag with a single-line regex that expects
    # property= before content= and double quotes, so keep exactly that shape.
    metas = [
        ("og:type", "video.other"),
        ("og:title", title),
        ("og:video", video_url),
        ("og:video:url", video_url),
        ("og:video:type", _source_type(video_url)),
        ("og:video:width", "320"),
        ("og:video:height", "240"),
    ]
    if image:
        metas.append(("og:image", image))
    head = "".join(f'<meta property="{p}" content="{_esc(c)}">\n' for p, c in metas)
    return _doc(title, head, f"<h1>{_esc(title)}</h1>\n<p>Video page without a player.</p>\n")


def jsonld_page(
    content_url: str,
    title: str,
    duration_iso: str = "PT4S",
    thumbnail: str | None = None,
) -> str:
    """HTML page describing the video with a schema.org VideoObject JSON-LD block."""
    data: dict[str, object] = {
        "@context": "https://schema.org",
        "@type": "VideoObject",
        "name": title,
        "description": f"{title} (test fixture)",
        "contentUrl": content_url,
        "duration": duration_iso,
        "uploadDate": "2024-01-01T00:00:00Z",
    }
    if thumbnail:
        data["thumbnailUrl"] = thumbnail
    # Escape "</" so a hostile title cannot close the <script> element early.
    blob = json.dumps(data, indent=1).replace("</", "<\\/")
    head = f'<script type="application/ld+json">\n{blob}\n</script>\n'
    return _doc(title, head, f"<h1>{_esc(title)}</h1>\n")


def multi_video_page(srcs: Iterable[str], title: str) -> str:
    """HTML page with one <video> element per source URL."""
    videos = "".join(
        f'<video controls>\n  <source src="{_esc(s)}" type="{_esc(_source_type(s))}">\n</video>\n'
        for s in srcs
    )
    return _doc(title, "", f"<h1>{_esc(title)}</h1>\n{videos}")


def no_video_page(title: str) -> str:
    """Ordinary HTML page with no media at all."""
    body = f"<h1>{_esc(title)}</h1>\n<p>Just text, nothing to download here.</p>\n"
    return _doc(title, "", body)


def rss_feed(title: str, links: list[tuple[str, str]]) -> str:
    """An RSS feed: yt-dlp reads it as a playlist whose entries have links of their own."""
    items = "".join(
        f"<item><title>{_esc(t)}</title><link>{_esc(u)}</link></item>" for t, u in links
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>{_esc(title)}</title>'
        f"{items}</channel></rss>"
    )
