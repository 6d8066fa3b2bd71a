"""Streamed downloads: proxy one file as it arrives, or merge/convert with ffmpeg through pipes.

Every byte comes through netguard.fetch, here; ffmpeg only ever reads OS pipes
(``-protocol_whitelist pipe`` and a forced demuxer per input), so a manifest cannot make it
open a connection. Memory stays bounded: reads of at most CHUNK bytes, and the WSGI body
pulls from upstream (or from ffmpeg, which pulls from the feeder threads) only as fast as
the client takes it. close() on the body stops everything: upstream sockets are shut down,
ffmpeg is killed and reaped, feeder threads end.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import logging
import os
import re
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from . import mediaprobe, netguard
from .errors import (
    FormatUnavailable,
    NazzilError,
    RangeNotSatisfiable,
    TooLarge,
    TooLong,
    Unavailable,
    UnsupportedURL,
    UpstreamError,
    UpstreamTimeout,
)
from .formats import Choice
from .names import content_disposition, safe_filename

log = logging.getLogger(__name__)

CHUNK = 256 * 1024  # largest single read from upstream or from ffmpeg
MAX_PLAYLIST = 5 * 1024 * 1024
MAX_MOOV = 64 * 1024 * 1024  # an index this large is hostile, not a long film
FIRST_BYTE_TIMEOUT = 60.0  # seconds ffmpeg may take to emit its first bytes
IDLE_TIMEOUT = 300.0  # seconds without output before a running conversion is abandoned
PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031  # fcntl command on Linux; missing from the fcntl module before 3.10

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                "proxy-authorization", "proxy-connection", "host", "content-length", "range",
                "if-range", "accept-encoding", "cookie"}
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
AUDIO_EXTS = {"m4a", "mp3", "opus", "ogg", "oga", "aac", "wav", "flac", "weba"}
_DEMUXER_BY_SNIFF = {"mp4": "mp4", "webm": "matroska", "ogg": "ogg", "flv": "flv",
                     "mp3": "mp3", "aac": "aac", "wav": "wav", "avi": "avi", "flac": "flac",
                     "ts": "mpegts"}
_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "m4a": "audio/mp4", "mp3": "audio/mpeg",
          "opus": "audio/ogg", "ogg": "audio/ogg", "mkv": "video/x-matroska",
          "flv": "video/x-flv", "aac": "audio/aac", "wav": "audio/wav", "flac": "audio/flac",
          "ts": "video/mp2t", "3gp": "video/3gpp", "mov": "video/quicktime"}


class StreamAborted(Exception):
    """Raised from a body whose headers were sent: the server must cut the connection."""


@dataclass(frozen=True)
class Options:
    """What the engine needs from the app's settings."""

    policy: netguard.Policy
    timeout: float = 15.0
    max_bytes: int = 0
    max_duration: float = 0.0
    ffmpeg: str = ""

    @classmethod
    def from_config(cls, config: Any, policy: netguard.Policy) -> Options:
        """Read the stream options from an app config."""
        return cls(
            policy=policy,
            timeout=float(config.get("NAZZIL_FETCH_TIMEOUT") or 15),
            max_bytes=int(config.get("NAZZIL_MAX_FILESIZE") or 0),
            max_duration=float(config.get("NAZZIL_MAX_DURATION") or 0),
            ffmpeg=str(config.get("NAZZIL_FFMPEG") or ""),
        )


@dataclass
class Stream:
    """A ready response: status, headers and a body that must be closed."""

    status: int
    headers: dict[str, str]
    body: Body


# ------------------------------------------------------------------ the WSGI body


