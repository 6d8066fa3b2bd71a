"""Generate small, deterministic test media with the bundled ffmpeg and inspect media files."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "HLS_VARIANTS",
    "MEDIA_NAMES",
    "build_media",
    "decode_ok",
    "ffmpeg_exe",
    "ffprobe_like",
    "make_big_file",
    "mp4_top_level_boxes",
]

DURATION = 4
FPS = 25
# Constrained Baseline, level 3.0 (what -preset ultrafast -level:v 3.0 emits) + AAC-LC.
HLS_CODECS = "avc1.42c01e,mp4a.40.2"

# name -> (width, height, video kbit/s, audio kbit/s); bitrates chosen so the measured
# peak BANDWIDTH lands near 300k / 600k.
HLS_VARIANTS: dict[str, tuple[int, int, int, int]] = {
    "240": (426, 240, 200, 64),
    "360": (640, 360, 420, 96),
}

# Keys of the dict build_media() returns; each key is also the URL path under the root.
MEDIA_NAMES: tuple[str, ...] = (
    "sample.mp4",
    "moov_end.mp4",
    "video_only.mp4",
    "audio.m4a",
    "thumb.jpg",
    "hls/master.m3u8",
    "hls/240/index.m3u8",
    "hls/360/index.m3u8",
    "dash/manifest.mpd",
    "garbage.bin",
)


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def _ffmpeg(args: Sequence[str], *, cwd: Path | None = None, timeout: float = 120) -> None:
    # -nostdin: ffmpeg otherwise reads the terminal and can eat pytest's stdin / hang.
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {cmd}\n{proc.stderr[-3000:]}")


# Deterministic encodes: fixed GOP of exactly 1 s (keyframe per HLS/DASH segment), no
# scene-cut keyframes, single thread so output bytes do not depend on the machine.
_X264 = [
    "-c:v", "libx264", "-preset", "ultrafast", "-level:v", "3.0", "-pix_fmt", "yuv420p",
    "-g", str(FPS), "-keyint_min", str(FPS), "-sc_threshold", "0", "-threads", "1",
]  # fmt: skip


def _av_inputs(width: int, height: int, freq: int = 440) -> list[str]:
    return [
        "-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate={FPS}:duration={DURATION}",
        "-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=44100:duration={DURATION}",
    ]  # fmt: skip


def _aac(kbps: int) -> list[str]:
    return ["-c:a", "aac", "-b:a", f"{kbps}k", "-ac", "2", "-ar", "44100"]


@contextlib.contextmanager
def _staged_file(dest: Path) -> Iterator[Path]:
    """Yield a temp path next to dest (same suffix) and atomically move it into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Same directory => os.replace is atomic, so an interrupted build never leaves a
    # half-written file that the idempotency check would then trust.
    tmp = dest.with_name(f".tmp-{os.getpid()}-{dest.name}")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _staged_dir(dest: Path) -> Iterator[Path]:
    """Yield a temp directory next to dest and move it into place when the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)  # stale partial output from an older, interrupted run
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _build_sample(dest: Path) -> None:
    with _staged_file(dest) as tmp:
        _ffmpeg([
            *_av_inputs(320, 240), "-map", "0:v", "-map", "1:a", *_X264, *_aac(96),
            "-movflags", "+faststart", "-shortest", "-f", "mp4", str(tmp),
        ])  # fmt: skip


def _build_remux(src: Path, dest: Path, args: Sequence[str], fmt: str) -> None:
    # Stream copy: identical media, only the selected streams / container layout differ.
    with _staged_file(dest) as tmp:
        _ffmpeg(["-i", str(src), *args, "-c", "copy", "-f", fmt, str(tmp)])


def _build_thumb(dest: Path) -> None:
    with _staged_file(dest) as tmp:
        _ffmpeg([
            "-f", "lavfi", "-i", "testsrc=size=320x180:rate=1:duration=1",
            "-frames:v", "1", "-c:v", "mjpeg", "-pix_fmt", "yuvj420p", "-q:v", "4",
            "-f", "image2", str(tmp),
        ])  # fmt: skip


def _build_hls_variant(dest_dir: Path, width: int, height: int, vk: int, ak: int) -> None:
    with _staged_dir(dest_dir) as tmp:
        _ffmpeg([
            *_av_inputs(width, height), "-map", "0:v", "-map", "1:a", *_X264,
            # CBR-ish so the variants really differ in bitrate like a real ladder.
            "-b:v", f"{vk}k", "-maxrate", f"{vk}k", "-bufsize", f"{vk}k", *_aac(ak),
            "-f", "hls", "-hls_time", "1", "-hls_list_size", "0",
            "-hls_playlist_type", "vod", "-hls_segment_filename", "seg%03d.ts", "index.m3u8",
        ], cwd=tmp)  # fmt: skip


def _hls_bandwidth(variant_dir: Path) -> tuple[int, int]:
    """Peak and average bits/s of a variant, measured from its 1 s segments."""
    sizes = [p.stat().st_size for p in sorted(variant_dir.glob("seg*.ts"))]
    peak = max(sizes) * 8  # every segment is 1 s long
    avg = sum(sizes) * 8 // len(sizes)
    return peak, avg


def _write_hls_master(dest: Path) -> None:
    # Written by hand: ffmpeg's var_stream_map master needs one combined encode and its
    # BANDWIDTH/CODECS lines vary between versions; these are exact and stable.
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for name, (width, height, _vk, _ak) in HLS_VARIANTS.items():
        peak, avg = _hls_bandwidth(dest.parent / name)
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={avg},"
            f'RESOLUTION={width}x{height},FRAME-RATE={FPS}.000,CODECS="{HLS_CODECS}"'
        )
        lines.append(f"{name}/index.m3u8")
    with _staged_file(dest) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _build_dash(dest_dir: Path, src: Path) -> None:
    # Stream copy of sample.mp4 (its 1 s GOP gives 1 s segments). $Number$ templates
    # with an explicit SegmentTimeline: yt-dlp parses both forms, but without a timeline
    # ffmpeg's own dash demuxer guesses one segment too many and reports an error.
    with _staged_dir(dest_dir) as tmp:
        _ffmpeg([
            "-i", str(src), "-map", "0:v", "-map", "0:a", "-c", "copy",
            "-f", "dash", "-seg_duration", "1", "-use_template", "1", "-use_timeline", "1",
            "-adaptation_sets", "id=0,streams=v id=1,streams=a",
            "-init_seg_name", "init-$RepresentationID$.m4s",
            "-media_seg_name", "chunk-$RepresentationID$-$Number%05d$.m4s",
            "manifest.mpd",
        ], cwd=tmp)  # fmt: skip


def _build_garbage(dest: Path) -> None:
    with _staged_file(dest) as tmp:
        tmp.write_bytes(random.Random(20240101).randbytes(64 * 1024))


def build_media(root: Path) -> dict[str, Path]:
    """Create all test media under root (skipping existing files); map relative name to path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    out = {name: root / name for name in MEDIA_NAMES}
    sample = out["sample.mp4"]

    # sample.mp4 first: the remuxes and DASH are stream copies of it.
    if not sample.exists():
        _build_sample(sample)
    if not out["moov_end.mp4"].exists():
        # No +faststart: ffmpeg then writes the moov box after mdat.
        _build_remux(sample, out["moov_end.mp4"], ["-map", "0"], "mp4")
    if not out["video_only.mp4"].exists():
        _build_remux(
            sample, out["video_only.mp4"], ["-map", "0:v", "-movflags", "+faststart"], "mp4"
        )
    if not out["audio.m4a"].exists():
        _build_remux(sample, out["audio.m4a"], ["-map", "0:a", "-movflags", "+faststart"], "ipod")
    if not out["thumb.jpg"].exists():
        _build_thumb(out["thumb.jpg"])
    for name, (width, height, vk, ak) in HLS_VARIANTS.items():
        if not out[f"hls/{name}/index.m3u8"].exists():
            _build_hls_variant(root / "hls" / name, width, height, vk, ak)
    if not out["hls/master.m3u8"].exists():
        _write_hls_master(out["hls/master.m3u8"])
    if not out["dash/manifest.mpd"].exists():
        _build_dash(root / "dash", sample)
    if not out["garbage.bin"].exists():
        _build_garbage(out["garbage.bin"])
    return out


