"""What nazzil fetches for a stream: guarded reads, and each chosen format as ordered pieces.

An HLS media playlist becomes its segments (init sections and byte ranges included), a DASH
format its fragments, a single file itself, and an MP4 whose index sits at the end is read
with that index moved to the front, patched, because ffmpeg cannot seek in a pipe.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from . import mediaprobe, netguard
from .errors import (
    BlockedAddress,
    FormatUnavailable,
    InvalidURL,
    RangeNotSatisfiable,
    UnsupportedURL,
    UpstreamError,
)
from .mediainfo import AUDIO_EXTS

CHUNK = 256 * 1024  # largest single read from upstream or from ffmpeg
MAX_PLAYLIST = 5 * 1024 * 1024
MAX_MOOV = 64 * 1024 * 1024  # an index this large is hostile, not a long film
# netguard.fetch drops hop-by-hop, framing and encoding headers itself; a range is the
# stream's own to ask for, and cookies are not passed on.
_NOT_FORWARDED = {"range", "if-range", "cookie"}
_DEMUXER_BY_SNIFF = {
    "mp4": "mp4",
    "webm": "matroska",
    "ogg": "ogg",
    "flv": "flv",
    "mp3": "mp3",
    "aac": "aac",
    "wav": "wav",
    "avi": "avi",
    "flac": "flac",
    "ts": "mpegts",
}


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


# ------------------------------------------------------------------ fetching


def upstream_headers(fmt: dict[str, Any]) -> dict[str, str]:
    """The headers yt-dlp says the site expects, minus the range and cookies."""
    headers = fmt.get("http_headers") or {}
    return {str(k): str(v) for k, v in headers.items() if str(k).lower() not in _NOT_FORWARDED}


def open_url(
    url: str,
    opts: Options,
    headers: dict[str, str],
    start: int | None = None,
    length: int | None = None,
    extra: dict[str, str] | None = None,
) -> Any:
    """GET url (a byte range of it when start is given) through netguard; check the status."""
    send = dict(headers)
    if start is not None:
        send["Range"] = f"bytes={start}-" + (str(start + length - 1) if length else "")
    send.update(extra or {})
    resp = netguard.fetch(url, opts.policy, headers=send, timeout=opts.timeout)
    if resp.status not in (200, 206):
        status, content_range = resp.status, resp.getheader("Content-Range") or ""
        resp.close()
        if status == 416:
            # The client needs the file's size ("bytes */N") to ask again sensibly.
            content_range = content_range.strip()
            ok = re.fullmatch(r"bytes \*/\d+", content_range)
            raise RangeNotSatisfiable(headers={"Content-Range": content_range} if ok else {})
        raise UpstreamError(f"The site answered HTTP {status}.")
    if start and resp.status == 200:
        resp.close()
        raise UpstreamError("The site does not support byte ranges.")
    return resp


def abort(resp: Any) -> None:
    """Wake a thread blocked reading resp: shut its socket down (close() alone does not)."""
    raw = getattr(getattr(resp, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            # The plain socket's shutdown, also for TLS: SSLSocket's would drop its state
            # under the reading thread.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def read_chunk(resp: Any, size: int = CHUNK) -> bytes:
    """Read up to size bytes: what has arrived, topped up for a moment when it is little.

    Many small pieces cost more per byte downstream (waitress, pipes) than the copy that
    joins them; waiting longer than a few reads would delay a slow stream for nothing.
    """
    data = resp.read1(size)
    if not data or len(data) >= size // 4:
        return data
    parts, got = [data], len(data)
    deadline = time.monotonic() + 0.05
    while got < size and time.monotonic() < deadline:
        more = resp.read1(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def read_range(url: str, opts: Options, headers: dict[str, str], start: int, length: int) -> bytes:
    """Read exactly length bytes at start, or raise."""
    resp = open_url(url, opts, headers, start, length)
    try:
        data = resp.read(length)
    finally:
        resp.close()
    if len(data) != length:
        raise UpstreamError("The site sent fewer bytes than asked for.")
    return data


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


def is_audio_only(fmt: dict[str, Any]) -> bool:
    """Tell whether a format has no video: so said, or an audio file with no codec given."""
    vcodec = _codec(fmt, "vcodec")
    return vcodec == "none" or (not vcodec and str(fmt.get("ext") or "").lower() in AUDIO_EXTS)


def source_for(fmt: dict[str, Any], opts: Options) -> Source:
    """Work out how to fetch a format: segments from its manifest, or one file."""
    protocol = str(fmt.get("protocol") or "")
    headers = upstream_headers(fmt)
    vcodec, acodec = _codec(fmt, "vcodec"), _codec(fmt, "acodec")
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
    source.has_video = not is_audio_only(fmt)
    source.has_audio = acodec != "none"
    size = fmt.get("filesize") or fmt.get("filesize_approx")
    if isinstance(size, (int, float)) and not source.size:
        source.size = int(size)
    return source


def _dash_source(fmt: dict[str, Any]) -> Source:
    base = fmt.get("fragment_base_url") or fmt.get("url") or ""
    pieces, duration = [], 0.0
    for frag in fmt["fragments"]:
        pieces.append(Piece(media_url(base, frag.get("url") or frag.get("path") or "")))
        duration += float(frag.get("duration") or 0)
    container = str(fmt.get("container") or fmt.get("ext") or "")
    demuxer = "matroska" if "webm" in container else "mp4"
    return Source(demuxer, pieces, {}, duration=duration or None)


def _hls_source(url: str, opts: Options, headers: dict[str, str]) -> Source:
    resp = open_url(url, opts, headers)
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
    return {
        m.group(1).upper(): m.group(2).strip('"')
        for m in re.finditer(r'([A-Za-z0-9-]+)=("[^"]*"|[^,]*)', text)
    }


def media_url(base: str, ref: str) -> str:
    """Resolve a segment's link from a manifest; one that is not plain http(s) is refused."""
    url = urljoin(base, ref)
    try:
        return netguard.check_url(url)
    except InvalidURL:
        if urlsplit(url).scheme.lower() not in netguard.ALLOWED_SCHEMES:
            # The site's choice, not the user's: like a redirect to ftp:, it leaves the guard.
            raise BlockedAddress("The playlist links to something that is not http(s).") from None
        raise UpstreamError("The site sent a playlist with a malformed link.") from None