class Body:
    """A response body that produces bytes only as the client reads them; close() cleans up."""

    def __init__(self, chunks: Iterator[bytes], cleanup: Callable[[], None]) -> None:
        self._chunks = chunks
        self._cleanup = cleanup
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def close(self) -> None:
        """Stop producing and release every resource; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()
        finally:
            self._cleanup()


# ------------------------------------------------------------------ fetching


def _upstream_headers(fmt: dict[str, Any]) -> dict[str, str]:
    """The headers yt-dlp says the site expects, minus hop-by-hop and framing ones."""
    headers = fmt.get("http_headers") or {}
    return {str(k): str(v) for k, v in headers.items()
            if str(k).lower() not in _HOP_HEADERS and "\n" not in str(v)}


def _open(url: str, opts: Options, headers: dict[str, str], start: int | None = None,
          length: int | None = None, extra: dict[str, str] | None = None) -> Any:
    """GET url (a byte range of it when start is given) through netguard; check the status."""
    send = dict(headers)
    if start is not None:
        send["Range"] = f"bytes={start}-" + (str(start + length - 1) if length else "")
    send.update(extra or {})
    resp = netguard.fetch(url, opts.policy, headers=send, timeout=opts.timeout)
    if resp.status not in (200, 206):
        status = resp.status
        resp.close()
        if status == 416:
            raise RangeNotSatisfiable()
        raise UpstreamError(f"The site answered HTTP {status}.")
    if start and resp.status == 200:
        resp.close()
        raise UpstreamError("The site does not support byte ranges.")
    return resp


def _abort(resp: Any) -> None:
    """Wake a thread blocked reading resp: shut its socket down (close() alone does not)."""
    raw = getattr(getattr(resp, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, also for TLS: SSLSocket's would drop its state
            # under the reading thread.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _total_size(resp: Any) -> int | None:
    """The full size of the file behind a 200 or 206 response, when the site says it."""
    if resp.status == 206:
        m = re.search(r"/(\d+)\s*$", resp.getheader("Content-Range") or "")
        return int(m.group(1)) if m else None
    length = resp.getheader("Content-Length")
    return int(length) if length and length.isdigit() else None


def _read_range(url: str, opts: Options, headers: dict[str, str], start: int,
                length: int) -> bytes:
    resp = _open(url, opts, headers, start, length)
    try:
        data = resp.read(length)
    finally:
        resp.close()
    if len(data) != length:
        raise UpstreamError("The site sent fewer bytes than asked for.")
    return data


def _check_limits(opts: Options, size: int | None, duration: float | None) -> None:
    if opts.max_bytes and size and size > opts.max_bytes:
        raise TooLarge()
    if opts.max_duration and duration and duration > opts.max_duration:
        raise TooLong()


# ------------------------------------------------------------------ progressive proxy


def _proxy(fmt: dict[str, Any], opts: Options, name: str, client_range: str | None,
           if_range: str | None) -> Stream:
    """Pass one file through as it arrives, with its length and the client's Range."""
    extra: dict[str, str] = {}
    m = _RANGE.fullmatch((client_range or "").replace(" ", ""))
    if m and (m.group(1) or m.group(2)):
        extra["Range"] = client_range.replace(" ", "")  # type: ignore[union-attr]
        if if_range and "\n" not in if_range:
            extra["If-Range"] = if_range
    resp = _open(fmt["url"], opts, _upstream_headers(fmt), extra=extra)
    try:
        _check_limits(opts, _total_size(resp), None)
    except NazzilError:
        resp.close()
        raise
    partial = resp.status == 206 and "Range" in extra
    headers = _download_headers(name, _content_type(resp.getheader("Content-Type"), name))
    length = resp.getheader("Content-Length")
    if length and length.isdigit() and not resp.chunked:
        headers["Content-Length"] = length
    if partial and resp.getheader("Content-Range"):
        headers["Content-Range"] = resp.getheader("Content-Range")
    if (resp.getheader("Accept-Ranges") or "").lower() == "bytes" or partial:
        headers["Accept-Ranges"] = "bytes"
    for key in ("ETag", "Last-Modified"):
        if resp.getheader(key):
            headers[key] = resp.getheader(key)
    limit = opts.max_bytes if "Content-Length" not in headers else 0

    def chunks() -> Iterator[bytes]:
        sent = 0
        while True:
            data = resp.read1(CHUNK)
            if not data:
                break
            if limit and sent + len(data) > limit:
                if limit > sent:
                    yield data[: limit - sent]
                log.warning("stream cut after %d bytes: over NAZZIL_MAX_FILESIZE", limit)
                raise StreamAborted("over the size limit")
            sent += len(data)
            yield data
        if resp.length:  # the site promised more than it sent
            raise StreamAborted(f"upstream ended {resp.length} bytes early")

    return Stream(206 if partial else 200, headers, Body(chunks(), resp.close))


