"""One download from start to file: yt-dlp (via extract), limits, progress, cut, name."""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import extract, netguard
from .errors import InvalidRequest, TooLarge, TooLong, UpstreamError
from .formats import Choice
from .names import media_type, safe_filename

log = logging.getLogger(__name__)


class Cancelled(Exception):
    """The job was cancelled, deleted, taken over by another worker, or its worker stops."""

    def __init__(self, reason: str = "cancelled"):
        super().__init__(reason)
        self.reason = reason


def stop_if_cancelled(cancel: threading.Event | None) -> None:
    """Raise Cancelled (with the flag's reason) once the job's cancel flag is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled(getattr(cancel, "reason", "cancelled"))


@dataclass(frozen=True)
class Result:
    """A finished download: the file in the work dir, its final name and type."""

    path: Path
    name: str
    size: int
    content_type: str
    title: str | None


class Limits:
    """Enforce MAX_FILESIZE and MAX_DURATION, and turn progress dicts into job progress."""

    def __init__(
        self,
        config: Mapping[str, Any],
        cancel: threading.Event | None,
        report: Callable[[dict[str, Any]], None] | None,
        interval: float = 0.5,
    ):
        self.max_size = int(config.get("NAZZIL_MAX_FILESIZE") or 0)
        self.max_duration = float(config.get("NAZZIL_MAX_DURATION") or 0)
        self.cancel = cancel
        self.report = report
        self.interval = interval
        self.expected: int | None = None
        self.done_parts: dict[str, int] = {}
        self._last = 0.0

    def on_info(self, facts: dict[str, Any]) -> None:
        """Refuse media known to be too long or too large before fetching it."""
        duration, size = facts.get("duration"), facts.get("filesize")
        if self.max_duration and duration and duration > self.max_duration:
            raise TooLong(
                f"The media lasts {duration / 60:.0f} min; this server allows "
                f"{self.max_duration / 60:.0f} min."
            )
        if self.max_size and size and size > self.max_size:
            raise TooLarge(
                f"The media is {size / 2**20:.0f} MB; this server allows "
                f"{self.max_size / 2**20:.0f} MB."
            )
        self.expected = int(size) if size else None

    def on_progress(self, d: dict[str, Any]) -> None:
        """Stop on cancel or over-size (also without Content-Length); report progress."""
        stop_if_cancelled(self.cancel)
        name = str(d.get("filename") or "")
        current = int(d.get("downloaded_bytes") or 0)
        if d.get("status") == "finished":
            self.done_parts[name] = int(d.get("total_bytes") or current)
        earlier = sum(size for part, size in self.done_parts.items() if part != name)
        done = earlier + current
        total = d.get("total_bytes") or d.get("total_bytes_estimate")
        announced = d.get("total_bytes")  # a Content-Length, when the site sent one
        if self.max_size and (
            done > self.max_size or (announced and earlier + announced > self.max_size)
        ):
            raise TooLarge(
                f"The media is larger than this server allows ({self.max_size / 2**20:.0f} MB)."
            )
        now = time.monotonic()
        if self.report is None or (
            now - self._last < self.interval and d.get("status") != "finished"
        ):
            return
        self._report(d, done, earlier, total, now)
        # The report learns of a cancel (its write finds the job changed): stop at once.
        stop_if_cancelled(self.cancel)

    def _report(self, d: dict[str, Any], done: int, earlier: int, total: Any, now: float) -> None:
        assert self.report is not None  # on_progress returns first when nothing reports
        self._last = now
        overall = self.expected or (earlier + int(total) if total else None)
        percent = None
        if overall:
            percent = min(100.0, 100.0 * done / overall)
        elif d.get("fragment_count"):
            percent = 100.0 * float(d.get("fragment_index") or 0) / float(d["fragment_count"])
        speed, eta = d.get("speed"), d.get("eta")
        self.report(
            {
                "percent": round(percent, 1) if percent is not None else None,
                "downloaded_bytes": done,
                "total_bytes": int(overall) if overall else None,
                "speed": float(speed) if speed else None,
                "eta": float(eta) if eta is not None else None,
            }
        )


def trim(
    src: Path,
    start: float | None,
    end: float | None,
    ffmpeg: str,
    cancel: threading.Event | None = None,
) -> Path:
    """Cut src to [start, end] seconds with a frame-accurate re-encode; return the new file."""
    ext = src.suffix.lower().lstrip(".")
    audio_codecs = {
        "mp3": ["-c:a", "libmp3lame", "-q:a", "2"],
        "opus": ["-c:a", "libopus", "-b:a", "128k"],
        "ogg": ["-c:a", "libvorbis", "-q:a", "5"],
    }
    if ext in audio_codecs or ext in ("m4a", "aac"):
        out = src.with_name(f"cut.{ext}")
        codec = ["-vn", *audio_codecs.get(ext, ["-c:a", "aac", "-b:a", "192k"])]
    else:
        out = src.with_name("cut.mp4")
        codec = [
            "-map",
            "0:v:0?",
            "-map",
            "0:a:0?",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-crf",
            "20",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "160k",
            "-movflags",
            "+faststart",
        ]
    cmd = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        # Only the local file, read as plain media: a crafted input must not make ffmpeg
        # open connections, nor read other local files as a manifest (HLS, DASH) would.
        *netguard.FFMPEG_FILE_INPUT,
    ]
    if start:
        cmd += ["-ss", f"{start:.3f}"]
    cmd += ["-i", str(src)]
    if end is not None:
        cmd += ["-t", f"{end - (start or 0):.3f}"]
    cmd += [*codec, str(out)]
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as proc:
        while True:
            try:
                proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    proc.kill()
                    proc.wait()
                    stop_if_cancelled(cancel)
        stderr = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    if proc.returncode != 0 or not out.is_file() or out.stat().st_size == 0:
        log.warning("ffmpeg cut failed (%s): %s", proc.returncode, stderr.strip()[-500:])
        raise UpstreamError("The section could not be cut from the media.")
    src.unlink(missing_ok=True)
    return out


def fetch(
    url: str,
    choice: Choice,
    work_dir: Path,
    *,
    config: Mapping[str, Any],
    policy: netguard.Policy,
    start: float | None = None,
    end: float | None = None,
    cancel: threading.Event | None = None,
    report: Callable[[dict[str, Any]], None] | None = None,
    on_title: Callable[[str | None], None] | None = None,
) -> Result:
    """Download url into work_dir within the limits, cut it, and name it after its title."""
    work_dir.mkdir(parents=True, exist_ok=True)
    from .stream import ffmpeg_path  # the one lookup; the stream engine loads on first use

    ffmpeg = ffmpeg_path(str(config.get("NAZZIL_FFMPEG") or ""))
    limits = Limits(config, cancel, report)

    def on_info(facts: dict[str, Any]) -> None:
        stop_if_cancelled(cancel)
        if on_title is not None:
            on_title(facts.get("title"))
        limits.on_info(facts)
        if start is not None and facts.get("duration") and start >= facts["duration"]:
            raise InvalidRequest("The section starts after the end of the media.")

    path, facts = extract.download(
        url,
        choice,
        work_dir,
        config=dict(config),
        policy=policy,
        ffmpeg=ffmpeg,
        on_info=on_info,
        on_progress=limits.on_progress,
    )
    title = facts.get("title")
    stop_if_cancelled(cancel)
    size = path.stat().st_size
    if limits.max_size and size > limits.max_size:
        raise TooLarge(
            f"The result is larger than this server allows ({limits.max_size / 2**20:.0f} MB)."
        )
    duration = facts.get("duration")
    if end is not None and duration and end >= duration:
        # The section runs to the end: cut only the start (or nothing; no needless re-encode).
        end = None
    if start is not None or end is not None:
        path = trim(path, start, end, ffmpeg, cancel)
        size = path.stat().st_size
    ext = path.suffix.lstrip(".")
    default = "audio" if choice.audio_only else "video"
    name = safe_filename(title, ext, default=default)
    return Result(path=path, name=name, size=size, content_type=media_type(name), title=title)


def clear_dir(path: Path) -> None:
    """Remove a work directory and everything in it (partial files included)."""
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():
        log.warning("could not remove %s", path)
