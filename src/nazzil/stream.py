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
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from . import netguard
from .errors import (
    FormatUnavailable,
    NazzilError,
    TooLarge,
    TooLong,
    Unavailable,
    UnsupportedURL,
    UpstreamError,
    UpstreamTimeout,
)
from .formats import Choice
from .mediaprobe import SNIFF_BYTES, require_media, sniff, total_size
from .names import content_disposition, media_type, safe_filename
from .sources import (
    CHUNK,
    Options,
    Piece,
    Source,
    abort,
    is_audio_only,
    open_url,
    read_chunk,
    source_for,
    upstream_headers,
)

__all__ = [
    "Body",
    "Options",
    "Piece",
    "Pipeline",
    "Source",
    "Stream",
    "StreamAborted",
    "ffmpeg_path",
    "open_stream",
]

log = logging.getLogger(__name__)
FIRST_BYTE_TIMEOUT = 60.0  # seconds ffmpeg may take to emit its first bytes
IDLE_TIMEOUT = 300.0  # seconds without output before a running conversion is abandoned
PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = 1031  # fcntl command on Linux; missing from the fcntl module before 3.10

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# Fragmented MP4 written as it goes: an empty moov first, then one moof+mdat per fragment.
# Video is cut at keyframes and at least every second, so ffmpeg never holds a long GOP;
# audio only by time, as with frag_keyframe every audio packet would be its own fragment.
_FMP4_VIDEO = ["-f", "mp4", "-movflags", "frag_keyframe+empty_moov+default_base_moof",
               "-frag_duration", "1000000"]  # fmt: skip
_FMP4_AUDIO = ["-f", "mp4", "-movflags", "empty_moov+default_base_moof",
               "-frag_duration", "2000000"]  # fmt: skip


class StreamAborted(Exception):
    """Raised from a body whose headers were sent: the server must cut the connection."""


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


def _check_limits(opts: Options, size: float | None, duration: float | None) -> None:
    if opts.max_bytes and size and size > opts.max_bytes:
        raise TooLarge()
    if opts.max_duration and duration and duration > opts.max_duration:
        raise TooLong()


# ------------------------------------------------------------------ progressive proxy


def _proxy(
    fmt: dict[str, Any],
    opts: Options,
    name: str,
    client_range: str | None,
    if_range: str | None,
    *,
    direct: bool = False,
) -> Stream:
    """Pass one file through as it arrives, with its length and the client's Range."""
    extra: dict[str, str] = {}
    m = _RANGE.fullmatch((client_range or "").replace(" ", ""))
    if m and (m.group(1) or m.group(2)):
        extra["Range"] = client_range.replace(" ", "")  # type: ignore[union-attr]
        if if_range:  # netguard.fetch drops a value with control characters
            extra["If-Range"] = if_range
    resp = open_url(fmt["url"], opts, upstream_headers(fmt), extra=extra)
    try:
        _check_limits(opts, total_size(resp), None)
    except NazzilError:
        resp.close()
        raise
    partial = resp.status == 206 and "Range" in extra
    if partial and direct:
        try:  # a resumed direct link: its start is not in this response, so ask for it
            require_media(fmt["url"], opts.policy, opts.timeout)
        except BaseException:
            resp.close()
            raise
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

    def read() -> bytes:
        try:
            return read_chunk(resp)
        except Exception as exc:  # noqa: BLE001 - any failure of the site ends the stream
            log.warning("stream ended early: %r", exc)
            raise StreamAborted("upstream failed") from exc

    def close() -> None:
        abort(resp)
        resp.close()

    first = b""
    if not partial:
        # A page's <video src> is not checked at preview: it may lead to an empty file or
        # to a web page (a login, an error) answered with 200. Refuse it before the headers;
        # a direct link must also start like media (yt-dlp takes any 200 with a video type).
        try:
            first = read()
            while direct and sniff(first) is None and 0 < len(first) < SNIFF_BYTES:
                more = read()
                if not more:
                    break
                first += more
            _check_media_start(first, strict=direct)
        except BaseException as exc:
            close()
            if isinstance(exc, StreamAborted):
                raise UpstreamError("The site stopped sending the media.") from None
            raise

    def chunks() -> Iterator[bytes]:
        # Read in the thread that sends: the server writes each chunk to the client socket
        # before asking for the next, and the kernel's socket buffers keep both sides busy.
        sent = 0
        data = first
        while True:
            if data:
                if limit and sent + len(data) > limit:
                    if limit > sent:
                        yield data[: limit - sent]
                    log.warning("stream cut after %d bytes: over NAZZIL_MAX_FILESIZE", limit)
                    raise StreamAborted("over the size limit")
                sent += len(data)
                yield data
            data = read()
            if not data:
                break
        if resp.length:  # the site promised more than it sent
            raise StreamAborted(f"upstream ended {resp.length} bytes early")

    return Stream(206 if partial else 200, headers, Body(chunks(), close))