def _download_headers(name: str, content_type: str) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        "Content-Disposition": content_disposition(name),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }


def _content_type(upstream: str | None, name: str) -> str:
    value = (upstream or "").split(";")[0].strip().lower()
    if value.startswith(("video/", "audio/")):
        return value
    return _TYPES.get(name.rpartition(".")[2].lower(), "application/octet-stream")


# ------------------------------------------------------------------ inputs for ffmpeg


@dataclass
class Piece:
    """One part of an input: a URL (optionally a byte range of it), or bytes in hand."""

    url: str | None = None
    start: int | None = None
    length: int | None = None
    data: bytes | None = None


@dataclass
class Source:
    """One ffmpeg input: the pieces fetched in order and written to its pipe."""

    demuxer: str
    pieces: list[Piece]
    headers: dict[str, str]
    has_video: bool = True
    has_audio: bool = True
    acodec: str = ""
    vcodec: str = ""
    duration: float | None = None
    size: int | None = None


def _codec(fmt: dict[str, Any], key: str) -> str:
    value = fmt.get(key)
    return value.lower() if isinstance(value, str) else ""


def _source_for(fmt: dict[str, Any], opts: Options) -> Source:
    """Work out how to fetch a format: segments from its manifest, or one file."""
    protocol = str(fmt.get("protocol") or "")
    headers = _upstream_headers(fmt)
    vcodec, acodec = _codec(fmt, "vcodec"), _codec(fmt, "acodec")
    ext = str(fmt.get("ext") or "").lower()
    if protocol.startswith("m3u8"):
        source = _hls_source(fmt["url"], opts, headers)
    elif fmt.get("fragments"):
        source = _dash_source(fmt)
    elif protocol in ("http", "https"):
        source = _file_source(fmt["url"], opts, headers)
    else:
        raise FormatUnavailable(f"Streaming over {protocol or 'this protocol'} is not supported.")
    source.headers = headers
    source.vcodec, source.acodec = vcodec, acodec
    source.has_video = vcodec != "none" and not (not vcodec and ext in AUDIO_EXTS)
    source.has_audio = acodec != "none"
    size = fmt.get("filesize") or fmt.get("filesize_approx")
    if isinstance(size, (int, float)) and not source.size:
        source.size = int(size)
    return source


def _dash_source(fmt: dict[str, Any]) -> Source:
    base = fmt.get("fragment_base_url") or fmt.get("url") or ""
    pieces, duration = [], 0.0
    for frag in fmt["fragments"]:
        url = frag.get("url") or urljoin(base, frag.get("path") or "")
        pieces.append(Piece(netguard.check_url(url)))
        duration += float(frag.get("duration") or 0)
    container = str(fmt.get("container") or fmt.get("ext") or "")
    demuxer = "matroska" if "webm" in container else "mp4"
    return Source(demuxer, pieces, {}, duration=duration or None)


def _hls_source(url: str, opts: Options, headers: dict[str, str]) -> Source:
    resp = _open(url, opts, headers)
    try:
        text = resp.read(MAX_PLAYLIST + 1)
        base = getattr(resp, "url", url)
    finally:
        resp.close()
    if len(text) > MAX_PLAYLIST:
        raise UpstreamError("The HLS playlist is too large.")
    pieces, duration, fmp4 = parse_hls(text.decode("utf-8", "replace"), base)
    if fmp4:
        demuxer = "mp4"
    else:
        ext = urlsplit(pieces[0].url or "").path.rpartition(".")[2].lower()
        demuxer = {"aac": "aac", "mp3": "mp3", "ac3": "ac3", "ec3": "eac3"}.get(ext, "mpegts")
    return Source(demuxer, pieces, headers, duration=duration)