# --------------------------------------------------------------------- big files


def _free_box(size: int) -> bytes:
    """Header of an ISO-BMFF 'free' box whose total size (header included) is size."""
    if size < 8:
        raise ValueError("a free box needs at least 8 bytes")
    if size <= 0xFFFFFFFF:
        return struct.pack(">I4s", size, b"free")
    return struct.pack(">I4sQ", 1, b"free", size)  # 64-bit "largesize" form


def make_big_file(path: Path, size_bytes: int, *, faststart: bool = False) -> Path:
    """Write a real, decodable MP4 of exactly size_bytes (>= 1 MiB) to path, quickly."""
    # How: encode 2 s of per-frame noise once at near-lossless quality (incompressible,
    # so ~260 KB/frame at 480x270), plus 2 s of AAC; loop both with stream copy
    # (-stream_loop -1 -c copy) until -fs stops the mux just short of the target; then
    # append a top-level 'free' box to hit the byte count exactly. Stream copy is I/O
    # bound: 300 MB takes ~1-2 s. Result: 25 fps Constrained Baseline H.264 (qp 1, not
    # lossless, so browsers can play it) + AAC at ~52 Mbit/s; 300 MB is ~45 s of video.
    # Video and audio loop as separate inputs so each keeps regular timestamps.
    path = Path(path)
    if size_bytes < 1024 * 1024:
        raise ValueError("make_big_file needs at least 1 MiB")
    if path.exists() and path.stat().st_size == size_bytes:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".bigmp4-", dir=path.parent) as tmpdir:
        vchunk, achunk = Path(tmpdir) / "v.mp4", Path(tmpdir) / "a.m4a"
        _ffmpeg([
            "-f", "lavfi", "-i", "testsrc2=size=480x270:rate=25:duration=2,noise=alls=100:allf=t+u",
            "-c:v", "libx264", "-preset", "ultrafast", "-qp", "1", "-pix_fmt", "yuv420p",
            "-g", "25", "-f", "mp4", str(vchunk),
        ])  # fmt: skip
        _ffmpeg([
            "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000:duration=2",
            "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "ipod", str(achunk),
        ])  # fmt: skip
        # Headroom for the moov box (~1% at this packet rate) and for -fs, which stops
        # only after the packet that crosses the limit (one frame is ~260 KB, more or less
        # with the random noise, and the muxer may flush a few interleaved packets after it):
        # should it still overshoot, mux again with twice the headroom.
        margin = 512 * 1024 + size_bytes // 50
        with _staged_file(path) as tmp:
            for _attempt in range(4):
                _ffmpeg([
                    "-stream_loop", "-1", "-i", str(vchunk),
                    "-stream_loop", "-1", "-i", str(achunk),
                    "-map", "0:v", "-map", "1:a", "-c", "copy",
                    "-fs", str(max(1, size_bytes - margin)),
                    *(["-movflags", "+faststart"] if faststart else []),
                    "-f", "mp4", str(tmp),
                ], timeout=300)  # fmt: skip
                pad = size_bytes - tmp.stat().st_size
                if pad >= 8:
                    break
                margin *= 2
            else:
                raise RuntimeError(f"muxed file overshot target by {-pad} bytes")
            with tmp.open("ab") as fh:
                header = _free_box(pad)
                fh.write(header)
                remaining = pad - len(header)
                zeros = bytes(1024 * 1024)
                while remaining > 0:
                    n = min(remaining, len(zeros))
                    fh.write(zeros[:n])
                    remaining -= n
    return path


