"""Edge cases of the jobs API found by QA: odd numbers, names, Range, retention, event streams.

Each test here failed before the fix it guards. Local backend only, small media, < 20 s.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.media import ffprobe_like
from tests.mediaserver import MediaServer, video_page
from tests.test_jobs import Jobs, _start, _stop, postgres_url  # noqa: F401 - a fixture

FINAL = ("finished", "failed", "cancelled")


@pytest.fixture
def local_jobs(config: dict) -> Iterator[Callable[..., Jobs]]:
    """Start an app with workers on the local backend with extra settings."""
    started: list[Jobs] = []

    def start(workers: int = 1, **extra: str) -> Jobs:
        found = _start({**config, "RATE_LIMIT_JOBS": "off", "HEARTBEAT": "0.3", **extra}, workers)
        started.append(found)
        return found

    yield start
    for found in started:
        _stop(found)


# ---------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "raw, name",
    [
        ('{"url": "x", "end": 1%s}' % ("0" * 400), "end"),  # an int too big for a float: was 500
        ('{"url": "x", "end": 1e308}', "end"),  # was accepted, then ffmpeg failed on "-t 1e308"
        ('{"url": "x", "start": NaN}', "start"),
        ('{"url": "x", "end": Infinity}', "end"),
        ('{"url": "x", "start": true}', "start"),
    ],
)
def test_out_of_range_seconds_are_refused(raw: str, name: str, client: Any) -> None:
    response = client.post("/api/v1/jobs", data=raw, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "invalid_request"
    assert f"'{name}'" in response.json["error"]["message"]


def test_end_past_the_media_keeps_it_whole(
    local_jobs: Callable[..., Jobs], media_server: MediaServer, media_root: Path, tmp_path: Path
) -> None:
    # Was cut (and re-encoded) with "-t 100": the file changed although nothing was cut.
    page = media_server.add_page("/edge/end", video_page("/sample.mp4", "End past media"))
    jobs = local_jobs()
    whole = jobs.wait(jobs.create(url=page, end=100)["id"])
    tail = jobs.wait(jobs.create(url=page, start=1, end=1e6)["id"])
    assert whole["status"] == tail["status"] == "finished", (whole, tail)
    assert jobs.file(whole, tmp_path).read_bytes() == (media_root / "sample.mp4").read_bytes()
    assert abs(ffprobe_like(jobs.file(tail, tmp_path))["duration"] - 3.0) < 0.25


def test_height_format_takes_a_file_of_unknown_height(
    local_jobs: Callable[..., Jobs], media_server: MediaServer, tmp_path: Path
) -> None:
    # A plain <video> or direct link announces no height: "720p" failed format_unavailable.
    page = media_server.add_page("/edge/height", video_page("/sample.mp4", "No height known"))
    jobs = local_jobs()
    job = jobs.wait(jobs.create(url=page, format="720p")["id"])
    assert job["status"] == "finished", job
    assert ffprobe_like(jobs.file(job, tmp_path))["height"] == 240


# ------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "title, expected_stem",
    [
        ("\u200b\u200b", "video"),  # zero-width only: was an invisible file name
        ("\u200c \u2060", "video"),
        ("COM\u00b9", "_COM\u00b9"),  # Windows reserves COM¹; its ASCII fallback was COM1.mp4
        ("\uff23\uff2f\uff2e", "_\uff23\uff2f\uff2e"),  # fullwidth CON
        ("CON .txt", "_CON .txt"),
        ("a\u200db", "a\u200db"),  # a joiner between letters stays (Arabic/Persian spelling)
    ],
)
def test_invisible_and_reserved_titles_give_safe_names(title: str, expected_stem: str) -> None:
    from nazzil.names import ascii_filename, content_disposition, safe_filename

    name = safe_filename(title, "mp4")
    assert name == f"{expected_stem}.mp4"
    fallback = ascii_filename(name)
    assert fallback.split(".")[0].strip().lower() not in {"con", "com1", "prn", "aux", "nul"}
    assert f'filename="{fallback}"' in content_disposition(name)


# ------------------------------------------------------------------------------ Range


def test_file_range_edge_cases(local_jobs: Callable[..., Jobs], media_server: MediaServer) -> None:
    jobs = local_jobs()
    job = jobs.wait(jobs.create(url=media_server.url("sample.mp4"))["id"])
    url, size = job["file"]["url"], job["file"]["size"]

    def get(value: str) -> Any:
        return jobs.client.get(url, headers={"Range": value})

    one = get("bytes=0-0")
    assert one.status_code == 206 and len(one.data) == 1
    for unsatisfiable in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        refused = get(unsatisfiable)
        assert refused.status_code == 416, unsatisfiable
        assert refused.headers["Content-Range"] == f"bytes */{size}"  # was missing
        assert refused.json["error"]["code"] == "range_not_satisfiable"
    # Several ranges, malformed or unknown units: ignored (RFC 9110), was 416.
    for ignored in ("bytes=0-1,5-6", "bytes=abc", "bytes=5-2", "items=0-1"):
        whole = get(ignored)
        assert whole.status_code == 200, ignored
        assert len(whole.data) == size


# -------------------------------------------------------------------------- retention


def test_short_retention_removes_files_on_time(
    local_jobs: Callable[..., Jobs], media_server: MediaServer
) -> None:
    # Cleanup ran every 5 minutes whatever RETENTION said: a 1 s retention kept files 5 min.
    jobs = local_jobs(RETENTION="1s", STALE_AFTER="1.5")
    job = jobs.wait(jobs.create(url=media_server.url("sample.mp4"))["id"])
    assert job["status"] == "finished"
    stored = jobs.data_dir / "files" / job["file"]["name"]
    expired = jobs.wait(job["id"], lambda j: j["file"] is None, timeout=10)
    assert expired["status"] == "finished"
    assert not stored.exists()
    assert jobs.client.get(f"/api/v1/jobs/{job['id']}/file").status_code == 404


# ------------------------------------------------------------------------ event streams


@pytest.fixture
def served(config: dict) -> Iterator[tuple[Any, int]]:
    """The app (no workers: jobs stay queued) behind a real waitress with two threads."""
    import waitress

    from nazzil import db
    from nazzil.app import create_app

    app = create_app({**config, "RATE_LIMIT_JOBS": "off", "THREADS": 2})
    server = waitress.create_server(
        app, host="127.0.0.1", port=0, threads=2, channel_request_lookahead=1
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield app, server.effective_port
    server.close()
    thread.join(5)
    db.dispose(app)


def _request(port: int, path: str, cookie: str = "", body: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    method = "POST" if body else "GET"
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    sock.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
    return sock


def _healthz_time(port: int) -> float:
    started = time.monotonic()
    with _request(port, "/healthz") as sock:
        sock.settimeout(5)
        assert b" 200 " in sock.recv(4096).split(b"\r\n", 1)[0]
    return time.monotonic() - started


def test_event_streams_cannot_take_every_server_thread(
    served: tuple[Any, int], media_server: MediaServer
) -> None:
    app, port = served
    with _request(
        port, "/api/v1/jobs", body=b'{"url": "%s"}' % media_server.url("x").encode()
    ) as s:
        reply = b""
        while chunk := s.recv(65536):  # Connection: close, so read to the end
            reply += chunk
    cookie = reply.split(b"Set-Cookie: ", 1)[1].split(b";", 1)[0].decode()
    job_id = reply.rsplit(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
    events = f"/api/v1/jobs/{job_id}/events"
    # Held streams of a queued job: at most a share of the threads follow it live.
    held = [_request(port, events, cookie) for _ in range(3)]
    for sock in held:
        assert b"data:" in sock.recv(65536)
    assert _healthz_time(port) < 3  # was a timeout: both threads sat in event streams
    for sock in held:
        sock.close()
    # Streams whose client hung up end at once, not at the next keep-alive 15 s later.
    for _ in range(3):
        with _request(port, events, cookie) as sock:
            assert b"data:" in sock.recv(65536)
    time.sleep(1.0)
    slots = app.extensions["nazzil"]["event_slots"]
    deadline = time.monotonic() + 3
    while not slots.acquire(blocking=False):
        assert time.monotonic() < deadline, "an abandoned stream still holds its slot"
        time.sleep(0.1)
    slots.release()


# ------------------------------------------------------------------------ per-device cap


def test_device_cap_holds_under_concurrent_creates_on_postgres(
    config: dict, request: pytest.FixtureRequest
) -> None:
    # Under READ COMMITTED two requests both counted 4 waiting jobs and both inserted a 5th.
    database = request.getfixturevalue("postgres_url")  # skips when PostgreSQL is down
    from nazzil import db, jobs
    from nazzil.app import create_app
    from nazzil.errors import RateLimited
    from nazzil.formats import choose

    app = create_app({**config, "DATABASE_URL": database, "MAX_QUEUED_PER_DEVICE": 5})
    device = f"cap-{time.monotonic_ns()}"
    with app.app_context():
        db.ensure_schema(app)
    barrier = threading.Barrier(20)
    outcomes: list[str] = []

    def create() -> None:
        barrier.wait()
        with app.app_context():
            try:
                jobs.create(
                    app, device=device, url="http://x/", choice=choose(), start=None, end=None
                )
                outcomes.append("created")
            except RateLimited:
                outcomes.append("refused")

    threads = [threading.Thread(target=create) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert sorted(outcomes) == ["created"] * 5 + ["refused"] * 15
    finally:
        db.dispose(app)


def test_reading_a_job_does_not_wait_for_a_writer(app: Any) -> None:
    """On SQLite a job page or event stream reads while a worker holds the write lock."""
    import sqlalchemy as sa

    from nazzil import db, jobs
    from nazzil.formats import choose

    db.upgrade(app)
    job = jobs.create(
        app,
        device="d1",
        url="http://127.0.0.1:9/x.mp4",
        choice=choose("best"),
        start=None,
        end=None,
    )
    read: dict[str, Any] = {}
    with db.session(app) as writer:  # BEGIN IMMEDIATE: the one write lock, held
        writer.execute(sa.update(jobs.Job).where(jobs.Job.id == job.id).values(title="held"))

        def reader() -> None:
            read["status"] = jobs.get(app, job.id, "d1").status
            read["list"] = [j.id for j in jobs.list_for(app, "d1")]

        thread = threading.Thread(target=reader)
        thread.start()
        thread.join(10)  # a reader that took the lock would wait for the busy timeout (30 s)
        assert not thread.is_alive()
    assert read == {"status": "queued", "list": [job.id]}