def _attributes(text: str) -> dict[str, str]:
    """Parse an HLS attribute list: KEY=VALUE,KEY="quoted, value"."""
    return {m.group(1).upper(): m.group(2).strip('"')
            for m in re.finditer(r'([A-Za-z0-9-]+)=("[^"]*"|[^,]*)', text)}


def parse_hls(text: str, base: str) -> tuple[list[Piece], float | None, bool]:
    """Read a VOD media playlist: segment pieces in order, total duration, fMP4 or not."""
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines()]
    if not lines or not lines[0].startswith("#EXTM3U"):
        raise UpstreamError("The site sent an HLS playlist nazzil could not read.")
    pieces: list[Piece] = []
    duration, ended, has_map = 0.0, False, False
    current_map: tuple[str, int | None, int | None] | None = None
    pending: tuple[int, int | None] | None = None
    ends: dict[str, int] = {}  # where the previous byte range of each URL ended

    def byterange(value: str, url: str) -> tuple[int, int]:
        length, _, offset = value.partition("@")
        start = int(offset) if offset else ends.get(url, 0)
        ends[url] = start + int(length)
        return start, int(length)

    for line in lines[1:]:
        if not line:
            continue
        tag, _, value = line.partition(":")
        if tag == "#EXT-X-STREAM-INF":
            raise UpstreamError("Expected a media playlist but got a list of qualities.")
        if tag in ("#EXT-X-KEY", "#EXT-X-SESSION-KEY"):
            if _attributes(value).get("METHOD", "NONE").upper() != "NONE":
                raise UnsupportedURL("This stream is encrypted; nazzil cannot stream it.")
        elif tag == "#EXT-X-MAP":
            attrs = _attributes(value)
            map_url = netguard.check_url(urljoin(base, attrs.get("URI", "")))
            start = length = None
            if attrs.get("BYTERANGE"):
                start, length = byterange(attrs["BYTERANGE"], map_url)
            if (map_url, start, length) != current_map:
                current_map = (map_url, start, length)
                pieces.append(Piece(map_url, start, length))
                has_map = True
        elif tag == "#EXTINF":
            with contextlib.suppress(ValueError):
                duration += float(value.split(",")[0])
        elif tag == "#EXT-X-BYTERANGE":
            length_text, _, offset = value.partition("@")
            pending = (int(length_text), int(offset) if offset else None)
        elif tag == "#EXT-X-ENDLIST":
            ended = True
        elif not line.startswith("#"):
            url = netguard.check_url(urljoin(base, line))
            if pending is not None:
                start, length = byterange(
                    f"{pending[0]}@{pending[1]}" if pending[1] is not None else str(pending[0]),
                    url,
                )
                pieces.append(Piece(url, start, length))
                pending = None
            else:
                pieces.append(Piece(url))
    if not ended:
        raise UnsupportedURL("Live streams cannot be downloaded.")
    if not any(p for p in pieces if p.url and (p.url, p.start, p.length) != current_map):
        raise UpstreamError("The HLS playlist lists no segments.")
    return pieces, duration or None, has_map


def _file_source(url: str, opts: Options, headers: dict[str, str]) -> Source:
    """A single file as ffmpeg input; an MP4 with its index at the end is reordered."""
    resp = _open(url, opts, headers)
    try:
        total = _total_size(resp) if not resp.chunked else None
        head = resp.read(mediaprobe.SNIFF_BYTES)
    finally:
        resp.close()
    kind = mediaprobe.sniff(head)
    demuxer = _DEMUXER_BY_SNIFF.get(kind or "")
    if demuxer is None:
        raise UnsupportedURL("The link does not lead to a video or audio file.")
    pieces = [Piece(url)]
    if kind == "mp4":
        pieces = _faststart_pieces(url, opts, headers, head, total) or pieces
    return Source(demuxer, pieces, headers, size=total)


# ---------------------------------------------------------- MP4 with the index at the end

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"mvex", b"dinf"}


