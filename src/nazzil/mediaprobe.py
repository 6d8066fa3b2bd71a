"""Facts yt-dlp leaves out, read from the media itself: what the bytes are, how long it lasts."""

from __future__ import annotations

import logging
import re
import struct
from typing import Any
from urllib.parse import urljoin

from . import netguard
from .errors import NazzilError, UnsupportedURL

log = logging.getLogger(__name__)

SNIFF_BYTES = 4096


def sniff(head: bytes) -> str | None:
    """Name the container of some leading bytes, or None when they are not media."""
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"FLV"):
        return "flv"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3" if head.startswith(b"ID3") or head[1] & 0x06 else "aac"
    if head.startswith(b"RIFF") and head[8:12] in (b"WAVE", b"AVI "):
        return "wav" if head[8:12] == b"WAVE" else "avi"
    if head.startswith(b"fLaC"):
        return "flac"
    if len(head) >= 189 * 2 and head[0] == 0x47 and head[188] == 0x47:
        return "ts"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"#EXTM3U"):
        return "m3u8"
    if b"<MPD" in text[:1024]:
        return "mpd"
    return None


def read_range(
    url: str, policy: netguard.Policy, start: int, length: int, timeout: float
) -> tuple[bytes, int | None]:
    """Read up to length bytes at start; return them and the total size when told."""
    headers = {"Range": f"bytes={start}-{start + length - 1}"}
    resp = netguard.fetch(url, policy, headers=headers, timeout=timeout)
    try:
        if resp.status not in (200, 206):
            return b"", None
        if resp.status == 200 and start:
            return b"", None  # no Range support: reading to an offset would mean everything
        return resp.read(length), total_size(resp)
    finally:
        resp.close()


def require_media(url: str, policy: netguard.Policy, timeout: float) -> None:
    """Refuse a link whose first bytes are not media (yt-dlp takes any 200 as a direct file)."""
    head, _ = read_range(url, policy, 0, SNIFF_BYTES, timeout)
    if sniff(head) is None:
        raise UnsupportedURL("The link does not lead to a video or audio file.")


def total_size(resp: Any) -> int | None:
    """The full size of the file behind a 200 or 206 response, when the site says it."""
    if resp.status == 206:
        m = re.search(r"/(\d+)\s*$", resp.getheader("Content-Range") or "")
        return int(m.group(1)) if m else None
    length = resp.getheader("Content-Length")
    return int(length) if length and length.isdigit() else None


def _mvhd_duration(payload: bytes) -> float | None:
    # mvhd: version(1) flags(3) then times; v1 uses 64-bit fields.
    if len(payload) < 32:
        return None
    if payload[0] == 1:
        timescale, duration = struct.unpack(">IQ", payload[20:32])
    else:
        timescale, duration = struct.unpack(">II", payload[12:20])
    return duration / timescale if timescale else None


def _find_mvhd(buf: bytes) -> float | None:
    i = buf.find(b"mvhd")
    if i < 4:
        return None
    return _mvhd_duration(buf[i + 4 : i + 4 + 32])