def parse_hls(text: str, base: str) -> tuple[list[Piece], float | None, bool]:
    """Read a VOD media playlist: segment pieces in order, total duration, fMP4 or not."""
    lines = [line.strip() for line in text.lstrip("\ufeff").splitlines()]
    if not lines or not lines[0].startswith("#EXTM3U"):
        raise UpstreamError("The site sent an HLS playlist nazzil could not read.")
    pieces: list[Piece] = []
    duration, ended, has_map = 0.0, False, False
    current_map: tuple[str, int | None, int | None] | None = None
    pending: str | None = None  # an EXT-X-BYTERANGE waiting for its segment's URL
    segments = 0
    ends: dict[str, int] = {}  # where the previous byte range of each URL ended

    def byterange(value: str, url: str) -> tuple[int, int]:
        """Read "length[@offset]"; without an offset the range follows the previous one."""
        m = re.fullmatch(r"\s*(\d{1,15})\s*(?:@\s*(\d{1,15})\s*)?", value)
        if not m or not int(m.group(1)):
            raise UpstreamError("The site sent an HLS playlist nazzil could not read.")
        length = int(m.group(1))
        start = int(m.group(2)) if m.group(2) else ends.get(url, 0)
        ends[url] = start + length
        return start, length

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
            map_url = media_url(base, attrs.get("URI", ""))
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
            pending = value
        elif tag == "#EXT-X-ENDLIST":
            ended = True
        elif not line.startswith("#"):
            url = media_url(base, line)
            if pending is not None:
                pieces.append(Piece(url, *byterange(pending, url)))
                pending = None
            else:
                pieces.append(Piece(url))
            segments += 1
    if not ended:
        raise UnsupportedURL("Live streams cannot be downloaded.")
    if not segments:
        raise UpstreamError("The HLS playlist lists no segments.")
    return pieces, duration or None, has_map


def _file_source(url: str, opts: Options, headers: dict[str, str]) -> Source:
    """A single file as ffmpeg input; an MP4 with its index at the end is reordered."""
    resp = open_url(url, opts, headers)
    try:
        total = mediaprobe.total_size(resp) if not resp.chunked else None
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


def _boxes(
    data: bytes, start: int = 0, end: int | None = None
) -> Iterator[tuple[bytes, int, int, int]]:
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


def shift_chunk_offsets(moov: bytearray, delta: int, since: int = 0) -> None:
    """Add delta to every chunk offset (stco/co64) at or after since in a moov box, in place."""

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
                    if value < since:
                        continue
                    value += delta
                    if not wide and value > 0xFFFFFFFF:
                        raise FormatUnavailable("This MP4 file is too large to convert on the fly.")
                    struct.pack_into(fmt, moov, i, value)

    walk(0, len(moov))


def _faststart_pieces(
    url: str, opts: Options, headers: dict[str, str], head: bytes, total: int | None
) -> list[Piece] | None:
    """Plan reading an MP4 with its moov moved to the front, as ffmpeg cannot seek a pipe."""
    layout: list[tuple[bytes, int, int]] = []
    pos = 0
    while total is None or pos < total:
        if len(layout) >= 64:
            raise UpstreamError("The MP4 file is damaged.")
        raw = head[pos : pos + 16] if pos + 16 <= len(head) else b""
        if len(raw) < 16 and total is not None:
            raw = read_range(url, opts, headers, pos, min(16, total - pos))
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
    moov = bytearray(read_range(url, opts, headers, moov_at, moov_size))
    # Everything from the first mdat on moves back by the size of the moov put before it.
    shift_chunk_offsets(moov, moov_size, since=mdat_at)
    pieces = [
        Piece(url, 0, mdat_at),
        Piece(data=bytes(moov)),
        Piece(url, mdat_at, moov_at - mdat_at),
    ]
    rest = (total or 0) - (moov_at + moov_size)
    if rest > 0:
        pieces.append(Piece(url, moov_at + moov_size, rest))
    return pieces