def _boxes(data: bytes, start: int = 0,
           end: int | None = None) -> Iterator[tuple[bytes, int, int, int]]:
    """Yield (type, offset, header size, total size) of the boxes in data[start:end]."""
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            raise UpstreamError("The MP4 file is damaged.")
        yield kind, pos, header, size
        pos += size


def shift_chunk_offsets(moov: bytearray, delta: int) -> None:
    """Add delta to every chunk offset (stco/co64) inside a moov box, in place."""

    def walk(start: int, end: int) -> None:
        for kind, pos, header, size in _boxes(moov, start, end):
            body = pos + header
            if kind in _CONTAINERS:
                walk(body, pos + size)
            elif kind in (b"stco", b"co64"):
                (count,) = struct.unpack(">I", moov[body + 4 : body + 8])
                wide = kind == b"co64"
                step, fmt = (8, ">Q") if wide else (4, ">I")
                if body + 8 + count * step > pos + size:
                    raise UpstreamError("The MP4 file is damaged.")
                for i in range(body + 8, body + 8 + count * step, step):
                    (value,) = struct.unpack(fmt, moov[i : i + step])
                    value += delta
                    if not wide and value > 0xFFFFFFFF:
                        raise FormatUnavailable("This MP4 file is too large to convert on the fly.")
                    struct.pack_into(fmt, moov, i, value)

    walk(0, len(moov))


def _faststart_pieces(url: str, opts: Options, headers: dict[str, str], head: bytes,
                      total: int | None) -> list[Piece] | None:
    """Plan reading an MP4 with its moov moved to the front, as ffmpeg cannot seek a pipe."""
    layout: list[tuple[bytes, int, int]] = []
    pos = 0
    while total is None or pos < total:
        if len(layout) >= 64:
            raise UpstreamError("The MP4 file is damaged.")
        raw = head[pos : pos + 16] if pos + 16 <= len(head) else b""
        if len(raw) < 16 and total is not None:
            raw = _read_range(url, opts, headers, pos, min(16, total - pos))
        if len(raw) < 8:
            break
        size, kind = struct.unpack(">I4s", raw[:8])
        if size == 1:
            (size,) = struct.unpack(">Q", raw[8:16])
        elif size == 0 and total is not None:
            size = total - pos
        if size < 8:
            raise UpstreamError("The MP4 file is damaged.")
        layout.append((kind, pos, size))
        if kind == b"moov":
            break
        if total is None:
            return None  # unknown size: hope the index is in front
        pos += size
    kinds = [kind for kind, _, _ in layout]
    if b"moov" not in kinds or b"mdat" not in kinds or kinds.index(b"mdat") > kinds.index(b"moov"):
        return None  # already in front (or not an MP4 nazzil understands): read it as is
    _, moov_at, moov_size = layout[-1]
    mdat_at = layout[kinds.index(b"mdat")][1]
    if moov_size > MAX_MOOV:
        raise UpstreamError("The MP4 index is too large.")
    moov = bytearray(_read_range(url, opts, headers, moov_at, moov_size))
    shift_chunk_offsets(moov, moov_size)
    pieces = [Piece(url, 0, mdat_at), Piece(data=bytes(moov)),
              Piece(url, mdat_at, moov_at - mdat_at)]
    rest = (total or 0) - (moov_at + moov_size)
    if rest > 0:
        pieces.append(Piece(url, moov_at + moov_size, rest))
    return pieces


# ------------------------------------------------------------------ ffmpeg


@functools.lru_cache(maxsize=4)
def ffmpeg_path(configured: str = "") -> str:
    """Find the ffmpeg binary: NAZZIL_FFMPEG, else the imageio-ffmpeg wheel's."""
    if configured:
        return configured
    try:
        import imageio_ffmpeg

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception as exc:  # noqa: BLE001 - any failure means there is no ffmpeg
        log.error("no ffmpeg binary: %s", exc)
        raise Unavailable("ffmpeg is not available on this server.") from None


