"""/api/v1/stream through a real `nazzil serve`: disconnects and limits over HTTP."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from tests.media import ffmpeg_exe, make_big_file
from tests.mediaserver import MediaServer
from tests.serve import NazzilServer
from tests.test_stream import children_of

BIG = 32 * 1024 * 1024
DEADLINE = 3.0  # seconds a hung-up stream may take to release everything (target: 1-2 s)

# Two progressive inputs (a long video and a separate audio file): ffmpeg merges them.
MERGE_MPD = """<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT120S"
     profiles="urn:mpeg:dash:profile:isoff-on-demand:2011" minBufferTime="PT2S">
 <Period>
  <AdaptationSet contentType="video" mimeType="video/mp4">
   <Representation id="v" codecs="avc1.42c01e" bandwidth="300000" width="320" height="240">
    <BaseURL>/slow/long.mp4</BaseURL></Representation>
  </AdaptationSet>
  <AdaptationSet contentType="audio" mimeType="audio/mp4">
   <Representation id="a" codecs="mp4a.40.2" bandwidth="96000">
    <BaseURL>/audio.m4a</BaseURL></Representation>
  </AdaptationSet>
 </Period>
</MPD>
"""


@pytest.fixture(scope="module")
def long_media(tmp_path_factory, media_root) -> Iterator[MediaServer]:
    """A server of its own: a 2-minute video (sample.mp4 looped, ~4 MB), audio, a 32 MiB file."""
    root = tmp_path_factory.mktemp("long-media")
    subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-v", "error", "-stream_loop", "29",
         "-i", str(media_root / "sample.mp4"), "-c", "copy", "-movflags", "+faststart",
         str(root / "long.mp4")],
        check=True, timeout=60,
    )  # fmt: skip
    shutil.copy(media_root / "audio.m4a", root / "audio.m4a")
    make_big_file(root / "big.mp4", BIG)
    with MediaServer(root) as server:
        server.add_page("/merge.mpd", MERGE_MPD, content_type="application/dash+xml")
        server.slow_rate = 512 * 1024  # long.mp4 then takes ~8 s: still running at 1 MB
        yield server


class Server(NazzilServer):
    """A `nazzil serve` subprocess and what can be seen of it from /proc."""

    def __init__(self, root: Path, media: MediaServer, **env: str) -> None:
        self.data, self.tmp = root / "data", root / "tmp"
        self.data.mkdir()
        self.tmp.mkdir()
        self.media = media
        super().__init__(root, {
            "TMPDIR": str(self.tmp),
            "NAZZIL_SECRET_KEY": "test-secret-key-for-the-stream-server",
            "NAZZIL_TRUSTED_HOSTS": f"127.0.0.1:{media.port}", "NAZZIL_THREADS": "8",
            "NAZZIL_FETCH_TIMEOUT": "5", "NAZZIL_LOG_LEVEL": "INFO",
            "NAZZIL_RATE_LIMIT_STREAM": "off",
            **{f"NAZZIL_{k}": v for k, v in env.items()},
        })  # fmt: skip
        self.start()

    def path(self, media_path: str, **query: str) -> str:
        args = "&".join(
            f"{k}={quote(v)}" for k, v in {"url": self.media.url(media_path), **query}.items()
        )
        return f"/api/v1/stream?{args}"

    def threads(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise AssertionError("no thread count")

    def upstream_sockets(self) -> int:
        """TCP sockets the server holds to the media server, whatever their state."""
        inodes = set()
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        count = 0
        for table in ("tcp", "tcp6"):
            lines = Path(f"/proc/{self.pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == self.media.port and fields[9] in inodes:
                    count += 1
        return count

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def open_files(self) -> list[str]:
        """Regular files the server holds open (a spooled response would show here)."""
        found = []
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("/") and not target.startswith(("/dev/", "/proc/")):
                    found.append(target)
        return found

    def files(self) -> list[str]:
        return sorted(str(p) for d in (self.data, self.tmp) for p in d.rglob("*"))


@pytest.fixture(scope="module", params=["gunicorn", "waitress"])
def server(request, tmp_path_factory, long_media) -> Iterator[Server]:
    """`nazzil serve` with no size limit, trusting the long-media server, on each server."""
    srv = Server(
        tmp_path_factory.mktemp("serve"), long_media, MAX_FILESIZE="0", SERVER=request.param
    )
    assert f"mode, {request.param})" in srv.log_text(), "the banner names the server"
    try:
        yield srv
    finally:
        srv.stop()


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> float:
    """Poll check until true; return how long it took, fail after seconds."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - started