def mp4_duration(
    url: str,
    policy: netguard.Policy,
    timeout: float,
    first: tuple[bytes, int | None] | None = None,
) -> float | None:
    """Read an MP4's duration from its mvhd box, wherever the moov box sits."""
    buf, total = first or read_range(url, policy, 0, 65536, timeout)
    buf_start = offset = 0
    for _ in range(64):  # top-level boxes are few; a bound guards against hostile files
        rel = offset - buf_start
        if rel + 16 > len(buf):
            if total is not None and offset + 8 > total:
                return None
            buf, _ = read_range(url, policy, offset, 65536, timeout)
            buf_start, rel = offset, 0
            if len(buf) < 8:
                return None
        size, kind = struct.unpack(">I4s", buf[rel : rel + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", buf[rel + 8 : rel + 16])[0]
            header = 16
        if kind == b"moov":
            found = _find_mvhd(buf[rel + header : rel + header + 4096])
            if found is None:
                body, _ = read_range(url, policy, offset + header, 4096, timeout)
                found = _find_mvhd(body)
            return found
        if size < header:
            return None
        offset += size
    return None


def _vint(buf: bytes, pos: int, keep_marker: bool) -> tuple[int, int]:
    """Read an EBML variable-length integer at pos; return (value, next position)."""
    first = buf[pos]
    length = 9 - first.bit_length() if first else 9
    if length > 8 or pos + length > len(buf):
        raise ValueError("bad EBML number")
    value = first if keep_marker else first & (0xFF >> length)
    for b in buf[pos + 1 : pos + length]:
        value = (value << 8) | b
    if not keep_marker and value == (1 << (7 * length)) - 1:
        value = -1  # "unknown size", as live-written files use for the Segment
    return value, pos + length


_SEGMENT, _INFO, _CLUSTER = 0x18538067, 0x1549A966, 0x1F43B675
_TIMESCALE, _DURATION = 0x2AD7B1, 0x4489


def matroska_duration(head: bytes) -> float | None:
    """Read a WebM/Matroska duration from the Segment Info in the file's leading bytes."""
    if not head.startswith(b"\x1a\x45\xdf\xa3"):
        return None
    pos, end = 0, len(head)
    scale, ticks = 1_000_000, None
    for _ in range(256):  # a bound: hostile files may hold endless tiny elements
        if pos >= end:
            break
        try:
            kind, pos = _vint(head, pos, True)
            size, pos = _vint(head, pos, False)
        except (ValueError, IndexError):
            return None  # cut off or damaged: no duration rather than an error
        if kind in (_SEGMENT, _INFO):
            if kind == _INFO and size >= 0:
                end = min(end, pos + size)
            continue  # step into the element: its children follow
        if kind == _CLUSTER or size < 0:
            break  # media data begins; the Info element was not before it
        body = head[pos : pos + size]
        if kind == _TIMESCALE and 0 < size <= 8:
            scale = int.from_bytes(body, "big") or scale
        elif kind == _DURATION and size in (4, 8) and len(body) == size:
            ticks = struct.unpack(">f" if size == 4 else ">d", body)[0]
        pos += size
    if ticks is None or not ticks > 0 or ticks == float("inf"):
        return None
    return ticks * scale / 1e9


# MPEG-1 Layer III bit rates (kbit/s) by index; MPEG-2/2.5 use the second row.
_MP3_KBPS = (
    (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
)
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_duration(head: bytes, total: int | None) -> float | None:
    """Estimate an MP3's duration: its Xing/Info frame count, else size over bit rate."""
    pos = 0
    if head.startswith(b"ID3") and len(head) >= 10:
        pos = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
    if pos + 4 > len(head) or head[pos] != 0xFF or head[pos + 1] & 0xE0 != 0xE0:
        return None
    version, layer = (head[pos + 1] >> 3) & 3, (head[pos + 1] >> 1) & 3
    rate_index, kbps_index = (head[pos + 2] >> 2) & 3, head[pos + 2] >> 4
    if layer != 1 or version == 1 or rate_index == 3 or kbps_index in (0, 15):
        return None  # not Layer III, reserved values, or free format
    rate = _MP3_RATES[version][rate_index]
    samples = 1152 if version == 3 else 576
    tag = head.find(b"Xing", pos, pos + 64)
    tag = tag if tag >= 0 else head.find(b"Info", pos, pos + 64)
    if tag >= 0 and len(head) >= tag + 12 and head[tag + 7] & 1:
        (frames,) = struct.unpack(">I", head[tag + 8 : tag + 12])
        return frames * samples / rate if frames else None
    kbps = _MP3_KBPS[version != 3][kbps_index]
    return (total - pos) * 8 / (kbps * 1000) if total and total > pos else None


def container_duration(url: str, policy: netguard.Policy, timeout: float) -> float | None:
    """Read a single file's duration from its container: MP4, WebM/Matroska or MP3."""
    first = read_range(url, policy, 0, 65536, timeout)
    if first[0].startswith(b"\x1a\x45\xdf\xa3"):
        return matroska_duration(first[0])
    if sniff(first[0]) == "mp3":
        return mp3_duration(*first)
    return mp4_duration(url, policy, timeout, first)


_ISO_DURATION = re.compile(
    r"P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)


def iso_duration(text: str) -> float | None:
    """Parse an ISO 8601 duration such as PT1M4.5S."""
    m = _ISO_DURATION.fullmatch(text.strip())
    if not m or not any(m.groupdict().values()):
        return None
    parts = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]


def _text(url: str, policy: netguard.Policy, timeout: float, limit: int = 2_000_000) -> str:
    resp = netguard.fetch(url, policy, timeout=timeout)
    try:
        if resp.status != 200:
            return ""
        return resp.read(limit).decode("utf-8", "replace")
    finally:
        resp.close()


def mpd_duration(url: str, policy: netguard.Policy, timeout: float) -> float | None:
    """Read a DASH manifest's mediaPresentationDuration."""
    m = re.search(r'mediaPresentationDuration="([^"]+)"', _text(url, policy, timeout))
    return iso_duration(m.group(1)) if m else None


def hls_duration(url: str, policy: netguard.Policy, timeout: float) -> float | None:
    """Add up the segment durations of an HLS media playlist (or a master's first variant)."""
    text = _text(url, policy, timeout)
    if "#EXT-X-STREAM-INF" in text:
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("#EXT-X-STREAM-INF") and i + 1 < len(lines):
                text = _text(urljoin(url, lines[i + 1].strip()), policy, timeout)
                break
    if "#EXT-X-ENDLIST" not in text:
        return None  # a live stream has no duration
    total = sum(float(x) for x in re.findall(r"#EXTINF:\s*([\d.]+)", text))
    return total or None


def duration_of(fmt: dict, policy: netguard.Policy, timeout: float) -> float | None:
    """Find a format's duration from its manifest or container; None when it cannot."""
    protocol = fmt.get("protocol") or ""
    try:
        if protocol.startswith("m3u8"):
            return hls_duration(fmt.get("manifest_url") or fmt["url"], policy, timeout)
        if protocol == "http_dash_segments" and fmt.get("manifest_url"):
            return mpd_duration(fmt["manifest_url"], policy, timeout)
        if protocol in ("http", "https") and fmt.get("url"):
            return container_duration(fmt["url"], policy, timeout)
    except (NazzilError, OSError, ValueError, struct.error) as exc:
        log.info("could not read the duration of %s: %s", fmt.get("format_id"), exc)
    return None