def _output(sources: list[Source], choice: Choice) -> tuple[list[str], str]:
    """ffmpeg output options and the file extension for a choice."""
    audio_at = next((i for i, s in enumerate(sources) if s.has_audio and not s.has_video),
                    next((i for i, s in enumerate(sources) if s.has_audio), 0))
    acodec = sources[audio_at].acodec
    aac = acodec.startswith(("mp4a", "aac"))
    # AAC in MPEG-TS (or raw .aac) has ADTS headers that MP4 does not take; an unknown
    # codec there is almost always AAC.
    adts = sources[audio_at].demuxer in ("mpegts", "aac") and (aac or not acodec)
    to_asc = ["-bsf:a", "aac_adtstoasc"] if adts else []
    if choice.audio_only:
        maps = ["-map", f"{audio_at}:a:0", "-vn", "-sn", "-dn"]
        target = choice.audio_format or "m4a"
        if target == "mp3":
            codec = ["-c:a", "copy"] if acodec.startswith("mp3") else [
                "-c:a", "libmp3lame", "-b:a", "192k"]
            # No Xing header: it would be written empty, as a pipe cannot be rewound.
            return [*maps, *codec, "-write_xing", "0", "-f", "mp3"], "mp3"
        if target == "opus":
            codec = ["-c:a", "copy"] if acodec == "opus" else ["-c:a", "libopus", "-b:a", "128k"]
            return [*maps, *codec, "-f", "opus"], "opus"
        codec = ["-c:a", "copy", *to_asc] if aac or adts else ["-c:a", "aac", "-b:a", "192k"]
        # Fragments by time: with frag_keyframe every audio packet would be its own fragment.
        return [*maps, *codec, "-f", "mp4", "-movflags", "empty_moov+default_base_moof",
                "-frag_duration", "2000000"], "m4a"
    video_at = next((i for i, s in enumerate(sources) if s.has_video), 0)
    maps = ["-map", f"{video_at}:v:0?"]
    if any(s.has_audio for s in sources):
        maps += ["-map", f"{audio_at}:a:0?"]
    vcodec = sources[video_at].vcodec
    webm = vcodec.startswith("vp8") or acodec == "vorbis"
    if webm:
        return [*maps, "-c", "copy", "-sn", "-dn", "-f", "webm"], "webm"
    return [*maps, "-c", "copy", *to_asc, "-sn", "-dn", "-f", "mp4",
            # Cut at keyframes, and at least every second so ffmpeg never holds a long GOP.
            "-movflags", "frag_keyframe+empty_moov+default_base_moof",
            "-frag_duration", "1000000"], "mp4"