def _check_media_start(head: bytes, strict: bool = False) -> None:
    """Refuse a file that is empty or is a web page instead of media (or, strict, not media)."""
    if not head:
        raise UnsupportedURL("The link leads to an empty file, not a video or audio file.")
    if sniff(head) is not None:
        return
    if head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] in (b"<", b"{"):
        raise UnsupportedURL("The link leads to a web page, not a video or audio file.")
    if strict:
        raise UnsupportedURL("The link does not lead to a video or audio file.")


def _download_headers(name: str, content_type: str) -> dict[str, str]:
    return {
        "Content-Type": content_type,
        "Content-Disposition": content_disposition(name),
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }


def _content_type(upstream: str | None, name: str) -> str:
    value = (upstream or "").split(";")[0].strip().lower()
    return value if value.startswith(("video/", "audio/")) else media_type(name)


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
    audio_at = next(
        (i for i, s in enumerate(sources) if s.has_audio and not s.has_video),
        next((i for i, s in enumerate(sources) if s.has_audio), 0),
    )
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
            codec = (
                ["-c:a", "copy"]
                if acodec.startswith("mp3")
                else ["-c:a", "libmp3lame", "-b:a", "192k"]
            )
            # No Xing header: it would be written empty, as a pipe cannot be rewound.
            return [*maps, *codec, "-write_xing", "0", "-f", "mp3"], "mp3"
        if target == "opus":
            codec = ["-c:a", "copy"] if acodec == "opus" else ["-c:a", "libopus", "-b:a", "128k"]
            return [*maps, *codec, "-f", "opus"], "opus"
        codec = ["-c:a", "copy", *to_asc] if aac or adts else ["-c:a", "aac", "-b:a", "192k"]
        return [*maps, *codec, *_FMP4_AUDIO], "m4a"
    video_at = next((i for i, s in enumerate(sources) if s.has_video), 0)
    maps = ["-map", f"{video_at}:v:0?"]
    if any(s.has_audio for s in sources):
        maps += ["-map", f"{audio_at}:a:0?"]
    vcodec = sources[video_at].vcodec
    webm = vcodec.startswith("vp8") or acodec == "vorbis"
    if webm:
        return [*maps, "-c", "copy", "-sn", "-dn", "-f", "webm"], "webm"
    return [*maps, "-c", "copy", *to_asc, "-sn", "-dn", *_FMP4_VIDEO], "mp4"