# ------------------------------------------------------------------- inspection

_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")
_INPUT_RE = re.compile(r"^Input #0, (.+?), from ", re.M)
_STREAM_RE = re.compile(
    r"^\s*Stream #0:\d+\S*?: (Video|Audio|Subtitle|Data|Attachment): (.*)$", re.M
)
_SIZE_RE = re.compile(r"^\s*(\d{1,5})x(\d{1,5})(?:\s|\[|$)")
_OUT_TIME_RE = re.compile(r"^out_time_us=(\d+)\s*$", re.M)
# ffmpeg opens only local files; never let a crafted playlist make it touch the network.
_PROTOCOLS = ["-protocol_whitelist", "file,crypto,data"]


def _arg_path(path: Path | str) -> str:
    text = os.fspath(path)
    # A leading "-" would be parsed as an option; "./-x" is the same file.
    return f"./{text}" if text.startswith("-") else text


def _decoded_duration(path: Path | str, timeout: float) -> float | None:
    """Duration found by decoding everything, for files whose header has none."""
    cmd = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", *_PROTOCOLS,
        "-i", _arg_path(path), "-map", "0:v?", "-map", "0:a?",
        "-f", "null", "-progress", "pipe:1", "-",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    times = [int(t) for t in _OUT_TIME_RE.findall(proc.stdout)]
    return times[-1] / 1_000_000 if times and times[-1] > 0 else None