def read_then_hang_up(
    port: int, path: str, body_bytes: int, during: Callable[[], None] | None = None
) -> bytes:
    """Send a GET, read the headers and body_bytes of the body, then close the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        received = len(body)
        while received < body_bytes:
            chunk = sock.recv(65536)
            assert chunk, "the stream ended before the client hung up"
            received += len(chunk)
        if during is not None:
            during()
        return head
    finally:
        sock.close()


def _warm_up(server: Server) -> tuple[int, list[str]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("GET", server.path("audio.m4a", format="audio", audio_format="mp3"))
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read()
    conn.close()
    wait_for(lambda: not children_of(server.pid), 5, "the warm-up ffmpeg to end")
    return server.threads(), server.files()


@pytest.mark.parametrize(
    ("media_path", "query", "uses_ffmpeg"),
    [("slow/long.mp4", {}, False), ("merge.mpd", {}, True)],
    ids=["progressive", "ffmpeg-merge"],
)
def test_hang_up_releases_everything(server, long_media, media_path, query, uses_ffmpeg):
    threads, files = _warm_up(server)
    long_media.clear()
    seen: dict[str, object] = {}

    def while_streaming() -> None:
        seen["children"] = [name for _, name, _ in children_of(server.pid)]
        seen["sockets"] = server.upstream_sockets()

    head = read_then_hang_up(
        server.port, server.path(media_path, **query), 1024 * 1024, while_streaming
    )
    assert head.startswith(b"HTTP/1.1 200"), head
    assert seen["sockets"] >= 1
    assert bool(seen["children"]) is uses_ffmpeg, seen
    took = wait_for(
        lambda: (
            not children_of(server.pid)
            and server.upstream_sockets() == 0
            and not long_media._conns
            and server.threads() <= threads
        ),
        DEADLINE,
        "ffmpeg, upstream connections and threads to be released",
    )
    print(f"released in {took:.2f} s")
    assert [f for f in server.files() if f not in files and ".db" not in f] == []
    # The slow upstream file was not read to its end.
    assert any("/slow/long.mp4" in p for p in long_media.paths())


def test_limits_over_http(tmp_path, long_media):
    srv = Server(tmp_path, long_media, MAX_FILESIZE="1M")
    files = srv.files()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("GET", srv.path("long.mp4"))
        resp = conn.getresponse()
        assert resp.status == 422
        assert b'"too_large"' in resp.read()
        conn.close()

        # No Content-Length upstream: the body is cut at the limit and not terminated, so
        # the client sees an incomplete transfer instead of a short "complete" file.
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("GET", srv.path("nolength/long.mp4"))
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Transfer-Encoding") == "chunked"
        with pytest.raises(http.client.IncompleteRead) as info:
            resp.read()
        assert len(info.value.partial) == 1024 * 1024
        conn.close()
    finally:
        srv.stop()
    # Only the database the jobs part keeps may change; no media file appears.
    assert [f for f in srv.files() if f not in files and ".db" not in f] == []


def test_slow_client_is_pushed_back_not_buffered(server):
    """A client that stops reading holds the upstream read back: no growth, no spooling."""
    _warm_up(server)
    base_files = [f for f in server.open_files() if ".db" not in f]
    rss = server.rss_kib()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(f"GET {server.path('big.mp4')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data) < 256 * 1024:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {BIG}".encode() in head
        # Stop reading for a while: the server must neither grow nor spool, and the upstream
        # transfer must still be open (it waits for the client rather than racing ahead).
        peak = rss
        for _ in range(20):
            time.sleep(0.05)
            peak = max(peak, server.rss_kib())
        assert [f for f in server.open_files() if ".db" not in f] == base_files
        assert server.upstream_sockets() == 1
        assert (peak - rss) / 1024 < 20, f"RSS grew {(peak - rss) / 1024:.1f} MiB"
        received = len(body)
        while received < BIG:
            chunk = sock.recv(1 << 20)
            assert chunk, f"stream ended at {received}"
            received += len(chunk)
        assert received == BIG
    finally:
        sock.close()