class Pipeline:
    """ffmpeg reading one pipe per input, each fed by a thread that fetches through netguard."""

    def __init__(
        self,
        sources: list[Source],
        output: list[str],
        opts: Options,
        disconnected: Callable[[], bool] | None = None,
    ) -> None:
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
               "-loglevel", "error"]  # fmt: skip
        readers, writers = [], []
        try:
            for source in self.sources:
                r, w = os.pipe()
                readers.append(r)
                writers.append(w)
                _grow_pipe(w)
                # Only pipes, and a fixed demuxer: nothing in the data can name a URL to open.
                cmd += ["-protocol_whitelist", "pipe", "-f", source.demuxer, "-i", f"pipe:{r}"]
            cmd += [*self.output, "pipe:1"]
            log.debug("ffmpeg: %s", " ".join(cmd))
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=readers,
                close_fds=True,
            )
        except OSError as exc:
            for fd in writers:
                os.close(fd)
            log.error("cannot run ffmpeg: %s", exc)
            raise Unavailable("ffmpeg is not available on this server.") from None
        finally:
            for fd in readers:
                os.close(fd)  # only ffmpeg may hold the read ends, or EOF never comes
        _grow_pipe(self.proc.stdout.fileno())  # type: ignore[union-attr]
        os.set_blocking(self.proc.stderr.fileno(), False)  # type: ignore[union-attr]
        for i, (source, w) in enumerate(zip(self.sources, writers, strict=True)):
            thread = threading.Thread(
                target=self._feed,
                args=(source, w),
                name=f"nazzil-feed-{self.proc.pid}-{i}",
                daemon=True,
            )
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
            log.warning("stream cut after %d fetched bytes: over NAZZIL_MAX_FILESIZE", self.fetched)
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
        resp = open_url(piece.url, self.opts, headers, piece.start, piece.length)
        with self._lock:
            self._open.add(resp)
        try:
            if self._stop.is_set():
                return
            # A 200 to a range from 0 carries the whole file: take only what was asked.
            remaining = piece.length
            while remaining is None or remaining > 0:
                data = read_chunk(resp, CHUNK if remaining is None else min(CHUNK, remaining))
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
            if "matches no streams" in self.stderr_text():
                # Asked for audio (or video) from media that has no such track.
                raise FormatUnavailable("The media has no track of the kind asked for.")
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
            abort(resp)
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


def _grow_pipe(fd: int) -> None:
    """Enlarge a pipe so each system call moves more; the default 64 KiB is a lot of calls."""
    with contextlib.suppress(OSError, ImportError):
        import fcntl

        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _transcode(
    sources: list[Source],
    choice: Choice,
    opts: Options,
    title: str | None,
    disconnected: Callable[[], bool] | None,
) -> Stream:
    output, ext = _output(sources, choice)
    pipeline = Pipeline(sources, output, opts, disconnected)
    pipeline.start()
    try:
        # Wait for the first bytes here, so a failure still gets a proper JSON error.
        first = pipeline.read(time.monotonic() + FIRST_BYTE_TIMEOUT)
        if not first:
            pipeline.finish()  # raises, and logs ffmpeg's stderr, when ffmpeg failed
            log.warning("ffmpeg produced nothing: %s", pipeline.stderr_text())
            raise UpstreamError("The media could not be converted.")
    except BaseException as exc:
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
    headers = _download_headers(name, media_type(name))
    headers["Accept-Ranges"] = "none"  # made on the fly: a resume has to start over
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
    return is_audio_only(fmt) and str(fmt.get("ext") or "").lower() == choice.audio_format


def open_stream(
    info: dict[str, Any],
    choice: Choice,
    opts: Options,
    *,
    client_range: str | None = None,
    if_range: str | None = None,
    disconnected: Callable[[], bool] | None = None,
) -> Stream:
    """Start streaming what extract.resolve() chose; errors before the first byte raise."""
    formats = info["formats"]
    if not formats:
        raise FormatUnavailable()
    sizes = [f.get("filesize") or f.get("filesize_approx") for f in formats]
    size = sum(sizes) if all(isinstance(n, (int, float)) for n in sizes) else None
    _check_limits(opts, size, info.get("duration"))
    direct = bool(info.get("direct"))
    if _passthrough(formats, choice):
        name = safe_filename(info.get("title"), formats[0].get("ext") or "mp4")
        return _proxy(formats[0], opts, name, client_range, if_range, direct=direct)
    sources = [source_for(fmt, opts) for fmt in formats]
    for source in sources:
        for host in {netguard.host_port(p.url) for p in source.pieces if p.url}:
            opts.policy.check_host(*host)
    # Manifests and file headers may tell what yt-dlp did not: check again.
    durations = [s.duration for s in sources if s.duration]
    _check_limits(
        opts,
        sum(s.size or 0 for s in sources) if all(s.size for s in sources) else None,
        info.get("duration") or (max(durations) if durations else None),
    )
    return _transcode(sources, choice, opts, info.get("title"), disconnected)