class Pipeline:
    """ffmpeg reading one pipe per input, each fed by a thread that fetches through netguard."""

    def __init__(self, sources: list[Source], output: list[str], opts: Options,
                 disconnected: Callable[[], bool] | None = None) -> None:
        self.sources, self.output, self.opts = sources, output, opts
        self.disconnected = disconnected
        self.proc: subprocess.Popen[bytes] | None = None
        self.threads: list[threading.Thread] = []
        self.error: NazzilError | None = None
        self.fetched = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._stderr = b""
        self._stderr_done = False

    def start(self) -> None:
        """Spawn ffmpeg and the feeder threads."""
        cmd = [ffmpeg_path(self.opts.ffmpeg), "-nostdin", "-hide_banner", "-nostats",
               "-loglevel", "error"]
        readers, writers = [], []
        try:
            for source in self.sources:
                r, w = os.pipe()
                readers.append(r)
                writers.append(w)
                with contextlib.suppress(OSError):
                    import fcntl

                    fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE)
                # Only pipes, and a fixed demuxer: nothing in the data can name a URL to open.
                cmd += ["-protocol_whitelist", "pipe", "-f", source.demuxer, "-i", f"pipe:{r}"]
            cmd += [*self.output, "pipe:1"]
            log.debug("ffmpeg: %s", " ".join(cmd))
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=readers, close_fds=True,
            )
        except OSError as exc:
            for fd in writers:
                os.close(fd)
            log.error("cannot run ffmpeg: %s", exc)
            raise Unavailable("ffmpeg is not available on this server.") from None
        finally:
            for fd in readers:
                os.close(fd)  # only ffmpeg may hold the read ends, or EOF never comes
        os.set_blocking(self.proc.stderr.fileno(), False)  # type: ignore[union-attr]
        for i, (source, w) in enumerate(zip(self.sources, writers, strict=True)):
            thread = threading.Thread(target=self._feed, args=(source, w),
                                      name=f"nazzil-feed-{self.proc.pid}-{i}", daemon=True)
            self.threads.append(thread)
            thread.start()

    # -- feeders

    def _fail(self, exc: NazzilError) -> None:
        with self._lock:
            if self.error is None:
                self.error = exc
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # wakes the reader with EOF; the error explains why

    def _count(self, n: int) -> None:
        with self._lock:
            self.fetched += n
            over = self.opts.max_bytes and self.fetched > self.opts.max_bytes
        if over:
            log.warning("stream cut after %d fetched bytes: over NAZZIL_MAX_FILESIZE",
                        self.fetched)
            self._fail(TooLarge())

    def _feed(self, source: Source, fd: int) -> None:
        try:
            for piece in source.pieces:
                if self._stop.is_set():
                    return
                if piece.data is not None:
                    _write_all(fd, piece.data)
                else:
                    self._copy(piece, source.headers, fd)
        except BrokenPipeError:
            pass  # ffmpeg exited or was killed; the reader decides what that means
        except NazzilError as exc:
            if not self._stop.is_set():
                self._fail(exc)
        except TimeoutError:
            if not self._stop.is_set():
                self._fail(UpstreamTimeout())
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if not self._stop.is_set():
                log.info("upstream read failed: %r", exc)
                self._fail(UpstreamError("The site stopped sending the media."))
        finally:
            os.close(fd)

    def _copy(self, piece: Piece, headers: dict[str, str], fd: int) -> None:
        assert piece.url is not None
        resp = _open(piece.url, self.opts, headers, piece.start, piece.length)
        with self._lock:
            self._open.add(resp)
        try:
            if self._stop.is_set():
                return
            # A 200 to a range from 0 carries the whole file: take only what was asked.
            remaining = piece.length
            while remaining is None or remaining > 0:
                data = resp.read1(CHUNK if remaining is None else min(CHUNK, remaining))
                if not data:
                    break
                if remaining is not None:
                    remaining -= len(data)
                self._count(len(data))
                if self._stop.is_set():
                    return
                _write_all(fd, data)
            short = remaining > 0 if remaining is not None else bool(resp.length)
            if short and not self._stop.is_set():
                raise UpstreamError("The site ended the media early.")
        finally:
            with self._lock:
                self._open.discard(resp)
            resp.close()

    # -- the reader side

    def read(self, deadline: float) -> bytes:
        """Return the next bytes ffmpeg wrote, b"" at its end; raise on errors or stop."""
        assert self.proc is not None and self.proc.stdout is not None
        out, err = self.proc.stdout.fileno(), self.proc.stderr.fileno()  # type: ignore[union-attr]
        poller = select.poll()  # not select(): fd numbers above 1024 are normal in a server
        poller.register(out, select.POLLIN)
        if not self._stderr_done:
            poller.register(err, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll(500)}
            if err in ready:
                chunk = os.read(err, 65536)
                self._stderr = (self._stderr + chunk)[-4096:]
                if not chunk:
                    self._stderr_done = True
                    poller.unregister(err)
            if out in ready:
                data = os.read(out, CHUNK)
                if data and self.error is None:
                    return data
                if self.error is not None:
                    raise self.error
                return b""
            if self.error is not None:
                raise self.error
            if self.disconnected is not None and self.disconnected():
                raise StreamAborted("client went away")
            if time.monotonic() > deadline:
                raise UpstreamTimeout("The conversion did not make progress in time.")

    def finish(self) -> None:
        """After EOF: make sure ffmpeg and every feeder ended well, or raise."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = -1
        for thread in self.threads:
            thread.join(timeout=5)
        if self.error is not None:
            raise self.error
        if code != 0:
            log.warning("ffmpeg exited with %s: %s", code, self.stderr_text())
            raise UpstreamError("The media could not be converted.")

    def stderr_text(self) -> str:
        """The last lines ffmpeg printed."""
        return self._stderr.decode("utf-8", "replace").strip()

    def close(self) -> None:
        """Stop everything: ffmpeg killed and reaped, sockets shut, feeders joined."""
        self._stop.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        with self._lock:
            responses = list(self._open)
        for resp in responses:
            _abort(resp)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log.error("ffmpeg %s did not exit after SIGKILL", proc.pid)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        deadline = time.monotonic() + 2
        for thread in self.threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                # Stuck in a connect: it ends by itself at the fetch timeout.
                log.info("feeder %s still connecting; it ends at the fetch timeout", thread.name)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _transcode(sources: list[Source], choice: Choice, opts: Options, title: str | None,
               disconnected: Callable[[], bool] | None) -> Stream:
    output, ext = _output(sources, choice)
    pipeline = Pipeline(sources, output, opts, disconnected)
    pipeline.start()
    try:
        # Wait for the first bytes here, so a failure still gets a proper JSON error.
        first = pipeline.read(time.monotonic() + FIRST_BYTE_TIMEOUT)
        if not first:
            pipeline.finish()
            raise UpstreamError("The media could not be converted.")
    except BaseException as exc:
        if isinstance(exc, UpstreamError) and pipeline.stderr_text():
            log.warning("ffmpeg failed: %s", pipeline.stderr_text())
        pipeline.close()
        if isinstance(exc, StreamAborted):
            raise UpstreamError("The conversion stopped before it began.") from None
        raise

    def chunks() -> Iterator[bytes]:
        yield first
        while True:
            try:
                data = pipeline.read(time.monotonic() + IDLE_TIMEOUT)
                if not data:
                    pipeline.finish()
                    return
            except NazzilError as exc:
                log.warning("stream ended early: %s (%s)", exc.code, exc.message)
                raise StreamAborted(exc.code) from None
            yield data

    name = safe_filename(title, ext)
    headers = _download_headers(name, _TYPES[ext])
    return Stream(200, headers, Body(chunks(), pipeline.close))


# ------------------------------------------------------------------ entry point


def _passthrough(formats: list[dict[str, Any]], choice: Choice) -> bool:
    """Tell whether the one chosen file can be sent as is (no merge, no conversion)."""
    if len(formats) != 1:
        return False
    fmt = formats[0]
    if fmt.get("protocol") not in ("http", "https") or fmt.get("fragments"):
        return False
    if not choice.audio_only:
        return True
    ext = str(fmt.get("ext") or "").lower()
    audio_only = fmt.get("vcodec") == "none" or (not fmt.get("vcodec") and ext in AUDIO_EXTS)
    return audio_only and ext == choice.audio_format


def open_stream(info: dict[str, Any], choice: Choice, opts: Options, *,
                client_range: str | None = None, if_range: str | None = None,
                disconnected: Callable[[], bool] | None = None) -> Stream:
    """Start streaming what extract.resolve() chose; errors before the first byte raise."""
    formats = info["formats"]
    if not formats:
        raise FormatUnavailable()
    sizes = [f.get("filesize") or f.get("filesize_approx") for f in formats]
    if all(isinstance(s, (int, float)) for s in sizes):
        _check_limits(opts, int(sum(sizes)), info.get("duration"))  # type: ignore[arg-type]
    _check_limits(opts, None, info.get("duration"))
    if _passthrough(formats, choice):
        name = safe_filename(info.get("title"), formats[0].get("ext") or "mp4")
        return _proxy(formats[0], opts, name, client_range, if_range)
    sources = [_source_for(fmt, opts) for fmt in formats]
    for source in sources:
        for host in {netguard.host_port(p.url) for p in source.pieces if p.url}:
            opts.policy.check_host(*host)
    known = [s.duration for s in sources if s.duration]
    sizes = [s.size for s in sources]
    _check_limits(opts, sum(sizes) if all(sizes) else None,  # type: ignore[arg-type]
                  info.get("duration") or (max(known) if known else None))
    return _transcode(sources, choice, opts, info.get("title"), disconnected)