def ffprobe_like(path: Path | str, *, timeout: float = 60) -> dict[str, Any]:
    """Describe a local media file by parsing `ffmpeg -i` output (the wheel has no ffprobe)."""
    info: dict[str, Any] = {
        "duration": 0.0,
        "video": False,
        "audio": False,
        "width": None,
        "height": None,
        "vcodec": None,
        "acodec": None,
        # Extras beyond the ffprobe subset, handy in assertion messages.
        "format": None,
        "streams": [],
        "error": None,
    }
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", *_PROTOCOLS, "-i", _arg_path(path)]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        info["error"] = "ffmpeg timed out"
        return info
    # Without an output ffmpeg always exits 1, so the exit code says nothing; parse text.
    err = proc.stderr.decode("utf-8", "replace")
    # Only the Input #0 section matters; cut anything after a later "Output" header.
    err = err.split("\nOutput #", 1)[0]

    fmt = _INPUT_RE.search(err)
    if fmt is None:
        last = [ln for ln in err.strip().splitlines() if ln.strip()]
        info["error"] = last[-1] if last else f"ffmpeg exit {proc.returncode}"
        return info
    info["format"] = fmt.group(1)

    for kind, rest in _STREAM_RE.findall(err):
        codec = rest.split(None, 1)[0].rstrip(",") if rest.strip() else ""
        info["streams"].append({"type": kind.lower(), "codec": codec, "detail": rest.strip()})
        # Cover art in audio files shows up as a Video stream; it is not video content.
        if kind == "Video" and "(attached pic)" not in rest and not info["video"]:
            info["video"] = True
            info["vcodec"] = codec
            for part in rest.split(","):
                m = _SIZE_RE.match(part)
                if m:
                    info["width"], info["height"] = int(m.group(1)), int(m.group(2))
                    break
        elif kind == "Audio" and not info["audio"]:
            info["audio"] = True
            info["acodec"] = codec

    dur = _DURATION_RE.search(err)
    if dur:
        h, m, s = dur.groups()
        info["duration"] = int(h) * 3600 + int(m) * 60 + float(s)
    elif info["video"] or info["audio"]:
        # "Duration: N/A" (raw streams, some fragmented files): decode to measure.
        info["duration"] = _decoded_duration(path, timeout) or 0.0
    return info


def decode_ok(path: Path | str, *, timeout: float = 120) -> bool:
    """True when ffmpeg decodes every audio/video stream of path with no errors at all."""
    cmd = [
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-v", "error", *_PROTOCOLS,
        "-i", _arg_path(path), "-map", "0:v?", "-map", "0:a?", "-f", "null", "-",
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and not proc.stderr.strip()


def mp4_top_level_boxes(path: Path | str) -> list[str]:
    """Names of the top-level ISO-BMFF boxes in order (e.g. to check moov vs mdat)."""
    boxes: list[str] = []
    with open(path, "rb") as fh:
        size_total = os.fstat(fh.fileno()).st_size
        pos = 0
        while pos + 8 <= size_total:
            fh.seek(pos)
            size, kind = struct.unpack(">I4s", fh.read(8))
            if size == 1:
                (size,) = struct.unpack(">Q", fh.read(8))
            elif size == 0:
                size = size_total - pos  # box extends to end of file
            if size < 8:
                break  # corrupt; stop rather than loop forever
            boxes.append(kind.decode("latin-1"))
            pos += size
    return boxes
